"""Study progress exported through ray.util.metrics (SPEC §8).

They appear on each node's metrics export port as `ray_kd_<name>{...}`, where Prometheus
scrapes them and Grafana plots them. Tags are bounded: the study name, the cell (students
x methods) and, for per-trial gauges, the trial id (bounded by the study's trial count).
"""
from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback
from ray.util.metrics import Counter, Gauge

_TRIAL_GAUGES = {
    "kd_trial_val_acc": "validation accuracy of the trial's last epoch (%)",
    "kd_trial_temperature": "annealing temperature T of the trial's last epoch (0 outside phase 1)",
    "kd_trial_phase": "phase of the trial (1 = annealing/distillation, 2 = fine-tuning)",
    "kd_trial_epoch": "epochs the trial has completed",
}
_TRIAL_TAGS = ("study", "cell", "trial")


class TrialMetrics:
    """Per-trial gauges, set from inside the trainable after every epoch."""

    def __init__(self, study: str, cell: str, trial: str):
        self.tags = {"study": study, "cell": cell, "trial": trial}
        self.gauges = {name: Gauge(name, description=text, tag_keys=_TRIAL_TAGS)
                       for name, text in _TRIAL_GAUGES.items()}

    def update(self, metrics: dict[str, Any]) -> None:
        values = {"kd_trial_val_acc": metrics["val_acc"], "kd_trial_temperature": metrics.get("T") or 0,
                  "kd_trial_phase": metrics["phase"], "kd_trial_epoch": metrics["epoch"]}
        for name, value in values.items():
            self.gauges[name].set(float(value), tags=self.tags)


class StudyMetrics(Callback):
    """Driver-side counters of trials started / completed / pruned / failed per cell, and
    the best validation accuracy per cell."""

    def __init__(self, study: str, pruned_ids: "set[str] | None" = None):
        self.study = study
        tags = ("study", "cell")
        self.started = Counter("kd_trials_started", "trials started", tag_keys=tags)
        self.completed = Counter("kd_trials_completed", "trials that ran their full budget", tag_keys=tags)
        self.pruned = Counter("kd_trials_pruned", "trials stopped early by the pruner", tag_keys=tags)
        self.failed = Counter("kd_trials_failed", "trials that errored or diverged", tag_keys=tags)
        self.best = Gauge("kd_cell_best_val_acc", "best validation accuracy in the cell (%)", tag_keys=tags)
        self.best_seen: dict[str, float] = {}

    def _tags(self, trial) -> dict[str, str]:
        config = trial.config.get("run", trial.config)
        return {"study": self.study, "cell": config.get("cell", "?")}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.inc(tags=self._tags(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tags = self._tags(trial)
        value = result.get("best_val_acc")
        if value is not None and value > self.best_seen.get(tags["cell"], float("-inf")):
            self.best_seen[tags["cell"]] = value
            self.best.set(float(value), tags=tags)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        if last.get("diverged"):
            self.failed.inc(tags=self._tags(trial))
        elif last.get("finished"):
            self.completed.inc(tags=self._tags(trial))
        else:
            self.pruned.inc(tags=self._tags(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.failed.inc(tags=self._tags(trial))


class WallClock(Callback):
    """Calls `record` (the runner's wall-time bookkeeping in study.json) every `every` seconds
    of Tune's loop, so a driver killed without warning has its time on record."""

    def __init__(self, record, every: float = 10.0):
        self.record, self.every = record, every
        self.last = time.monotonic()

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self.record()
