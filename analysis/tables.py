"""The report's tables: pure pandas functions of a loaded Experiment, one DataFrame each.

Headline numbers come from the seed re-runs of each cell's best search configuration
(mean and sample std, ddof 1, over seeds). Search trials are only a fallback, and every
table that uses one says so in its `source` column: a single search trial was selected
on validation among many, so its test accuracy is one optimistic draw, not a mean.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis import tasks
from analysis.load import Experiment

REFERENCE_CSV = Path(__file__).parent / "reference" / "published_results.csv"
METHOD_ORDER = ("ce", "kd", "takd", "annealing", "continuation")
SELECTION_RULE = "checkpoint with best validation accuracy; test accuracy reported for that checkpoint"
PAPER_SELECTION_RULE = ("checkpoint with best TEST accuracy (paper_protocol, as the official code); "
                        "test accuracy of that checkpoint, optimistic by construction")
# What is known about how each published figure was obtained (SPEC §2.3, §5), keyed by how
# the source text of a reference row starts (its primary source).
PUBLISHED_PROTOCOLS = (
    ("RepDistiller", "published: last-epoch accuracy after 240 epochs"),
    ("TAKD repo issue", "published: best epoch chosen on the test set (TAKD code), one seed"),
    ("Continuation-KD", "published: selection rule and seed count not stated per row "
                        "(the official Annealing-KD and TAKD code pick the best test epoch)"),
)


def method_key(method: str) -> tuple[int, str]:
    """Sort key: methods in the order of the paper's tables, unknown ones after, by name."""
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def sort_rows(df: pd.DataFrame, *by: str) -> pd.DataFrame:
    """Stable sort on the given columns, methods in paper order rather than alphabetically."""
    if df.empty:
        return df.reset_index(drop=True)
    keys = {c: (df[c].map(method_key) if c == "method" else df[c]) for c in by}
    order = pd.DataFrame(keys).sort_values(list(by), kind="stable").index
    return df.loc[order].reset_index(drop=True)


def completed(trials: pd.DataFrame, stage: str) -> pd.DataFrame:
    return trials[(trials["stage"] == stage) & (trials["status"] == "completed")]


def best_search_trial(group: pd.DataFrame) -> pd.Series | None:
    """The selection rule: a cell's completed search trial with the best validation score
    (the first on ties); None before any search trial has completed."""
    search = completed(group, "search").dropna(subset=["best_val_acc"])
    return search.loc[search["best_val_acc"].idxmax()] if len(search) else None


def teacher_accuracy(exp: Experiment) -> float:
    """The teacher's test accuracy: teachers.csv first, else what summary.csv carries."""
    rows = exp.teachers[exp.teachers["role"] == "teacher"]["test_acc"].dropna()
    if len(rows):
        return float(rows.iloc[-1])
    values = exp.trials["teacher_test_acc"].dropna()
    return float(values.median()) if len(values) else math.nan


def capacity_ratios(exp: Experiment) -> pd.Series:
    """Teacher/student parameter ratio per student; CE rows may leave it empty, others fill it."""
    trials = exp.trials
    ratio = trials.groupby("student")["capacity_ratio"].max()
    teacher_params = trials["teacher_params"].dropna()
    if len(teacher_params):
        derived = teacher_params.iloc[0] / trials.groupby("student")["student_params"].max()
        ratio = ratio.fillna(derived)
    return ratio


def _cells(exp: Experiment, column: str = "test_acc") -> pd.DataFrame:
    """Per cell: best completed search trial and the re-run statistics of its configuration,
    for one test column (test_acc, the primary metric, or a test_<metric> column)."""
    trials, ratios = exp.trials, capacity_ratios(exp)
    rows = []
    for cell, group in trials.groupby("cell", sort=False):
        best = best_search_trial(group)
        reruns = completed(group, "rerun")[column].dropna()
        rows.append({
            "cell": cell, "method": group["method"].iloc[0], "student": group["student"].iloc[0],
            "capacity_ratio": ratios.get(group["student"].iloc[0], math.nan),
            "best_trial_id": best["trial_id"] if best is not None else "",
            "best_config": best["config"] if best is not None else "",
            "best_val_acc": best["best_val_acc"] if best is not None else math.nan,
            "best_search_test": best[column] if best is not None else math.nan,
            "test_mean": reruns.mean() if len(reruns) else math.nan,
            "test_std": reruns.std() if len(reruns) > 1 else math.nan,
            "n_seeds": len(reruns),
        })
    columns = ["cell", "method", "student", "capacity_ratio", "best_trial_id", "best_config",
               "best_val_acc", "best_search_test", "test_mean", "test_std", "n_seeds"]
    return sort_rows(pd.DataFrame(rows, columns=columns), "capacity_ratio", "student", "method")


def best_configs(exp: Experiment) -> pd.DataFrame:
    return _cells(exp).drop(columns=["best_search_test"])


def headline_scores(exp: Experiment, column: str = "test_acc") -> pd.DataFrame:
    """Each cell's headline number of one test column: mean and sample std over the re-runs,
    or, while a cell has none, its best search trial's (source `search`: one trial chosen on
    validation among many, optimistic)."""
    cells = _cells(exp, column)
    rerun = cells["n_seeds"] > 0
    return pd.DataFrame({
        "method": cells["method"], "student": cells["student"], "capacity_ratio": cells["capacity_ratio"],
        "test_mean": cells["test_mean"].where(rerun, cells["best_search_test"]),
        "test_std": cells["test_std"].where(rerun, math.nan),
        "n_seeds": cells["n_seeds"].where(rerun, cells["best_search_test"].notna().astype(int)),
        "source": np.where(rerun, "rerun", np.where(cells["best_search_test"].notna(), "search", "none")),
    })


def gap_table(exp: Experiment) -> pd.DataFrame:
    table = headline_scores(exp)
    table["teacher_test_acc"] = teacher_accuracy(exp)
    table["gap"] = table["teacher_test_acc"] - table["test_mean"]
    return table


def gain_over_ce(exp: Experiment) -> pd.DataFrame:
    """Gain over CE paired by seed: the same seed shares data order and initialisation, so the
    paired difference removes the seed-to-seed spread both methods have in common."""
    reruns = completed(exp.trials, "rerun").dropna(subset=["test_acc", "seed"])
    per_seed = reruns.groupby(["method", "student", "seed"], as_index=False)["test_acc"].mean()
    ce = per_seed[per_seed["method"] == "ce"].drop(columns="method").rename(columns={"test_acc": "ce_acc"})
    ratios, rows = capacity_ratios(exp), []
    cells = exp.trials[exp.trials["method"] != "ce"][["method", "student"]].drop_duplicates()
    for method, student in cells.itertuples(index=False):
        mine = per_seed[(per_seed["method"] == method) & (per_seed["student"] == student)]
        diff = (mine.merge(ce, on=["student", "seed"])
                .pipe(lambda d: d["test_acc"] - d["ce_acc"]))
        n = len(diff)
        mean = diff.mean() if n else math.nan
        std = diff.std() if n > 1 else math.nan
        half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
        rows.append({"method": method, "student": student,
                     "capacity_ratio": ratios.get(student, math.nan), "gain_mean": mean,
                     "gain_std": std, "n_pairs": n, "ci95_low": mean - half, "ci95_high": mean + half})
    columns = ["method", "student", "capacity_ratio", "gain_mean", "gain_std", "n_pairs", "ci95_low", "ci95_high"]
    return sort_rows(pd.DataFrame(rows, columns=columns), "capacity_ratio", "student", "method")


def ranking(exp: Experiment) -> pd.DataFrame:
    """Rank of each method at each capacity level (1 = best mean test accuracy; ties share)."""
    table = gap_table(exp)[["capacity_ratio", "student", "method", "test_mean", "source"]].copy()
    table["rank"] = table.groupby("student")["test_mean"].rank(ascending=False, method="min").astype("Int64")
    return sort_rows(table, "capacity_ratio", "student", "rank")


def load_reference(path: str | Path = REFERENCE_CSV) -> pd.DataFrame:
    reference = pd.read_csv(path, keep_default_na=False)
    reference["value"] = pd.to_numeric(reference["value"], errors="coerce")
    return reference


def paper_comparison(exp: Experiment, reference: pd.DataFrame | str | Path | None = None,
                     overview: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our numbers next to every published one with the same dataset, teacher, student and method.

    CE trains without a teacher, so it matches on dataset and student alone (published
    "vanilla" rows list the student as its own teacher). Teachers and assistants match rows
    of method "teacher" and "kd_teacher_assistant" (the study trains its assistant by KD).
    GLUE: our test split is GLUE's dev set, matched against the `glue-<task>-dev` rows in
    the published metric (accuracy, F1, ...); a study over several tasks also matches the
    `glue-dev` average ("score") with the mean of its tasks' primary metrics. Model names
    match as the papers spell them (analysis/tasks.py: hf:distilroberta-base ->
    distilroberta-base). `overview` is tasks.glue_overview(exp), when the caller has it already.
    """
    if not isinstance(reference, pd.DataFrame):
        reference = load_reference(reference or REFERENCE_CSV)
    if len(exp.tasks) > 1:
        frames = [paper_comparison(exp.subset(task), reference) for task in exp.tasks]
        frames.append(_glue_average_comparison(exp, reference, overview))
        return sort_rows(pd.concat([f for f in frames if len(f)], ignore_index=True)
                         if any(len(f) for f in frames) else frames[0], "dataset", "student", "method")
    teacher = str(exp.config.get("teacher") or first_value(exp.trials["teacher"]))
    ours = gap_table(exp)[["method", "student", "test_mean", "test_std", "n_seeds", "source"]]
    ours = ours.assign(teacher=teacher)
    roles = {"teacher": "teacher", "assistant": "kd_teacher_assistant"}
    trained = exp.teachers[exp.teachers["role"].isin(list(roles))]
    ours = pd.concat([ours, pd.DataFrame({
        "method": trained["role"].map(roles), "student": trained["arch"], "teacher": teacher,
        "test_mean": trained["test_acc"], "test_std": math.nan, "n_seeds": 1,
        "source": "trained once"})], ignore_index=True)
    by_metric = tasks.task_metrics(exp).set_index(["method", "student", "metric"]) if tasks.is_text(exp.dataset) \
        else None
    ref = reference[reference["dataset"] == tasks.reference_dataset(exp.dataset)]
    rows = []
    for row in ours.itertuples(index=False):
        hits = _hits(ref, row.method, row.student, row.teacher)
        for hit in hits.itertuples(index=False):
            mean, std = row.test_mean, row.test_std
            if by_metric is not None and hit.metric != exp.primary_metric and hit.metric in tasks.METRIC_LABELS:
                if row.method in roles.values():
                    mean = tasks.teacher_metric(exp, hit.metric)
                else:
                    found = by_metric.loc[(row.method, row.student, hit.metric)] \
                        if (row.method, row.student, hit.metric) in by_metric.index else None
                    mean, std = (found["mean"], found["std"]) if found is not None else (math.nan, math.nan)
            rows.append(_comparison_row(exp, row, hit, mean, std))
    return sort_rows(pd.DataFrame(rows, columns=COMPARISON_COLUMNS), "student", "method")


def _hits(ref: pd.DataFrame, method: str, student: str, teacher: str) -> pd.DataFrame:
    """Published rows of a method for our (student, teacher): CE matches the student alone (no
    teacher), a teacher row the teacher alone (the GLUE tables list it in the student's row)."""
    mine = ref[ref["method"] == method]
    if method == "teacher":
        return mine[mine["teacher"] == tasks.reference_model(teacher)]
    mine = mine[mine["student"] == tasks.reference_model(student)]
    return mine if method == "ce" else mine[mine["teacher"] == tasks.reference_model(teacher)]


COMPARISON_COLUMNS = ["dataset", "teacher", "student", "method", "ours", "ours_std", "ours_n", "ours_source",
                      "published", "difference", "published_metric", "published_source", "protocol_notes"]


def _comparison_row(exp: Experiment, row, hit, mean: float, std: float) -> dict[str, Any]:
    return {"dataset": exp.dataset, "teacher": row.teacher, "student": row.student, "method": row.method,
            "ours": mean, "ours_std": std, "ours_n": row.n_seeds, "ours_source": row.source,
            "published": hit.value, "difference": mean - hit.value,
            "published_metric": f"{hit.metric} ({hit.split})", "published_source": hit.source,
            "protocol_notes": "; ".join(_protocol_notes(exp, row, hit))}


def _glue_average_comparison(exp: Experiment, reference: pd.DataFrame,
                             overview: pd.DataFrame | None = None) -> pd.DataFrame:
    """The `glue-dev` average rows against the mean of our tasks' primary metrics."""
    overview = tasks.glue_overview(exp) if overview is None else overview
    average = overview[overview["task"] == "Average"]
    teacher = str(exp.config.get("teacher") or first_value(exp.trials["teacher"]))
    ref = reference[reference["dataset"] == tasks.reference_dataset("glue")]
    rows = []
    for r in average.itertuples(index=False):
        row = pd.Series({"method": r.method, "student": teacher if r.method == "teacher" else r.student,
                         "teacher": teacher, "n_seeds": r.n, "source": r.source})
        for hit in _hits(ref, r.method, row.student, teacher).itertuples(index=False):
            found = _comparison_row(exp, row, hit, r.mean, math.nan)
            found["dataset"] = "glue (average of " + ", ".join(tasks.task_label(t) for t in exp.tasks) + ")"
            rows.append(found)
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _protocol_notes(exp: Experiment, ours, published) -> list[str]:
    notes = [f"ours: {PAPER_SELECTION_RULE if exp.config.get('paper_protocol') else 'selected on validation'}"]
    notes += [note for key, note in PUBLISHED_PROTOCOLS if published.source.startswith(key)]
    if ours.method in ("teacher", "kd_teacher_assistant"):
        epochs = exp.teachers.loc[exp.teachers["arch"] == ours.student, "epochs"].dropna()
        if len(epochs) and epochs.iloc[0] > 0:
            notes.append(f"ours: trained once, {int(epochs.iloc[0])} epochs")
        else:
            notes.append("ours: a given fine-tuned teacher, not trained here" if len(epochs) else "ours: trained once")
    else:
        epochs = exp.config.get("epochs")
        notes.append(f"ours: {epochs} epochs per run" if epochs else "ours: epoch budget not recorded")
        notes.append("ours: ONE search trial, no re-runs" if ours.source == "search"
                     else f"ours: mean of {ours.n_seeds} seed(s)")
        if ours.method == "takd":
            notes.append(f"ours: assistant {exp.config.get('assistant') or first_value(exp.trials['assistant'])}")
    if tasks.is_text(exp.dataset):
        notes.append("ours: GLUE dev set as the test split, validation held out of train")
        if published.metric == "score":
            notes.append("published: GLUE dev average, its composition not stated; ours: mean of the tasks' "
                         "primary metrics (MCC, accuracy, F1, Pearson, ...)")
    elif published.metric != "accuracy" or published.split != "test":
        notes.append(f"metric differs: published {published.metric} on {published.split}, ours test accuracy")
    return notes


def pruning_audit(exp: Experiment) -> pd.DataFrame:
    """Search effort per cell and what pruning saved.

    Only pruned trials save epochs: a failed or still-running trial stopped (or has not
    finished) for another reason, so counting its unused budget would flatter the pruner.
    """
    trials, rows = exp.trials, []
    default_budget = exp.config.get("epochs", math.nan)
    for cell, group in trials.groupby("cell", sort=False):
        search = group[group["stage"] == "search"]
        budget = search["epochs_budget"].fillna(default_budget)
        pruned = search["status"] == "pruned"
        saved = float((budget[pruned] - search.loc[pruned, "epochs_run"]).sum())
        run = float(search["epochs_run"].sum())
        best = completed(search, "search")["best_val_acc"].max()
        audits = group[group["audit"] & (group["status"] == "completed")]["best_val_acc"].dropna()
        rows.append({
            "cell": cell, "method": group["method"].iloc[0], "student": group["student"].iloc[0],
            "trials": len(search), **{s: int((search["status"] == s).sum())
                                      for s in ("completed", "pruned", "failed", "running")},
            "epochs_run": run, "epochs_without_pruning": run + saved, "epochs_saved": saved,
            "saved_ratio": saved / (run + saved) if run + saved else math.nan,
            "best_search_val_acc": best, "audited": len(audits),
            "audited_beat_best": int((audits > best).sum()) if len(audits) else pd.NA,
        })
    columns = ["cell", "method", "student", "trials", "completed", "pruned", "failed", "running",
               "epochs_run", "epochs_without_pruning", "epochs_saved", "saved_ratio",
               "best_search_val_acc", "audited", "audited_beat_best"]
    table = pd.DataFrame(rows, columns=columns)
    table["audited_beat_best"] = table["audited_beat_best"].astype("Int64")
    return sort_rows(table, "student", "method")


def first_value(values: pd.Series) -> str:
    values = values[values != ""].dropna()
    return str(values.iloc[0]) if len(values) else ""
