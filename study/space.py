"""Define-by-run Optuna search spaces, one per method, built from the study's ranges.

Range convention (presets use it too): a two-element list is a range (integers if both
ends are integers; log-uniform for lr and weight_decay), a longer list is a categorical
choice, a single value is fixed. Ranges are static so that the multivariate TPE sampler
sees one search space per cell; the configuration check asks each method whether the most
demanding corner of its space fits the budget (Annealing-KD: the largest tau_max x
stage_epochs must leave the minimum phase-2 length).

Besides its parameters, a method's space may hold keys it declares itself (kd/methods):
`budget_fractions` (a parameter in epochs, searched as a fraction of the budget) and
`search_settings` (constraints on the space, not sampled).
"""
from __future__ import annotations

from typing import Any, Protocol

from kd.config import ConfigError
from kd.methods import METHODS

LOG_SCALE = {"lr", "weight_decay"}  # the range convention's log-uniform parameters


class Ranges(Protocol):
    """What a space needs of a study (study.config.StudyConfig is one; it imports this
    module to check its corners, so this module names only what it uses)."""
    epochs: int

    def search_space(self, method: str) -> dict[str, Any]: ...


def _suggest(trial, name: str, spec: Any) -> Any:
    if not isinstance(spec, list):
        return spec
    if len(spec) == 2 and all(isinstance(v, (int, float)) for v in spec):
        low, high = spec
        if isinstance(low, int) and isinstance(high, int) and name not in LOG_SCALE:
            return trial.suggest_int(name, low, high)
        return trial.suggest_float(name, float(low), float(high), log=name in LOG_SCALE and low > 0)
    return trial.suggest_categorical(name, spec)


def _sampled(method: str, ranges: dict[str, Any]) -> dict[str, Any]:
    """The ranges that are sampled (or fixed): all but the method's search settings."""
    settings = METHODS.get(method).search_settings
    return {name: spec for name, spec in ranges.items() if name not in settings}


def _to_train_params(study: Ranges, method: str, values: dict[str, Any]) -> dict[str, Any]:
    fractions = METHODS.get(method).budget_fractions
    params = {k: v for k, v in values.items() if k not in fractions}
    for key, param in fractions.items():  # e.g. Continuation-KD's psi ramp over a fraction of the budget
        if key in values:
            params[param] = max(1, round(values[key] * study.epochs))
    return params


class MethodSpace:
    """The define-by-run function of one cell (a class, not a closure: Tune pickles it)."""

    def __init__(self, study: Ranges, method: str):
        self.study = study
        self.method = method
        self.ranges = study.search_space(method)

    def __call__(self, trial) -> dict[str, Any]:
        values = {name: _suggest(trial, name, spec) for name, spec in _sampled(self.method, self.ranges).items()}
        return _to_train_params(self.study, self.method, values)


def corner_params(study: Ranges, method: str, pick=max) -> dict[str, Any]:
    """One corner of the space: with max, the most demanding schedule the search can ask
    for; with min, the smallest values (a zero or negative learning rate shows up here)."""
    space = study.search_space(method)
    values = {name: pick(spec) if isinstance(spec, list) else spec for name, spec in _sampled(method, space).items()}
    params = _to_train_params(study, method, values)
    if pick is max:
        problem = METHODS.get(method).check_search(params, space, study.epochs)
        if problem:
            raise ConfigError(f"epochs: {study.epochs} is not allowed; {problem}")
    return params
