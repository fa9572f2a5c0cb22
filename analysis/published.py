"""Our numbers next to the published ones (analysis/reference/published_results.csv): every
published row with the same dataset, teacher, student and method, with what is known of how
each side was obtained."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import tasks
from analysis.load import Experiment
from analysis.tables import PAPER_SELECTION_RULE, first_value, gap_table, sort_rows

REFERENCE_CSV = Path(__file__).parent / "reference" / "published_results.csv"
# What is known about how each published figure was obtained (SPEC §2.3, §5), keyed by how
# the source text of a reference row starts (its primary source).
PUBLISHED_PROTOCOLS = (
    ("RepDistiller", "published: last-epoch accuracy after 240 epochs"),
    ("TAKD repo issue", "published: best epoch chosen on the test set (TAKD code), one seed"),
    ("Continuation-KD", "published: selection rule and seed count not stated per row "
                        "(the official Annealing-KD and TAKD code pick the best test epoch)"),
)


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
