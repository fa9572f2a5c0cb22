"""ConfigError on its own, importable from any module without importing kd.config.

kd.config validates against the model, method and dataset registries, so a model or data
module that raises a ConfigError (e.g. a text model's hidden size) cannot import
kd.config without closing an import cycle. kd.config re-exports it: `from kd.config
import ConfigError` stays the usual spelling elsewhere.
"""


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message names field, value and rule."""
