"""Distillation methods, one small class per file, registered by name in METHODS.

Every module of this package is imported here, so adding a method is adding its file.
Methods kept elsewhere are plugins: Python files or importable modules that register
methods the same way, named in the KD_METHOD_PLUGINS environment variable (paths or module
names separated by os.pathsep) or in a study's `plugins`; `load_plugins` imports each once
per process.
"""
import hashlib
import importlib
import importlib.util
import math
import os
import pkgutil
import sys
from pathlib import Path

from kd.errors import ConfigError
from kd.methods.base import METHODS, EpochContext, Method, Param, Phase

PLUGINS_ENV = "KD_METHOD_PLUGINS"

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_method(cfg) -> Method:
    return METHODS.get(cfg.method, field="method")(cfg)


def order_key(name: str) -> tuple[float, str]:
    """Sort key: methods in the papers' order (each method's `order`), then by name; a name this
    process does not know (a report's plugin it could not load) after every known one."""
    return (METHODS.get(name).order if name in METHODS else math.inf, name)


def ordered(names=None) -> list[str]:
    """Method names in the papers' order, the registered ones by default."""
    return sorted(METHODS.names() if names is None else names, key=order_key)


def is_plugin_file(spec: str) -> bool:
    return spec.endswith(".py")


def load_plugins(specs, field: str = PLUGINS_ENV) -> None:
    """Import each plugin once in this process: a .py file (by its path) or a module name.
    A file is imported under a name derived from its resolved path, so the same file named
    twice (or by a study and by the environment) registers its methods once."""
    for spec in filter(None, specs):
        if is_plugin_file(spec):
            path = Path(spec).expanduser().resolve()
            name = f"kd_method_plugin_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
            if name in sys.modules:
                continue
            if not path.is_file():
                raise ConfigError(f"{field}: {spec!r} is not allowed; there is no such file (a method plugin: "
                                  f"a .py file that registers methods, at the same path on every node)")
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]  # a plugin that failed half-way is not loaded
                raise
        else:
            try:
                importlib.import_module(spec)
            except ModuleNotFoundError as error:
                raise ConfigError(f"{field}: {spec!r} is not allowed; {error} (a method plugin: a .py file or a "
                                  f"module every node can import)") from None


load_plugins(os.environ.get(PLUGINS_ENV, "").split(os.pathsep))

__all__ = ["METHODS", "PLUGINS_ENV", "EpochContext", "Method", "Param", "Phase", "build_method", "load_plugins",
           "order_key", "ordered"]
