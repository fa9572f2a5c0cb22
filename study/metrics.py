"""Study progress exported through ray.util.metrics (SPEC §8), for Prometheus and Grafana.

Everything is set by the driver, in a Tune callback that sees every trial start, report and
end. Series are per cell (tags `study` and `cell`, plus `phase` for the running trials), so
their number is bounded by the study's cells, not its trials (a trial tag would add series
with every trial, each exported by its worker). A trial that ends leaves nothing behind: the
cell's running count and temperatures are recomputed without it, and a phase series it was
alone in drops to 0.

A trial's phase and temperature are those of its last report to Tune (study/trainable.py
reports at the pruner's decision steps, checkpoints, temperature stage and phase ends), not
of every epoch: the driver hears nothing in between.

Ray exports a Gauge only while it is being set: its metrics agent drops a value not set again
within two export intervals (Ray 2.60). The callback sets every series again each
REFRESH_SECONDS of Tune's loop, so a cell's best accuracy or a quiet trial's phase stays on the
graph between events.

They appear on the driver node's metrics export port as `ray_<name>` (counters with a
`_total` suffix); the README's "Monitoring" section lists them, and
monitoring/grafana/annealing-kd-dashboard.json plots them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ray.tune import Callback
from ray.util.metrics import Counter, Gauge

CELL_TAGS = ("study", "cell")
REFRESH_SECONDS = 1.0  # Ray exports at most once a second: two exports per value at the least


@dataclass
class _Running:
    cell: str
    phase: int = 1  # every run starts in phase 1; a retried trial keeps its last reported phase
    T: float | None = None  # None until a report carries a temperature (CE, Annealing-KD's phase 2: never)


class StudyMetrics(Callback):
    """Per cell: trials started / completed / pruned / failed (counters), trials running by
    phase, mean and max temperature T of the running trials, best validation accuracy so far;
    per study: running trials over the cluster's trial slots (the live counterpart of
    study.json's utilisation)."""

    def __init__(self, study: str, slots: int, best_on_record: dict[str, float] | None = None):
        """`best_on_record`: each cell's best validation accuracy in the ledger, so that a resumed
        study's gauge starts from its past, not from the first result of the new session."""
        self.study, self.slots = study, max(1, slots)
        self.started = Counter("kd_trials_started", "trials started", tag_keys=CELL_TAGS)
        self.completed = Counter("kd_trials_completed", "trials that ran their full budget", tag_keys=CELL_TAGS)
        self.pruned = Counter("kd_trials_pruned", "trials stopped early by the pruner", tag_keys=CELL_TAGS)
        self.failed = Counter("kd_trials_failed", "trials that errored or diverged", tag_keys=CELL_TAGS)
        self.best = Gauge("kd_cell_best_val_acc", "best validation accuracy in the cell (%)", tag_keys=CELL_TAGS)
        self.running_trials = Gauge("kd_cell_running_trials", "trials running, by the phase of their last report",
                                    tag_keys=(*CELL_TAGS, "phase"))
        self.temperature_mean = Gauge("kd_cell_temperature_mean", "mean annealing temperature T of the running "
                                      "trials that reported one (0 when none did)", tag_keys=CELL_TAGS)
        self.temperature_max = Gauge("kd_cell_temperature_max", "highest annealing temperature T of the running "
                                     "trials (0 when none reported one)", tag_keys=CELL_TAGS)
        self.utilisation = Gauge("kd_study_utilisation", "running trials / the cluster's trial slots",
                                 tag_keys=("study",))
        # Trials started and not ended (one waiting for its retry included: it is not started twice)
        self.running: dict[str, _Running] = {}
        self.best_seen: dict[str, float] = dict(best_on_record or {})
        self.phases: dict[str, set[int]] = {}  # per cell, every phase series exported so far
        self.refreshed = time.monotonic()
        for cell in self.best_seen:
            self._publish(cell)

    def _tags(self, cell: str) -> dict[str, str]:
        return {"study": self.study, "cell": cell}

    def _publish(self, cell: str) -> None:
        """Sets every series of the cell from the trials running now."""
        trials = [t for t in self.running.values() if t.cell == cell]
        phases = self.phases.setdefault(cell, {1})
        phases |= {t.phase for t in trials}
        tags = self._tags(cell)
        for phase in phases:  # a phase nobody is in any more is set to 0, not left at its last count
            self.running_trials.set(float(sum(t.phase == phase for t in trials)), tags={**tags, "phase": str(phase)})
        temperatures = [t.T for t in trials if t.T is not None]
        self.temperature_mean.set(sum(temperatures) / len(temperatures) if temperatures else 0.0, tags=tags)
        self.temperature_max.set(max(temperatures, default=0.0), tags=tags)
        if cell in self.best_seen:
            self.best.set(float(self.best_seen[cell]), tags=tags)
        self.utilisation.set(len(self.running) / self.slots, tags={"study": self.study})

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.running:  # a retry: started once already
            return
        cell = trial.config["cell"]
        self.running[trial.trial_id] = _Running(cell)
        self.started.inc(tags=self._tags(cell))
        self._publish(cell)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        cell = trial.config["cell"]
        value = result.get("best_val_acc")
        if value is not None and value > self.best_seen.get(cell, -math.inf):  # NaN compares False
            self.best_seen[cell] = value
        state = self.running.get(trial.trial_id)
        if state is not None:
            # A diverged trial's last report has neither phase nor T: it keeps the ones it had
            state.phase = int(result.get("phase", state.phase))
            T = result.get("T", state.T)
            state.T = T if T is not None and math.isfinite(T) else None  # the trainable turns None into NaN
        self._publish(cell)

    def _end(self, trial, counter: Counter) -> None:
        # Tune also "completes" trials that never started (pending ones at the end): not counted
        state = self.running.pop(trial.trial_id, None)
        if state is not None:
            counter.inc(tags=self._tags(state.cell))
            self._publish(state.cell)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        self._end(trial, self.failed if last.get("diverged") else
                  self.completed if last.get("finished") else self.pruned)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, self.failed)

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.refreshed >= REFRESH_SECONDS:
            self.refreshed = time.monotonic()
            for cell in self.phases:
                self._publish(cell)


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
