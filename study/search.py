"""The study's plan, as one Tune searcher, and its pruner, as a thin Tune scheduler.

One Tune experiment runs the whole study. `StudyPlanner` suggests every trial: a cell's
search trials as soon as the teacher it needs exists (CE needs none), then, as soon as the
cell's search is complete, re-runs of its best configuration with other seeds and audits of
pruned configurations, in the same experiment: no stage waits for another. What has run is
read from the ledger (study/ledger.py, the Optuna storage), never from Tune's state, so a
new session of an interrupted or killed study picks up where the ledger says: finished
trials are adopted, trials left running are failed and run again (from their last
checkpoint), and every cell ends with exactly its trial count.

Seeds: every cell of a student is re-run with the same seeds (study seed + 1, + 2, ...), so
methods compare paired by seed. A student starts with `rerun_seeds`; while the 95% interval
of some cell's validation score is wider than ±`rerun_target` points, its cells get more
seeds, up to `rerun_max_seeds` (the test set plays no part in this).

Choosing the configuration: with `confirm_top` set, a cell's best completed search trials
first run again with `confirm_seeds` other seeds (stage `confirm`, seeds from study seed +
1001), and the re-runs use the configuration with the best mean validation score over its
seeds; the headline seeds never take part in the choice.

The pruning rule (README, "Pruning"): trials are compared at the same epoch of their final
phase, the part of the run that trains on the method's final objective (kd's
`Method.final_phase_epochs`: every epoch for CE, Hinton KD and TAKD; Annealing-KD's phase 2;
Continuation-KD's epochs after psi reached 1). An Annealing-KD student still regressing
onto Phi(T) z_t is not trying to classify yet, and the shorter its phase 1, the sooner its
accuracy rises: compared on global epochs, the pruner keeps the shortest schedules. So the
pruner's step is the final-phase epoch, and it decides only at grace_epochs x
reduction_factor^k final-phase epochs (`StudyConfig.decision_steps`: ASHA's rungs; the
median pruner decides there too). Nothing reaches Optuna before a trial's final phase.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import TrialState
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from scipy import stats

from study.config import StudyConfig
from study.ledger import RERUN, SEARCH, Ledger
from study.teachers import TeacherStage, roles_needed
from study.trainable import trial_folder

METRIC, MODE = "best_val_acc", "max"
RERUN_SEED_STEP = 2  # seeds a top-up adds to every cell of a student
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class Run:
    """What a Tune trial runs: a trial of the ledger."""
    cell: str
    kind: str      # SEARCH or RERUN (re-runs and audits)
    number: int    # its number in the cell's Optuna study of that kind


class StudyPlanner(Searcher):
    def __init__(self, config: StudyConfig, ledger: Ledger, exp_dir: Path, teachers: TeacherStage):
        super().__init__(metric=METRIC, mode=MODE)
        self.config, self.ledger, self.exp_dir, self.teachers = config, ledger, Path(exp_dir), teachers
        self.cells = {f"{s}-{m}": (s, m) for s, m in config.cells}
        self.live: dict[str, Run] = {}
        self.pruned: set[str] = set()
        # where an interrupted re-run left its last checkpoint, for the re-run that replaces it
        self.resume_reruns: dict[tuple[str, str, int, str], str] = {}
        self.extra_seeds: dict[str, int] = {}  # seeds the top-ups of this session planned per student
        self.changes, self.idle_since = 0, None  # trials ended; the moment suggest last found nothing
        self.reconcile()

    # ------------------------------------------------------------------ a new session
    def reconcile(self) -> None:
        """Trials an earlier session left RUNNING: a finished one (its final.json exists) is
        adopted, any other is failed and queued again, to resume from its last checkpoint."""
        for cell, (_, method) in self.cells.items():
            for kind in (SEARCH, RERUN):
                for trial in self.ledger.trials(cell, kind):
                    if trial.state != TrialState.RUNNING:
                        continue
                    folder = self.folder(cell, kind, trial.user_attrs)
                    final = folder / "final.json"
                    if final.is_file():
                        self.ledger.tell(cell, kind, trial.number, TrialState.COMPLETE,
                                         json.loads(final.read_text()).get(METRIC))
                        continue
                    self.ledger.mark_replaced(cell, kind, trial.number)
                    if kind == SEARCH:
                        self.ledger.requeue(trial, cell, resume_from=str(folder))
                    else:  # planned again, as the ledger no longer holds it
                        attrs = trial.user_attrs
                        self.resume_reruns[(cell, attrs["stage"], attrs["seed"], attrs["params"])] = str(folder)

    def folder(self, cell: str, kind: str, attrs: dict[str, Any]) -> Path:
        stage = SEARCH if kind == SEARCH else attrs.get("stage", RERUN)
        return trial_folder(str(self.exp_dir), {"cell": cell, "stage": stage}, attrs.get("tune_trial", ""))

    # ------------------------------------------------------------------ what the ledger says
    def search_trials(self, cell: str) -> list:
        replaced = self.ledger.replaced(cell, SEARCH)
        return [t for t in self.ledger.trials(cell) if t.number not in replaced]

    def search_complete(self, cell: str) -> bool:
        trials = self.search_trials(cell)
        return len(trials) >= self.config.trials_per_cell and all(t.state in FINISHED_STATES for t in trials)

    def reruns(self, cell: str) -> list:
        replaced = self.ledger.replaced(cell, RERUN)
        return [t for t in self.ledger.trials(cell, RERUN) if t.number not in replaced]

    def planned_seeds(self, student: str) -> int:
        """Seeds the student's cells are re-run with: rerun_seeds, plus what earlier top-ups added."""
        seen = {t.user_attrs["seed"] for cell in self.cells_of(student) for t in self.reruns(cell)
                if t.user_attrs.get("stage") == "rerun"}
        return max(self.config.rerun_seeds, len(seen), self.extra_seeds.get(student, 0))

    def best_on_record(self) -> dict[str, float]:
        """Each cell's best validation accuracy in the ledger; cells with none are left out."""
        best = {cell: self.ledger.best_value(cell) for cell in self.cells}
        return {cell: value for cell, value in best.items() if value is not None}

    def cells_of(self, student: str) -> list[str]:
        return [c for c, (s, _) in self.cells.items() if s == student]

    def ready(self, cell: str) -> bool:
        return all(self.teachers.ready(role) for role in roles_needed(self.cells[cell][1]))

    def max_trials(self) -> int:
        """An upper bound of the Tune trials one session may start (Tune wants a number; the
        planner says when it is done): every trial of the plan, twice over for replacements."""
        per_cell = (self.config.trials_per_cell + self.config.max_seeds + self.config.audit_pruned +
                    self.config.confirm_top * self.config.confirm_seeds)
        return 2 * len(self.cells) * per_cell

    # ------------------------------------------------------------------ Searcher
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric, mode and spaces are fixed by the study

    def suggest(self, trial_id: str) -> dict | None:
        self.teachers.check()  # a teacher task that failed stops the study with its error
        # Tune asks on every scheduling step while it has room: answer "not now" cheaply until
        # a trial ended or a teacher became ready
        moment = (self.changes, tuple(self.teachers.ready(r) for r in self.teachers.roles))
        if moment == self.idle_since:
            return None
        run = self.next_run(trial_id)
        if run is not None:
            return run
        if not self.live and self.everything_planned():
            return Searcher.FINISHED
        self.idle_since = moment
        return None

    def next_run(self, trial_id: str) -> dict | None:
        ready = [c for c in self.cells if self.ready(c)]
        # search first: a cell's re-runs wait for its search, so searches gate the study's end
        open_cells = [c for c in ready if len(self.search_trials(c)) < self.config.trials_per_cell or
                      any(t.state == TrialState.WAITING for t in self.search_trials(c))]
        if open_cells:
            cell = min(open_cells, key=lambda c: len(self.search_trials(c)))
            return self.start_search(trial_id, cell)
        for cell in ready:
            for stage, seed, params in self.missing_reruns(cell):
                return self.start_rerun(trial_id, cell, stage, seed, params)
        for student in self.students():  # all of a student's re-runs done: more seeds?
            if self.reruns_finished(student) and self.top_up(student):
                return self.next_run(trial_id)
        # Nothing can start, but cells wait for a teacher that is training: start one of their
        # search trials now, to wait inside its trial for the teacher. A slot left without a
        # trial makes Tune drop its actor, and a new actor (seconds of imports) then loses every
        # pending trial to the surviving actor, which is free again sooner: one slot would stay
        # empty for the rest of the study (README, "The default study").
        waiting = [c for c in self.cells if not self.ready(c) and len(self.search_trials(c)) <
                   self.config.trials_per_cell]
        if waiting:
            return self.start_search(trial_id, min(waiting, key=lambda c: len(self.search_trials(c))))
        return None

    def students(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in self.cells.values()))

    def reruns_finished(self, student: str) -> bool:
        cells = self.cells_of(student)
        return all(self.search_complete(c) and not self.missing_reruns(c) for c in cells) and \
            all(t.state in FINISHED_STATES for c in cells for t in self.reruns(c))

    def start_search(self, trial_id: str, cell: str) -> dict:
        student, method = self.cells[cell]
        number, params, attrs = self.ledger.ask_search(cell, method, trial_id)
        self.live[trial_id] = Run(cell, SEARCH, number)
        return self.run_config(cell, "search", params, self.config.seed, number, attrs.get("resume_from"))

    def start_rerun(self, trial_id: str, cell: str, stage: str, seed: int, params: dict) -> dict:
        number = self.ledger.ask_rerun(cell, stage, seed, params, trial_id)
        self.live[trial_id] = Run(cell, RERUN, number)
        resume_from = self.resume_reruns.get((cell, stage, seed, json.dumps(params, sort_keys=True)))
        return self.run_config(cell, stage, params, seed, number, resume_from)

    def run_config(self, cell: str, stage: str, params: dict, seed: int, number: int,
                   resume_from: str | None) -> dict:
        student, method = self.cells[cell]
        # the roles' row files: the trial reads its teachers' paths there once they exist
        roles = {f"{role}_checkpoint": str(self.teachers.row_file(role))
                 for role in roles_needed(method) + (("teacher",) if method == "takd" else ())}
        return {"cell": cell, "student": student, "method": method, "stage": stage, "seed": seed,
                "optuna_trial": number, "params": params, "teacher_rows": roles, "resume_from": resume_from}

    def missing_reruns(self, cell: str) -> list[tuple[str, int, dict]]:
        """Re-runs and audits the plan wants for a cell whose search is complete and that the
        ledger does not hold yet."""
        if not self.search_complete(cell):
            return []
        trials = self.search_trials(cell)
        completed = [t for t in trials if t.state == TrialState.COMPLETE]
        have = {(t.user_attrs["stage"], t.user_attrs["seed"], t.user_attrs["params"]) for t in self.reruns(cell)}
        wanted = [("confirm", seed, self.params_of(t)) for t in self.candidates(completed)
                  for seed in self.config.confirm_seed_list]
        best = self.selected(cell, completed)
        if best is not None:
            seeds = range(self.config.seed + 1, self.config.seed + 1 + self.planned_seeds(self.cells[cell][0]))
            wanted += [("rerun", seed, best) for seed in seeds]
        pruned = sorted(t.number for t in trials if t.state == TrialState.PRUNED)
        audited = random.Random(f"{self.config.seed}:{cell}").sample(pruned, min(self.config.audit_pruned, len(pruned)))
        wanted += [("audit", self.config.seed, self.params_of(trials_by_number(trials)[n])) for n in audited]
        return [(stage, seed, params) for stage, seed, params in wanted
                if (stage, seed, json.dumps(params, sort_keys=True)) not in have]

    def candidates(self, completed: list) -> list:
        """The configurations confirmed with more seeds: the cell's confirm_top best completed
        search trials (the first on ties)."""
        return ranked(completed)[:self.config.confirm_top]

    def selected(self, cell: str, completed: list) -> dict | None:
        """The configuration the cell's headline re-runs use (None: not chosen yet). Without
        confirmation, the best search trial. With it, the candidate whose search trial and
        confirmation runs have the best mean validation score, once all have finished; a
        candidate that failed under some seed (diverged) ranks below every one that did not.
        One seed's validation score picks a lucky configuration as often as a good one
        (README, "The default study")."""
        if not completed:
            return None
        if not self.config.confirm_top:
            return self.params_of(ranked(completed)[0])
        confirms: dict[str, list] = {}
        for t in self.reruns(cell):
            if t.user_attrs.get("stage") == "confirm":
                confirms.setdefault(t.user_attrs["params"], []).append(t)
        ranking = []
        for rank, candidate in enumerate(self.candidates(completed)):
            runs = confirms.get(candidate.user_attrs["params"], [])
            if not set(self.config.confirm_seed_list) <= {t.user_attrs["seed"] for t in runs
                                                           if t.state in FINISHED_STATES}:
                return None
            values = [candidate.value] + [t.value for t in runs if t.state == TrialState.COMPLETE]
            failures = sum(t.state == TrialState.FAIL for t in runs)
            ranking.append((failures, -sum(values) / len(values), rank))
        return self.params_of(self.candidates(completed)[min(ranking)[2]])

    def params_of(self, trial) -> dict:
        return json.loads(trial.user_attrs["params"])

    def everything_planned(self) -> bool:
        """Every role ready, every cell's search complete and every planned re-run finished
        (asked after `next_run` found nothing: no student's seeds to top up either)."""
        return all(self.teachers.ready(role) for role in self.teachers.roles) and \
            all(self.reruns_finished(s) for s in self.students())

    def top_up(self, student: str) -> bool:
        """Gives the student's cells more seeds when a cell's validation interval is too wide;
        True when it did (the new re-runs are then missing, and suggested next)."""
        planned = self.planned_seeds(student)
        if planned >= self.config.max_seeds:
            return False
        for cell in self.cells_of(student):
            values = [t.value for t in self.reruns(cell) if t.user_attrs.get("stage") == "rerun"
                      and t.state == TrialState.COMPLETE]
            if len(values) >= 2 and half_width(values) > self.config.rerun_target:
                self.extra_seeds[student] = min(self.config.max_seeds, planned + RERUN_SEED_STEP)
                return True
        return False

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        run = self.live.pop(trial_id, None)
        if run is None:
            return
        self.changes += 1
        result = result or {}
        if run.kind == SEARCH and trial_id in self.pruned:
            state = TrialState.PRUNED
        elif error or result.get("diverged") or result.get(METRIC) is None:
            state = TrialState.FAIL
        elif not result.get("finished"):
            return  # stopped by an interrupt: the next session runs it again
        else:
            state = TrialState.COMPLETE
        self.ledger.tell(run.cell, run.kind, run.number, state, result.get(METRIC))

    # ------------------------------------------------------------------ for the pruner
    def report_and_should_prune(self, trial_id: str, value: float, step: int) -> bool:
        run = self.live.get(trial_id)
        if run is None or run.kind != SEARCH:
            return False
        return self.ledger.report(run.cell, run.number, value, step)

    def mark_pruned(self, trial_id: str) -> None:
        self.pruned.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        # Nothing to keep: the ledger is the record, and a new session starts a new Tuner.
        Path(checkpoint_path).write_text("{}")

    def restore(self, checkpoint_path: str) -> None:
        pass


def ranked(completed: list) -> list:
    """Completed search trials, best validation score first (the first trial on ties)."""
    return sorted(completed, key=lambda t: (-t.value, t.number))


def trials_by_number(trials) -> dict:
    return {t.number: t for t in trials}


def half_width(values: list[float]) -> float:
    """Half the width of the 95% t-interval of the mean of `values`."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)


class CellPruner(FIFOScheduler):
    """Stops a search trial when its cell's Optuna pruner says so, at a decision step of the
    trial's final phase (module docstring); a trial never reaches the pruner before."""

    def __init__(self, planner: StudyPlanner, steps: set[int]):
        super().__init__()
        self._metric, self._mode = METRIC, MODE
        self.planner = planner
        self.steps = steps

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        step = int(result.get("final_phase_epoch") or 0)
        if result.get("diverged") or result.get("finished") or step not in self.steps:
            return TrialScheduler.CONTINUE
        if self.planner.report_and_should_prune(trial.trial_id, float(result[METRIC]), step):
            self.planner.mark_pruned(trial.trial_id)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE
