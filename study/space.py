"""Define-by-run Optuna search spaces, one per method, built from the study's ranges.

Range convention (presets use it too): a two-element list is a range (integers if both
ends are integers; log-uniform for lr and weight_decay), a longer list is a categorical
choice, a single value is fixed. Ranges are static so that the multivariate TPE sampler
sees one search space per cell; the configuration check makes sure the largest tau_max x
stage_epochs still leaves the minimum phase-2 length inside the budget.
"""
from __future__ import annotations

from typing import Any, Protocol

from kd.config import ConfigError

LOG_SCALE = {"lr", "weight_decay"}  # the range convention's log-uniform parameters


class Ranges(Protocol):
    """What a space needs of a study (study.config.StudyConfig is one; it imports this
    module to check its corners, so this module names only what it uses)."""
    epochs: int

    def search_space(self, method: str) -> dict[str, Any]: ...


# Keys of the ranges that are not TrainConfig fields but shape the space.
_DERIVED = {"min_phase2_epochs", "psi_fraction"}


def _suggest(trial, name: str, spec: Any) -> Any:
    if not isinstance(spec, list):
        return spec
    if len(spec) == 2 and all(isinstance(v, (int, float)) for v in spec):
        low, high = spec
        if isinstance(low, int) and isinstance(high, int) and name not in LOG_SCALE:
            return trial.suggest_int(name, low, high)
        return trial.suggest_float(name, float(low), float(high), log=name in LOG_SCALE and low > 0)
    return trial.suggest_categorical(name, spec)


def _to_train_params(study: Ranges, values: dict[str, Any]) -> dict[str, Any]:
    params = {k: v for k, v in values.items() if k not in _DERIVED}
    if "psi_fraction" in values:  # continuation: psi ramps over a fraction of the budget
        params["psi_epochs"] = max(1, round(values["psi_fraction"] * study.epochs))
    return params


class MethodSpace:
    """The define-by-run function of one cell (a class, not a closure: Tune pickles it)."""

    def __init__(self, study: Ranges, method: str):
        self.study = study
        self.ranges = study.search_space(method)

    def __call__(self, trial) -> dict[str, Any]:
        values = {name: _suggest(trial, name, spec) for name, spec in self.ranges.items()
                  if name != "min_phase2_epochs"}
        return _to_train_params(self.study, values)


def corner_params(study: Ranges, method: str, pick=max) -> dict[str, Any]:
    """One corner of the space: with max, the most demanding schedule the search can ask
    for; with min, the smallest values (a zero or negative learning rate shows up here)."""
    values = {}
    for name, spec in study.search_space(method).items():
        if name == "min_phase2_epochs":
            continue
        values[name] = pick(spec) if isinstance(spec, list) else spec
    params = _to_train_params(study, values)
    if method == "annealing" and pick is max:
        min_phase2 = study.search_space(method).get("min_phase2_epochs", 1)
        needed = params["tau_max"] * params["stage_epochs"] + min_phase2
        if needed > study.epochs:
            raise ConfigError(
                f"epochs: {study.epochs} is not allowed; the annealing search can ask for tau_max "
                f"{params['tau_max']} x stage_epochs {params['stage_epochs']} plus "
                f"{min_phase2} phase-2 epochs = {needed} epochs (raise epochs or narrow search.annealing)")
    return params
