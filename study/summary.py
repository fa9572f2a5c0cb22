"""summary.csv: one tidy row per trial of the ledger, rebuilt from what is on disk.

Every trial the ledger (study/ledger.py) holds gets one row, in the ledger's order, with its state
there; its numbers come from its folder (result.json, or final.json for a trial that
finished after its driver stopped, error.txt). So summary.csv and Optuna agree trial by
trial, and the summary can be rebuilt at any time (mid-study, after an interruption, after
a resume) without a running cluster. A trial an interrupted session left running and the
next one ran again has status `replaced`; its replacement is a row of its own.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from optuna.trial import TrialState

# The reader owns the metric columns: analysis/ must load a summary without Ray or Optuna.
from analysis.load import METRIC_COLUMNS
from kd.methods import METHODS, ordered
from study.config import StudyConfig
from study.ledger import LEDGER_FILE, RERUN, SEARCH, Ledger
from study.trainable import FINAL_FILE, trial_folder

# The parameter columns every summary has had, in their order (readers and reports of existing
# experiments rely on them); the parameters of the study's other methods follow (param_columns).
PARAM_COLUMNS = ("tau_max", "stage_epochs", "lr", "weight_decay", "temperature", "alpha",
                 "psi_epochs", "margin")
_BEFORE_PARAMS = ["trial_id", "optuna_trial", "stage", "cell", "dataset", "method", "teacher", "student", "assistant",
                  "teacher_params", "student_params", "capacity_ratio", "teacher_test_acc", "seed", "config"]
_AFTER_PARAMS = ["status", "reason", "metric", "best_val_acc", "test_acc", *METRIC_COLUMNS,
                 "epochs_run", "epochs_budget", "seconds", "node", "trial_dir", "audit"]
COLUMNS = [*_BEFORE_PARAMS, *PARAM_COLUMNS, *_AFTER_PARAMS]
STATUS = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
          TrialState.RUNNING: "running"}


def param_columns(methods: list[str]) -> list[str]:
    """PARAM_COLUMNS, then every other parameter the methods declare, in the papers' order."""
    declared = [p.name for method in ordered(methods) for p in METHODS.get(method).params]
    return [*PARAM_COLUMNS, *dict.fromkeys(name for name in declared if name not in PARAM_COLUMNS)]


def _last_result(folder: Path) -> dict[str, Any]:
    """The trial's last result: result.json's last line (Tune's, with time and node), or its
    final.json when Tune never recorded the end."""
    path = folder / "result.json"
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill mid-write
                continue
    if (not rows or not rows[-1].get("finished")) and (folder / FINAL_FILE).is_file():
        return json.loads((folder / FINAL_FILE).read_text())
    return rows[-1] if rows else {}


def _reason(status: str, last: dict[str, Any], folder: Path) -> str:
    if status == "replaced":
        return "interrupted: run again by the next session as a new trial"
    if status == "pruned":
        return f"pruned at epoch {last.get('epoch', 0)}"
    if status != "failed":
        return ""
    if last.get("diverged"):
        return last.get("reason", "diverged")
    error = folder / "error.txt"
    if error.is_file() and error.stat().st_size:
        return error.read_text().strip().splitlines()[-1][:300]
    return "error"


def build_summary(exp_dir: Path, study: StudyConfig, name: str, teachers: pd.DataFrame,
                  param_counts: dict[str, int]) -> pd.DataFrame:
    exp_dir = Path(exp_dir)
    params_seen = param_columns(study.methods)
    columns = [*_BEFORE_PARAMS, *params_seen, *_AFTER_PARAMS]
    if not (exp_dir / LEDGER_FILE).is_file():
        return pd.DataFrame(columns=columns)
    ledger = Ledger(study, exp_dir, name)
    teacher_row = teachers[teachers.role == "teacher"].iloc[0] if len(teachers) else None
    teacher_params = param_counts[study.teacher]
    rows = []
    for student, method in study.cells:
        cell = f"{student}-{method}"
        for kind in (SEARCH, RERUN):
            replaced = ledger.replaced(cell, kind) if ledger.recorded(cell, kind) else set()
            for trial in ledger.recorded(cell, kind):
                if trial.state == TrialState.WAITING:  # queued, not started
                    continue
                attrs = trial.user_attrs
                stage = SEARCH if kind == SEARCH else attrs["stage"]
                # no attributes: a driver killed between Optuna's ask() and their writing
                folder = trial_folder(str(exp_dir), {"cell": cell, "stage": stage}, attrs.get("tune_trial", ""))
                last = _last_result(folder)
                status = "replaced" if trial.number in replaced else STATUS[trial.state]
                params = json.loads(attrs.get("params", "{}"))
                rows.append({
                    "trial_id": attrs.get("tune_trial", ""), "optuna_trial": trial.number, "stage": stage,
                    "cell": cell, "dataset": study.dataset, "method": method,
                    "teacher": study.teacher, "student": student,
                    "assistant": study.assistant if METHODS.get(method).needs_assistant else "",
                    "teacher_params": teacher_params, "student_params": param_counts[student],
                    "capacity_ratio": teacher_params / param_counts[student],
                    "teacher_test_acc": float(teacher_row.test_acc) if teacher_row is not None else math.nan,
                    "seed": attrs.get("seed", study.seed), "config": json.dumps(params, sort_keys=True),
                    **{p: params.get(p, math.nan) for p in params_seen},
                    "status": status, "reason": _reason(status, last, folder),
                    # best_val_acc and test_acc hold the task's primary metric (accuracy for images)
                    "metric": last.get("primary_metric", ""),
                    "best_val_acc": last.get("best_val_acc", math.nan),
                    # test score of the checkpoint selected on validation (never the best test epoch)
                    "test_acc": last.get("selected_test_acc", math.nan),
                    **{c: last.get(f"selected_{c}", math.nan) for c in METRIC_COLUMNS},
                    "epochs_run": int(last.get("epoch") or 0), "epochs_budget": study.epochs,
                    # Tune's time of the trial, less any wait for its teacher (study/trainable.py)
                    "seconds": last.get("time_total_s", math.nan) - (last.get("teacher_wait_s") or 0.0),
                    "node": f"{last.get('node_ip', '')}/{str(last.get('node_id', ''))[:8]}",
                    "trial_dir": str(folder.relative_to(exp_dir)), "audit": stage == "audit",
                })
    return pd.DataFrame(rows, columns=columns)
