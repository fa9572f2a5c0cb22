"""One Optuna search per cell inside a single Tune experiment, and pruning within a cell.

Why not one Tuner per cell: cells must run concurrently so the cluster stays busy, and
one experiment is one thing to resume. So `CellSearcher` multiplexes a real `OptunaSearch`
per cell (each with its own seeded TPE sampler and its own study in the experiment's
SQLite storage), and `CellPruner` is the thin scheduler adapter that asks the trial's own
cell study, through its Optuna pruner, whether to stop: trials are only ever compared
with trials of their own cell.

`OptunaSearch` hard-codes Optuna's NopPruner and tells Optuna that a trial stopped by a
scheduler COMPLETED with its truncated value (SPEC §6). `CellStudySearch` fixes both: the
study gets the configured pruner, and pruned trials are told as PRUNED (Optuna then keeps
their last intermediate value). It reaches into OptunaSearch's private `_ot_trials` and
`_ot_study`, which is why Ray is pinned; tests/test_study_ray.py guards the behaviour.
"""
from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study.config import StudyConfig
from study.space import MethodSpace

METRIC, MODE = "best_val_acc", "max"


def make_pruner(study: StudyConfig) -> optuna.pruners.BasePruner:
    if study.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=study.startup_trials,
                                           n_warmup_steps=study.grace_epochs - 1)
    if study.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=study.grace_epochs,
                                                      reduction_factor=study.reduction_factor)
    return optuna.pruners.NopPruner()


def make_sampler(study: StudyConfig, cell_index: int) -> optuna.samplers.TPESampler:
    # Optuna 5 changed these defaults and OptunaSearch(seed=) is ignored once a sampler is
    # given: everything is explicit here. A different seed per cell keeps cells independent.
    return optuna.samplers.TPESampler(seed=study.seed * 1000 + cell_index, multivariate=True,
                                      constant_liar=True, n_startup_trials=study.startup_trials)


class CellStudySearch(OptunaSearch):
    """OptunaSearch for one cell: a real pruner, and PRUNED/FAIL told as such."""

    def __init__(self, *args: Any, pruner: optuna.pruners.BasePruner, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._ot_study.pruner = pruner
        self.pruned: set[str] = set()
        self.last_step: dict[str, int] = {}

    def _suggest_from_define_by_run_func(self, func, ot_trial) -> dict:
        # OptunaSearch merges the raw suggestions (e.g. psi_fraction) into the config; the
        # trainable wants exactly the TrainConfig values the space returns.
        return func(ot_trial)

    def report_and_should_prune(self, trial_id: str, value: float, step: int) -> bool:
        ot_trial = self._ot_trials[trial_id]
        # A trial resumed from a checkpoint reports epochs again; Optuna keeps the first.
        if step > self.last_step.get(trial_id, 0):
            ot_trial.report(value, step)
            self.last_step[trial_id] = step
        return ot_trial.should_prune()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # CellPruner already reported this epoch's value before deciding.
        pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        if trial_id in self.pruned:
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        elif error or not result or result.get("diverged") or result.get(METRIC) is None:
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        elif not result.get("finished"):
            # Stopped without a pruning decision (driver interrupted): it will be re-run.
            return
        else:
            self._ot_study.tell(ot_trial, result[METRIC], state=TrialState.COMPLETE)
        self._completed_trials.add(trial_id)


class CellSearcher(Searcher):
    """Suggests trials for every cell in turn (the least-started cell first) until each
    cell has its `trials_per_cell`; routes every event to the trial's own cell search."""

    def __init__(self, study: StudyConfig, storage: optuna.storages.BaseStorage, study_name: str):
        super().__init__(metric=METRIC, mode=MODE)
        self.trials_per_cell = study.trials_per_cell
        self.cells: dict[str, CellStudySearch] = {}
        self.cell_of: dict[str, str] = {}
        self.started: dict[str, int] = {}
        for index, (student, method) in enumerate(study.cells):
            cell = f"{student}-{method}"
            self.cells[cell] = CellStudySearch(
                space=MethodSpace(study, method), metric=METRIC, mode=MODE,
                sampler=make_sampler(study, index), storage=storage,
                study_name=f"{study_name}:{cell}", pruner=make_pruner(study))
            self.started[cell] = 0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric, mode and spaces are fixed per cell at construction

    def suggest(self, trial_id: str) -> dict | None:
        open_cells = [c for c in self.cells if self.started[c] < self.trials_per_cell]
        if not open_cells:
            return Searcher.FINISHED
        cell = min(open_cells, key=lambda c: self.started[c])
        params = self.cells[cell].suggest(trial_id)
        self.started[cell] += 1
        self.cell_of[trial_id] = cell
        student, method = cell.rsplit("-", 1)
        optuna_number = self.cells[cell]._ot_trials[trial_id].number
        return {"cell": cell, "student": student, "method": method, "stage": "search",
                "optuna_trial": optuna_number, "params": params}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        cell = self.cell_of.get(trial_id)
        if cell is not None:
            self.cells[cell].on_trial_complete(trial_id, result, error)

    def report_and_should_prune(self, trial_id: str, value: float, step: int) -> bool:
        return self.cells[self.cell_of[trial_id]].report_and_should_prune(trial_id, value, step)

    def mark_pruned(self, trial_id: str) -> None:
        self.cells[self.cell_of[trial_id]].pruned.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class CellPruner(FIFOScheduler):
    """Stops a trial when its cell's Optuna pruner says so, never before `grace_epochs`
    and never before the trial's first temperature stage has ended (an annealing student
    regressing onto 1/tau_max-scaled logits is not yet comparable on accuracy). A method
    without a temperature schedule (ce, kd, takd: T is empty) has no stage to wait for."""

    def __init__(self, searcher: CellSearcher, grace_epochs: int):
        super().__init__()
        self._metric, self._mode = METRIC, MODE
        self.searcher = searcher
        self.grace_epochs = grace_epochs
        self.first_stage_done: set[str] = set()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        trial_id = trial.trial_id
        if trial_id not in self.searcher.cell_of or result.get("diverged"):
            return TrialScheduler.CONTINUE
        if result.get("stage_end") or not _has_temperature(result):
            self.first_stage_done.add(trial_id)
        step = int(result["epoch"])
        prune = self.searcher.report_and_should_prune(trial_id, float(result[METRIC]), step)
        if prune and step >= self.grace_epochs and trial_id in self.first_stage_done \
                and not result.get("finished"):
            self.searcher.mark_pruned(trial_id)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE


def _has_temperature(result: dict) -> bool:
    # trials report an empty T as NaN (Tune's loggers read NaN more easily than None)
    T = result.get("T")
    return T is not None and not math.isnan(float(T))
