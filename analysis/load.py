"""Read one experiment directory (the study's output contract) into typed DataFrames.

Loading is deliberately forgiving about what a live, interrupted or resumed study has not
written yet (progress files, re-runs, teachers) and strict about what makes every number
meaningless (no study.json or summary.csv, or files that do not parse). The first kind
becomes a human-readable note in `Experiment.missing`, which the report prints; the second
raises `ExperimentError` naming the path and the problem.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


class ExperimentError(Exception):
    """The directory is not a readable experiment; the message names the path and the problem."""


# Without these a summary row cannot be placed in any table.
REQUIRED_TRIAL_COLUMNS = ("trial_id", "stage", "cell", "method", "student", "status")
# Every metric a task can report (kd/metrics.py), as test_<name> of the selected checkpoint;
# MNLI's mismatched dev set adds test_accuracy_mm; empty where the task has no such metric.
# study/summary.py writes them; best_val_acc and test_acc hold the task's primary metric,
# named in the `metric` column.
METRIC_COLUMNS = ("test_accuracy", "test_f1", "test_mcc", "test_pearson", "test_spearman",
                  "test_accuracy_mm")
NUMERIC_TRIAL_COLUMNS = (
    "teacher_params", "student_params", "capacity_ratio", "teacher_test_acc", "seed", "tau_max",
    "stage_epochs", "lr", "weight_decay", "temperature", "alpha", "psi_epochs", "margin",
    "best_val_acc", "test_acc", *METRIC_COLUMNS, "epochs_run", "epochs_budget", "seconds",
)
TEXT_TRIAL_COLUMNS = ("dataset", "teacher", "assistant", "config", "reason", "metric", "node", "trial_dir")
TEACHER_COLUMNS = ("role", "arch", "params", "best_val_acc", "test_acc", "epochs", "seconds")
# Joined into every progress row so per-epoch data can be grouped without a merge.
EPOCH_KEYS = ("trial_id", "cell", "method", "student", "stage")
BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}


@dataclass
class Experiment:
    path: Path
    info: dict[str, Any]
    trials: pd.DataFrame
    epochs: pd.DataFrame
    teachers: pd.DataFrame
    missing: list[str] = field(default_factory=list)
    # Parts and tables derived from the frames above, computed once: a report asks for the
    # same ones dozens of times. An Experiment is read from disk and never changed after.
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return str(self.info.get("name") or self.path.name)

    @property
    def config(self) -> dict[str, Any]:
        return self.info.get("config") or {}

    @property
    def status(self) -> str:
        return str(self.info.get("status") or "unknown")

    @property
    def dataset(self) -> str:
        if self.config.get("dataset"):
            return str(self.config["dataset"])
        values = self.trials["dataset"].dropna().unique()
        return str(values[0]) if len(values) else ""

    @property
    def tasks(self) -> list[str]:
        """The datasets of the trials, in the study's order: several for a multi-task GLUE
        study (config `tasks`), else the one dataset."""
        planned = [f"glue-{t}" for t in self.config.get("tasks") or []]
        seen = [d for d in self.trials["dataset"].unique() if d]
        return [d for d in planned if d in seen] + sorted(d for d in seen if d not in planned) \
            or ([self.dataset] if self.dataset else [])

    @property
    def primary_metric(self) -> str:
        """What best_val_acc / test_acc hold: accuracy, or the task's primary GLUE metric."""
        values = self.trials["metric"][self.trials["metric"] != ""] if "metric" in self.trials else []
        return str(values.mode().iloc[0]) if len(values) else "accuracy"

    def subset(self, dataset: str) -> "Experiment":
        """The part of a multi-task experiment that belongs to one dataset (task)."""
        if ("subset", dataset) not in self.memo:
            self.memo[("subset", dataset)] = self._subset(dataset)
        return self.memo[("subset", dataset)]

    def _subset(self, dataset: str) -> "Experiment":
        trials = self.trials[self.trials["dataset"] == dataset].reset_index(drop=True)
        epochs = self.epochs[self.epochs["trial_id"].isin(trials["trial_id"])]
        teachers = self.teachers
        if "dataset" in teachers:
            teachers = teachers[teachers["dataset"] == dataset].reset_index(drop=True)
        info = {**self.info, "config": {**self.config, "dataset": dataset, "tasks": []}}
        return Experiment(self.path, info, trials, epochs, teachers, [])


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    if not path.is_dir():
        raise ExperimentError(f"{path}: no such experiment directory")
    info = _read_info(path / "study.json")
    missing = _load_plugins(info)
    trials = _read_trials(path / "summary.csv", missing)
    teachers = _read_teachers(path / "teachers.csv", missing)
    epochs = _read_epochs(path, trials, missing)
    missing[:0] = _study_notes(info, trials)  # the study-level state reads best first
    return Experiment(path, info, trials, epochs, teachers, missing)


def _load_plugins(info: dict[str, Any]) -> list[str]:
    """Load the study's method plugins, so that the report names, orders and draws their
    methods as they declare; one that cannot be loaded here leaves them known by name only."""
    from kd.methods import load_plugins

    notes = []
    for spec in (info.get("config") or {}).get("plugins") or []:
        try:
            load_plugins([spec], field="plugins")
        except Exception as error:  # whatever a plugin's code raises, the report still gets written
            notes.append(f"method plugin {spec} could not be loaded here ({error}): its methods are shown by name")
    return notes


def _read_info(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise ExperimentError(f"{file}: missing; an experiment directory holds study.json and summary.csv")
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExperimentError(f"{file}: not valid JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise ExperimentError(f"{file}: expected a JSON object, found {type(info).__name__}")
    if not isinstance(info.get("config", {}), dict):
        raise ExperimentError(f"{file}: 'config' must be a JSON object")
    return info


def _read_csv(file: Path, what: str) -> pd.DataFrame:
    try:
        return pd.read_csv(file, keep_default_na=True)
    except pd.errors.EmptyDataError as exc:
        raise ExperimentError(f"{file}: empty file, expected a CSV header ({what})") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ExperimentError(f"{file}: not a readable CSV ({what}): {exc}") from exc


def as_bool(values: pd.Series) -> pd.Series:
    """CSV booleans as Tune and pandas write them ("True", "true", 1, empty)."""
    return values.map(lambda v: BOOL_WORDS.get(str(v).strip().lower(), False) if pd.notna(v) else False)


def _read_trials(file: Path, missing: list[str]) -> pd.DataFrame:
    if not file.is_file():
        raise ExperimentError(f"{file}: missing; an experiment directory holds study.json and summary.csv")
    trials = _read_csv(file, "one row per trial")
    absent = [c for c in REQUIRED_TRIAL_COLUMNS if c not in trials.columns]
    if absent:
        raise ExperimentError(f"{file}: not a trial summary, columns {absent} are missing "
                              f"(found {list(trials.columns)[:8]})")
    for col in ("trial_id", "stage", "cell", "method", "student", "status"):
        trials[col] = trials[col].astype("string").fillna("").astype(str)
    for col in TEXT_TRIAL_COLUMNS:
        trials[col] = trials[col].astype("string").fillna("").astype(str) if col in trials else ""
    for col in NUMERIC_TRIAL_COLUMNS:
        trials[col] = pd.to_numeric(trials[col], errors="coerce") if col in trials else float("nan")
    trials["seed"] = trials["seed"].astype("Int64")
    # Audit re-runs are marked twice by the contract (stage and flag); either is enough.
    flag = as_bool(trials["audit"]) if "audit" in trials else False
    trials["audit"] = (trials["stage"] == "audit") | flag
    # A resumed study may append a trial again; its latest row is the truth.
    dupes = trials["trial_id"].duplicated(keep="last")
    if dupes.any():
        missing.append(f"summary.csv lists {int(dupes.sum())} trial(s) more than once "
                       f"(a resumed study?); the last row of each is used")
        trials = trials[~dupes]
    return trials.reset_index(drop=True)


def _read_teachers(file: Path, missing: list[str]) -> pd.DataFrame:
    if not file.is_file():
        missing.append("teachers.csv is missing: teacher accuracy comes from summary.csv, "
                       "if recorded there")
        return pd.DataFrame({c: pd.Series(dtype=object) for c in TEACHER_COLUMNS})
    teachers = _read_csv(file, "teacher and assistant")
    for col in TEACHER_COLUMNS:
        if col not in teachers:
            teachers[col] = float("nan")
    for col in ("params", "best_val_acc", "test_acc", "epochs", "seconds"):
        teachers[col] = pd.to_numeric(teachers[col], errors="coerce")
    for col in ("role", "arch", "dataset", "metric"):
        if col in teachers:
            teachers[col] = teachers[col].astype("string").fillna("").astype(str)
    if not (teachers["role"] == "teacher").any():
        missing.append("teachers.csv has no teacher row (the teacher may still be training)")
    return teachers


def _read_epoch_rows(folder: Path) -> list[dict[str, Any]] | None:
    """A trial's per-epoch rows: its epochs.jsonl (every epoch, written by the trial), or
    Tune's progress.csv in experiments from before the trials wrote their own; None when
    neither exists. Raises ValueError when the file cannot be parsed."""
    lines = folder / "epochs.jsonl"
    if lines.is_file():
        rows = []
        for line in lines.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # the last line of a trial killed mid-write
                continue
        return rows
    progress = folder / "progress.csv"
    if not progress.is_file():
        return None
    table = pd.read_csv(progress)
    columns = list(table.columns)  # DataFrame.to_dict("records") is ten times slower
    return [dict(zip(columns, values)) for values in table.to_numpy(dtype=object).tolist()]


def _read_epochs(root: Path, trials: pd.DataFrame, missing: list[str]) -> pd.DataFrame:
    # One frame from every trial's rows at once: a frame per trial, concatenated, cost
    # seconds per load in a study of a few hundred trials.
    records, absent, unreadable = [], [], []
    for trial in trials.itertuples(index=False):
        if not trial.trial_dir:
            absent.append(trial.trial_id)
            continue
        try:
            rows = _read_epoch_rows(root / trial.trial_dir)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError):
            # A worker killed mid-write leaves a truncated file; the trial row still counts.
            unreadable.append(trial.trial_id)
            continue
        if rows is None:
            absent.append(trial.trial_id)
            continue
        keys = {key: getattr(trial, key) for key in EPOCH_KEYS}
        # Tune writes its own trial_id; keep it, but the summary's key is the one we join on.
        records.extend({**{(f"tune_{k}" if k in EPOCH_KEYS else k): v for k, v in row.items()}, **keys}
                       for row in rows)
    if absent:
        missing.append(f"{len(absent)} trial(s) have no per-epoch file (epochs.jsonl; no learning curve): "
                       f"{_short_list(absent)}")
    if unreadable:
        missing.append(f"{len(unreadable)} per-epoch file(s) could not be parsed: {_short_list(unreadable)}")
    if not records:
        return pd.DataFrame(columns=[*EPOCH_KEYS, "epoch", "phase", "T", "val_acc"])
    epochs = pd.DataFrame(records)
    if "epoch" in epochs:
        # A trial restored from a checkpoint re-reports the epochs after it: the last row wins.
        numbered = epochs["epoch"].notna()
        again = epochs[numbered].duplicated(["trial_id", "epoch"], keep="last")
        epochs = epochs.drop(index=again[again].index).reset_index(drop=True)
    for col in epochs.columns:
        if col in ("stage_end", "done", "finished"):
            epochs[col] = as_bool(epochs[col])
        elif col not in (*EPOCH_KEYS, "phase_name") and not col.startswith("tune_"):
            converted = pd.to_numeric(epochs[col], errors="coerce")
            # Keep text columns (node_ip, date, hostname) as they are.
            if converted.notna().sum() >= epochs[col].notna().sum():
                epochs[col] = converted
    return epochs[[*EPOCH_KEYS, *[c for c in epochs.columns if c not in EPOCH_KEYS]]]


def _study_notes(info: dict[str, Any], trials: pd.DataFrame) -> list[str]:
    """What a reader must know before trusting the tables: unfinished parts of the study."""
    notes = []
    status = info.get("status") or "unknown"
    if status != "finished":
        notes.append(f"study status is '{status}' (not finished): every table below is partial")
    if trials.empty:
        notes.append("summary.csv has no trials yet")
        return notes
    config = info.get("config") or {}
    expected = [f"{s}-{m}" for s in config.get("students") or [] for m in config.get("methods") or []]
    not_started = [c for c in expected if c not in set(trials["cell"])]
    if not_started:
        notes.append(f"{len(not_started)} cell(s) have no trials at all: {_short_list(not_started)}")
    running = trials[trials["status"] == "running"]
    if len(running):
        notes.append(f"{len(running)} trial(s) still have status 'running': {_short_list(running['trial_id'])}")
    failed = trials[trials["status"] == "failed"]
    if len(failed) > 5:  # one line per failure stops being readable; name the commonest reason
        reason = failed["reason"].replace("", "no reason recorded").value_counts()
        notes.append(f"{len(failed)} trial(s) failed, most often: {reason.index[0]} ({reason.iloc[0]}x): "
                     f"{_short_list(failed['trial_id'])}")
    else:
        for trial in failed.itertuples(index=False):
            notes.append(f"trial {trial.trial_id} ({trial.cell}, {trial.stage}) failed: "
                         f"{trial.reason or 'no reason recorded'}")
    seeds = config.get("rerun_seeds")
    for cell in sorted(set(trials["cell"])):
        reruns = trials[(trials["cell"] == cell) & (trials["stage"] == "rerun") & (trials["status"] == "completed")]
        if reruns.empty:
            notes.append(f"cell {cell} has no completed re-runs: its headline number is the best search "
                         f"trial (one seed, source 'search')")
        elif isinstance(seeds, int) and len(reruns) < seeds:
            notes.append(f"cell {cell} has {len(reruns)} of {seeds} re-run seeds completed")
    return notes


def _short_list(items, limit: int = 6) -> str:
    items = [str(i) for i in items]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
