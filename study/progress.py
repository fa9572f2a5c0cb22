"""What a researcher reads while a study runs: where it is, how far it has got, what each cell
has found, and roughly how long it has left.

Everything shown is read from the ledger (study/ledger.py) through the planner, so a resumed
study shows the trials of its earlier sessions too. On a terminal it is a live table drawn by
rich; when stdout is not a terminal (CI, `ray job logs`, a file) it is plain lines: one status
line and one line of best validation scores per student, every `interval` seconds, whenever
the study moves to another stage, and once at the end.

    progress 01:40 elapsed, about 03:15 left | stage search | cells: 9 search, 6 confirm | trials 212 of 585: 96 completed, 114 pruned, 2 failed, 2 running
    best val mlp1d_64: ce 71.5, kd 72.3, takd 69.6, annealing 71.6, continuation 70.3

The estimate of the time left divides the epochs still planned (search trials at the mean
length of this session's finished search trials, every other trial at the full budget) by
the epochs per second this session has trained so far.
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from optuna.trial import TrialState
from ray.tune import Callback

from study.ledger import SEARCH

# A cell's stages, in the order it goes through them.
STAGES = ("teacher", "search", "confirm", "re-runs", "done")
PLAIN_INTERVAL, LIVE_INTERVAL = 30.0, 1.0


def clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class Progress(Callback):
    def __init__(self, planner, out: TextIO | None = None, interval: float | None = None,
                 live: bool | None = None):
        self.planner = planner
        self._out = out  # None: sys.stdout when it writes (Tune pickles its callbacks; a stream may not pickle)
        self.live = self.out.isatty() if live is None else live
        self.interval = interval if interval is not None else (LIVE_INTERVAL if self.live else PLAIN_INTERVAL)
        self.started = time.monotonic()
        self.last_shown = self.last_checked = float("-inf")
        self.last_stage, self.last_news = None, None
        self.epochs_done, self.search_epochs, self.search_done = 0, 0, 0
        self.display = None

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_out": None, "display": None}

    # ------------------------------------------------------------------ what the ledger says
    def cell_stage(self, cell: str) -> str:
        planner = self.planner
        if not planner.ready(cell):
            return "teacher"
        if not planner.search_complete(cell):
            return "search"
        completed = [t for t in planner.search_trials(cell) if t.state == TrialState.COMPLETE]
        if completed and planner.selected(cell, completed) is None:
            return "confirm"
        finished = all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
                       for t in planner.reruns(cell))
        return "done" if finished and not planner.missing_reruns(cell) else "re-runs"

    def snapshot(self) -> dict[str, Any]:
        planner, config = self.planner, self.planner.config
        stages = {cell: self.cell_stage(cell) for cell in planner.cells}
        states: dict[str, int] = {"completed": 0, "pruned": 0, "failed": 0}
        name = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
        best: dict[str, float] = {}
        left_search = left_other = 0
        for cell, (student, _) in planner.cells.items():
            search, reruns = planner.search_trials(cell), planner.reruns(cell)
            for trial in [*search, *reruns]:
                if trial.state in name:
                    states[name[trial.state]] += 1
            values = [t.value for t in search if t.state == TrialState.COMPLETE]
            if values:
                best[cell] = max(values)
            left_search += config.trials_per_cell - sum(t.state in name for t in search)
            # what the plan still holds for the cell: the runs it has not asked for yet, the ones
            # running, and what it asks for once the search (or the confirmation) has decided
            left_other += len(planner.missing_reruns(cell)) + sum(t.state == TrialState.RUNNING for t in reruns)
            if stages[cell] in ("teacher", "search"):
                left_other += config.confirm_top * config.confirm_seeds + config.audit_pruned
            if stages[cell] in ("teacher", "search", "confirm"):
                left_other += planner.planned_seeds(student)
        finished = sum(states.values())
        return {"stages": stages, "states": states, "best": best, "running": len(planner.live),
                "finished": finished, "planned": finished + left_search + left_other,
                "left_epochs": left_search * self.mean_search_epochs() + left_other * config.epochs}

    def mean_search_epochs(self) -> float:
        return self.search_epochs / self.search_done if self.search_done else self.planner.config.epochs

    def study_stage(self, stages: dict[str, str]) -> str:
        return min(stages.values(), key=STAGES.index) if stages else "done"

    def time_left(self, left_epochs: float) -> str:
        elapsed = time.monotonic() - self.started
        if not self.epochs_done or elapsed <= 0:
            return "time left unknown yet"
        return f"about {clock(left_epochs / (self.epochs_done / elapsed))} left"

    # ------------------------------------------------------------------ plain lines
    def lines(self, snap: dict[str, Any]) -> list[str]:
        stages, states = snap["stages"], snap["states"]
        per_stage = ", ".join(f"{sum(s == stage for s in stages.values())} {stage}"
                              for stage in STAGES if stage in stages.values())
        status = (f"progress {clock(time.monotonic() - self.started)} elapsed, {self.time_left(snap['left_epochs'])}"
                  f" | stage {self.study_stage(stages)} | cells: {per_stage} | trials {snap['finished']} of "
                  f"{snap['planned']}: {states['completed']} completed, {states['pruned']} pruned, "
                  f"{states['failed']} failed, {snap['running']} running")
        rows = [status]
        for student in self.planner.students():
            cells = self.planner.cells_of(student)
            scores = ", ".join(f"{self.planner.cells[c][1]} {snap['best'][c]:.1f}" if c in snap["best"] else
                               f"{self.planner.cells[c][1]} -" for c in cells)
            rows.append(f"best val {student}: {scores}")
        return rows

    # ------------------------------------------------------------------ the live table
    def table(self, snap: dict[str, Any]):
        from rich.table import Table

        stages, states = snap["stages"], snap["states"]
        table = Table(title=f"stage {self.study_stage(stages)} | {clock(time.monotonic() - self.started)} elapsed, "
                            f"{self.time_left(snap['left_epochs'])}",
                      caption=f"trials {snap['finished']} of {snap['planned']}: {states['completed']} completed, "
                              f"{states['pruned']} pruned, {states['failed']} failed, {snap['running']} running")
        for column in ("student", "method", "stage", "best val"):
            table.add_column(column, justify="right" if column == "best val" else "left")
        for cell, (student, method) in self.planner.cells.items():
            best = snap["best"].get(cell)
            table.add_row(student, method, stages[cell], "-" if best is None else f"{best:.2f}")
        return table

    # ------------------------------------------------------------------ Tune's callbacks
    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        due = now - self.last_shown >= self.interval
        # between its regular lines a plain display still says when the study changes stage
        # (read at most once a second: Tune calls on_step_end many times a second)
        check = not self.live and now - self.last_checked >= 1.0
        if not (force or due or check):
            return
        self.last_checked = now
        snap = self.snapshot()
        stage = self.study_stage(snap["stages"])
        if not (force or due or stage != self.last_stage):
            return
        self.last_shown, self.last_stage = now, stage
        if self.live:
            from rich.console import Console
            from rich.live import Live

            if self.display is None:
                self.display = Live(self.table(snap), console=Console(file=self.out), auto_refresh=False)
                self.display.start()
            self.display.update(self.table(snap), refresh=True)
            return
        lines = self.lines(snap)
        news = [lines[0].split(" | ", 1)[1], *lines[1:]]  # all but the clock
        if force and news == self.last_news:
            return  # the end, shown already
        self.last_news = news
        for line in lines:
            print(line, file=self.out, flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        epochs = (trial.last_result or {}).get("epoch") or 0
        self.epochs_done += epochs
        if trial.config.get("stage") == SEARCH:
            self.search_epochs += epochs
            self.search_done += 1

    def on_step_end(self, iteration, trials, **info):
        self.show()

    def on_experiment_end(self, trials, **info):
        self.show(force=True)
        if self.display is not None:
            self.display.stop()
