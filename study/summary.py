"""summary.csv: one tidy row per trial, rebuilt from what is on disk.

It reads the Tune trial folders (params.json, result.json, error.txt) and the cells'
Optuna studies (which know which trials were pruned), so it can be rebuilt at any time
(mid-study, after an interruption, after a resume) without a running cluster.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

# The reader owns the metric columns: analysis/ must load a summary without Ray or Optuna.
from analysis.load import METRIC_COLUMNS
from study.config import StudyConfig

STAGES = ("search", "rerun")
PARAM_COLUMNS = ("tau_max", "stage_epochs", "lr", "weight_decay", "temperature", "alpha",
                 "psi_epochs", "margin")
COLUMNS = ["trial_id", "stage", "cell", "dataset", "method", "teacher", "student", "assistant",
           "teacher_params", "student_params", "capacity_ratio", "teacher_test_acc", "seed", "config",
           *PARAM_COLUMNS, "status", "reason", "metric", "best_val_acc", "test_acc", *METRIC_COLUMNS,
           "epochs_run", "epochs_budget", "seconds", "node", "trial_dir", "audit"]


def _read_results(trial_dir: Path) -> list[dict[str, Any]]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill mid-write
            continue
    return rows


def optuna_states(exp_dir: Path, name: str, cells: list[str]) -> dict[tuple[str, int], str]:
    db = exp_dir / "optuna.db"
    if not db.is_file():
        return {}
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    states = {}
    for cell in cells:
        try:
            study = optuna.load_study(study_name=f"{name}:{cell}", storage=storage)
        except KeyError:
            continue
        for trial in study.get_trials(deepcopy=False):
            states[(cell, trial.number)] = trial.state.name
    return states


def build_summary(exp_dir: Path, study: StudyConfig, name: str, teachers: pd.DataFrame,
                  param_counts: dict[str, int]) -> pd.DataFrame:
    cells = [f"{s}-{m}" for s, m in study.cells]
    states = optuna_states(exp_dir, name, cells)
    teacher_row = teachers[teachers.role == "teacher"].iloc[0] if len(teachers) else None
    rows = []
    for stage in STAGES:
        stage_dir = exp_dir / stage
        if not stage_dir.is_dir():
            continue
        for trial_dir in sorted(p for p in stage_dir.iterdir() if (p / "params.json").is_file()):
            config = json.loads((trial_dir / "params.json").read_text())
            run = config.get("run", config)
            results = _read_results(trial_dir)
            last = results[-1] if results else {}
            status, reason = "running", ""
            error_file = trial_dir / "error.txt"
            if last.get("diverged"):
                status, reason = "failed", last.get("reason", "diverged")
            elif last.get("finished"):
                status = "completed"
            elif error_file.is_file():
                status = "failed"
                reason = error_file.read_text().strip().splitlines()[-1][:300] if error_file.stat().st_size else "error"
            elif states.get((run["cell"], run.get("optuna_trial", -1))) == "PRUNED":
                status, reason = "pruned", f"pruned at epoch {last.get('epoch', 0)}"
            params = run["params"]
            student = run["student"]
            teacher_params = param_counts[study.teacher]
            row = {
                "trial_id": last.get("trial_id", trial_dir.name), "stage": run.get("stage", stage),
                "cell": run["cell"], "dataset": study.dataset, "method": run["method"],
                "teacher": study.teacher, "student": student,
                "assistant": study.assistant if run["method"] == "takd" else "",
                "teacher_params": teacher_params, "student_params": param_counts[student],
                "capacity_ratio": teacher_params / param_counts[student],
                "teacher_test_acc": float(teacher_row.test_acc) if teacher_row is not None else math.nan,
                "seed": run.get("seed", study.seed), "config": json.dumps(params, sort_keys=True),
                **{p: params.get(p, math.nan) for p in PARAM_COLUMNS},
                "status": status, "reason": reason,
                # best_val_acc and test_acc hold the task's primary metric (accuracy for images)
                "metric": last.get("primary_metric", ""),
                "best_val_acc": last.get("best_val_acc", math.nan),
                # test score of the checkpoint selected on validation (never the best test epoch)
                "test_acc": last.get("selected_test_acc", math.nan),
                **{c: last.get(f"selected_{c}", math.nan) for c in METRIC_COLUMNS},
                "epochs_run": int(last.get("epoch", 0) or 0), "epochs_budget": study.epochs,
                "seconds": last.get("time_total_s", math.nan), "node": f"{last.get('node_ip', '')}/{str(last.get('node_id', ''))[:8]}",
                "trial_dir": str(trial_dir.relative_to(exp_dir)), "audit": run.get("stage") == "audit",
            }
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)
