"""The study's one record of what has run: the Optuna storage, <experiment>/optuna-journal.log.

Per cell two Optuna studies: `<name>:<cell>` holds the cell's search trials (sampled by its
own TPE sampler, pruned by its own pruner), and `<name>:<cell>:rerun` its seed re-runs and
pruning audits (user attributes `stage`, `seed`, `params`; value: the best validation
score). Every trial carries the id of the Tune trial that runs it (`tune_trial`), which
names its folder. Tune only executes: which trials exist, which finished, were pruned or
failed is read here, so a study killed at any moment resumes from this file alone.

Every write is idempotent: telling a finished trial again or reporting a step twice changes
nothing (after a kill a finished trial may be reported again). Only Optuna's public API is
used.

The storage is Optuna's journal file (JournalStorage): one JSON line per operation, appended
and fsynced, read incrementally. On the study's small studies it answers an ask, a report or
a tell about 6x faster than SQLite (benchmarks/ledger_speed.py), and the driver makes several per
trial while the trial slots wait for its next suggestion.
"""
from __future__ import annotations

import json
import math
import zlib
from functools import cached_property
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from kd.config import ConfigError
from study.config import StudyConfig
from study.space import MethodSpace

SEARCH, RERUN = "search", "rerun"
REPLACED = "replaced"  # study attribute: trials an interrupted session left running, failed and run again


def open_storage(path: Path) -> optuna.storages.JournalStorage:
    """The journal at `path`. A line a kill cut short is dropped first: appended to, it would
    turn into a line Optuna cannot read, and every later operation would be unreadable too."""
    from optuna.storages.journal import JournalFileBackend

    if path.is_file():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def check_ledger_readable(path: Path) -> None:
    """A resumed study reads its whole record first: a ledger Optuna cannot read is refused
    here, before Ray starts, rather than by the first trial's tell."""
    if not path.is_file():
        return
    try:
        optuna.get_all_study_summaries(open_storage(path), include_best_trial=False)
    except Exception as error:  # Optuna raises whatever its JSON replay meets
        raise ConfigError(f"--resume: {path} is not a readable Optuna journal ({type(error).__name__}: "
                          f"{error}); the study's record of what has run is lost, start it under a new "
                          f"--name") from None


def make_pruner(study: StudyConfig) -> optuna.pruners.BasePruner:
    if study.pruner == "median":
        # steps are final-phase epochs counted from 1; Optuna's earliest decision is at n_warmup_steps
        return optuna.pruners.MedianPruner(n_startup_trials=study.startup_trials,
                                           n_warmup_steps=study.grace_epochs)
    if study.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=study.grace_epochs,
                                                      reduction_factor=study.reduction_factor)
    return optuna.pruners.NopPruner()


def make_sampler(study: StudyConfig, cell: str, history: int = 0) -> optuna.samplers.TPESampler:
    """The cell's sampler. Optuna 5 changed these defaults and they are all explicit here. The
    seed comes from the study seed and the cell's name (adding a student does not reseed the
    other cells) and the trials the cell already has: a resumed study must not draw its
    random start-up configurations again from the beginning."""
    seed = zlib.crc32(f"{study.seed}:{cell}:{history}".encode())
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                      n_startup_trials=study.startup_trials)


LEDGER_FILE = "optuna-journal.log"


class Ledger:
    def __init__(self, config: StudyConfig, exp_dir: str | Path, name: str):
        self.config = config
        self.name = name
        self.path = Path(exp_dir) / LEDGER_FILE
        self._studies: dict[tuple[str, str], optuna.Study] = {}
        # What the storage holds, per (cell, kind), read again only after this ledger wrote to
        # it: the planner asks on every scheduling step, and it is the only writer.
        self._trials: dict[tuple[str, str], list[FrozenTrial]] = {}
        self._replaced: dict[tuple[str, str], set[int]] = {}
        self._running: dict[tuple[str, str, int], optuna.Trial] = {}  # asked in this session

    @cached_property
    def storage(self) -> optuna.storages.BaseStorage:
        return open_storage(self.path)

    def study(self, cell: str, kind: str = SEARCH) -> optuna.Study:
        key = (cell, kind)
        if key not in self._studies:
            try:  # load first: create_study(load_if_exists=True) appends to the journal every time
                study = optuna.load_study(study_name=self.study_name(cell, kind), storage=self.storage)
            except KeyError:
                study = optuna.create_study(storage=self.storage, study_name=self.study_name(cell, kind),
                                            direction="maximize")
            if kind == SEARCH:
                study.sampler = make_sampler(self.config, cell, len(study.get_trials(deepcopy=False)))
                study.pruner = make_pruner(self.config)
            self._studies[key] = study
        return self._studies[key]

    def trials(self, cell: str, kind: str = SEARCH) -> list[FrozenTrial]:
        if (cell, kind) not in self._trials:
            self._trials[(cell, kind)] = self.study(cell, kind).get_trials(deepcopy=False)
        return self._trials[(cell, kind)]

    def _wrote(self, cell: str, kind: str) -> None:
        self._trials.pop((cell, kind), None)

    def recorded(self, cell: str, kind: str = SEARCH) -> list[FrozenTrial]:
        """The trials on record, without creating the cell's study when it has none (a
        summary of a study that never reached a cell must not write to the ledger)."""
        if (cell, kind) in self._studies:
            return self.trials(cell, kind)
        names = {s.study_name for s in optuna.get_all_study_summaries(self.storage, include_best_trial=False)}
        return self.trials(cell, kind) if self.study_name(cell, kind) in names else []

    def best_value(self, cell: str) -> float | None:
        """The best validation score on record in the cell, search and re-runs: a completed
        trial's value, a pruned one's last report (a best so far too). None before any."""
        values = []
        for kind in (SEARCH, RERUN):
            for trial in self.trials(cell, kind):
                if trial.state == TrialState.COMPLETE:
                    values.append(trial.value)
                elif trial.state == TrialState.PRUNED and trial.intermediate_values:
                    values.append(max(trial.intermediate_values.values()))
        return max(values, default=None)

    def study_name(self, cell: str, kind: str) -> str:
        return {SEARCH: f"{self.name}:{cell}", RERUN: f"{self.name}:{cell}:{RERUN}"}[kind]

    # ------------------------------------------------------------------ writes
    def ask_search(self, cell: str, method: str, tune_trial: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
        """A new search trial of the cell: its number, the TrainConfig values it runs and its
        user attributes. A trial queued by `requeue` comes back with the same configuration."""
        trial = self.study(cell).ask()
        params = MethodSpace(self.config, method)(trial)
        trial.set_user_attr("tune_trial", tune_trial)
        trial.set_user_attr("params", json.dumps(params, sort_keys=True))
        self._running[(cell, SEARCH, trial.number)] = trial
        self._wrote(cell, SEARCH)
        return trial.number, params, dict(trial.user_attrs)

    def ask_rerun(self, cell: str, stage: str, seed: int, params: dict[str, Any], tune_trial: str,
                  **attrs: Any) -> int:
        trial = self.study(cell, RERUN).ask()
        for key, value in {"stage": stage, "seed": seed, "params": json.dumps(params, sort_keys=True),
                           "tune_trial": tune_trial, **attrs}.items():
            trial.set_user_attr(key, value)
        self._running[(cell, RERUN, trial.number)] = trial
        self._wrote(cell, RERUN)
        return trial.number

    def requeue(self, stale: FrozenTrial, cell: str, **attrs: Any) -> None:
        """Queues a search trial's configuration again, to run as the replacement of `stale`."""
        self.study(cell).enqueue_trial(stale.params, user_attrs=attrs)
        self._wrote(cell, SEARCH)

    def report(self, cell: str, number: int, value: float, step: int) -> bool:
        """Reports a search trial's value at a decision step; True when its pruner says stop."""
        trial = self._running.get((cell, SEARCH, number))
        if trial is None:  # not asked in this session: it has ended
            return False
        if step not in self.trials(cell)[number].intermediate_values:
            trial.report(value, step)
            self._wrote(cell, SEARCH)
        return trial.should_prune()

    def tell(self, cell: str, kind: str, number: int, state: TrialState, value: float | None = None) -> None:
        """Ends a trial; a trial that has ended already stays as it is. PRUNED keeps the last
        intermediate value; COMPLETE needs a finite value, or the trial is told FAIL."""
        if state == TrialState.COMPLETE and (value is None or not math.isfinite(value)):
            state = TrialState.FAIL
        self.study(cell, kind).tell(number, value if state == TrialState.COMPLETE else None, state=state,
                                    skip_if_finished=True)
        self._running.pop((cell, kind, number), None)
        self._wrote(cell, kind)

    def mark_replaced(self, cell: str, kind: str, number: int) -> None:
        """Fails a trial an interrupted session left RUNNING and records it as replaced (a
        study attribute: a trial's own attributes cannot be written once its session is gone)."""
        self.tell(cell, kind, number, TrialState.FAIL)
        study = self.study(cell, kind)
        study.set_user_attr(REPLACED, sorted({*study.user_attrs.get(REPLACED, []), number}))
        self._replaced.pop((cell, kind), None)

    def replaced(self, cell: str, kind: str) -> set[int]:
        if (cell, kind) not in self._replaced:
            self._replaced[(cell, kind)] = set(self.study(cell, kind).user_attrs.get(REPLACED, []))
        return self._replaced[(cell, kind)]
