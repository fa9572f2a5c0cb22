"""Per-task metrics: what a study's numbers measure, every metric by its GLUE name, and the
overview of a GLUE study over several tasks (one column per task, and their average).

best_val_acc / test_acc hold each task's primary metric (x100): accuracy for images and
most GLUE tasks, MCC for CoLA, F1 for MRPC, Pearson for STS-B. The other metrics of the
selected checkpoint are the summary's test_<metric> columns (analysis/load.py).
"""
from __future__ import annotations

import math

import pandas as pd

from analysis.load import METRIC_COLUMNS, Experiment
from analysis.tables import gap_table, headline_scores, sort_rows, teacher_accuracy

METRIC_LABELS = {"accuracy": "Accuracy", "f1": "F1", "mcc": "MCC", "pearson": "Pearson",
                 "spearman": "Spearman", "accuracy_mm": "Accuracy (mismatched)"}
TASK_LABELS = {"glue-cola": "CoLA", "glue-sst2": "SST-2", "glue-mrpc": "MRPC", "glue-stsb": "STS-B",
               "glue-qqp": "QQP", "glue-mnli": "MNLI", "glue-qnli": "QNLI", "glue-rte": "RTE"}
# How the published tables spell the models (Hugging Face names lose their hf: prefix and
# organisation; Google's BERT miniatures go by their paper names).
MODEL_ALIASES = {
    "bert-large-uncased": "bert-large", "bert-large-cased": "bert-large", "bert-base-uncased": "bert-base",
    "bert_uncased_L-2_H-128_A-2": "bert-tiny", "bert_uncased_L-4_H-256_A-4": "bert-mini",
    "bert_uncased_L-4_H-512_A-8": "bert-small", "bert_uncased_L-8_H-512_A-8": "bert-medium",
    "bert_uncased_L-12_H-768_A-12": "bert-base",
}


# How the reports name a score, by where the name goes: (for accuracy, for any other metric
# by its label). Accuracy keeps the wording the image reports always had (lower case, in
# percent); every other metric goes by its GLUE name (MCC, F1, ...), x100.
SCORE_FORMS = {
    "name": ("accuracy", "{label}"),                    # prose: "test accuracy", "test MCC"
    "heading": ("acc %", "{label} ×100"),               # table columns: "test acc % (mean ± std)"
    "teacher": ("teacher %", "teacher {label} ×100"),   # the teacher column of the gap table
    "axis": ("accuracy (%)", "{label} (×100)"),         # figure axes
}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric or "Accuracy")


def score_label(metric: str, form: str = "name") -> str:
    """The name of a score in one of the SCORE_FORMS: the only place that asks whether a
    metric is accuracy to decide how it is labelled."""
    accuracy, other = SCORE_FORMS[form]
    return accuracy if metric == "accuracy" else other.format(label=metric_label(metric))


def task_label(dataset: str) -> str:
    return TASK_LABELS.get(dataset, dataset)


def is_text(dataset: str) -> bool:
    return dataset.startswith("glue") or dataset == "template-text"


def reference_model(name: str) -> str:
    base = str(name).removeprefix("hf:").rstrip("/").split("/")[-1]
    return MODEL_ALIASES.get(base, base)


def reference_dataset(dataset: str) -> str:
    """The published table's name of a dataset: GLUE numbers are dev-set numbers."""
    if dataset == "glue":
        return "glue-dev"
    return f"{dataset}-dev" if dataset.startswith("glue-") else dataset


def task_metrics(exp: Experiment) -> pd.DataFrame:
    """Every metric of every cell by name: mean and sample std over the re-runs (the best
    search trial, marked `search`, when a cell has none), by the same rule as the gap
    table's primary metric (tables.headline_scores)."""
    trials, frames = exp.trials, []
    columns = ["method", "student", "capacity_ratio", "metric", "label", "mean", "std", "n", "source"]
    for column in (c for c in METRIC_COLUMNS if c in trials and trials[c].notna().any()):
        scores = headline_scores(exp, column)
        metric = column.removeprefix("test_")
        frames.append(pd.DataFrame({
            "method": scores["method"], "student": scores["student"], "capacity_ratio": scores["capacity_ratio"],
            "metric": metric, "label": metric_label(metric), "mean": scores["test_mean"],
            "std": scores["test_std"], "n": scores["n_seeds"], "source": scores["source"]}, columns=columns))
    # One frame per metric, each in cell order: the stable sort keeps a cell's metrics in
    # METRIC_COLUMNS order.
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return sort_rows(table, "capacity_ratio", "student", "method")


def teacher_metric(exp: Experiment, metric: str) -> float:
    teachers = exp.teachers[exp.teachers["role"] == "teacher"]
    column = f"test_{metric}"
    if column in teachers and teachers[column].notna().any():
        return float(teachers[column].dropna().iloc[-1])
    return teacher_accuracy(exp) if metric == exp.primary_metric else math.nan


def glue_overview(exp: Experiment) -> pd.DataFrame:
    """Each task's primary metric per (method, student) and for the teacher, and their
    average over the tasks (only where every task of the study has a number), as the
    published GLUE tables show them."""
    rows = []
    for dataset in exp.tasks:
        sub = exp.subset(dataset)
        metric = sub.primary_metric
        for r in gap_table(sub).itertuples(index=False):
            rows.append({"dataset": dataset, "task": task_label(dataset), "metric": metric_label(metric),
                         "method": r.method, "student": r.student, "mean": r.test_mean, "std": r.test_std,
                         "n": r.n_seeds, "source": r.source})
        rows.append({"dataset": dataset, "task": task_label(dataset), "metric": metric_label(metric),
                     "method": "teacher", "student": str(exp.config.get("teacher") or ""),
                     "mean": teacher_metric(sub, metric), "std": math.nan, "n": 1, "source": "trained once"})
    table = pd.DataFrame(rows, columns=["dataset", "task", "metric", "method", "student", "mean", "std", "n",
                                        "source"])
    averages = []
    for (method, student), group in table.groupby(["method", "student"], sort=False):
        complete = group["mean"].notna().sum() == len(exp.tasks)
        averages.append({"dataset": "glue", "task": "Average", "metric": "mean of the primary metrics",
                         "method": method, "student": student,
                         "mean": group["mean"].mean() if complete else math.nan, "std": math.nan,
                         "n": int(group["n"].min()) if complete else 0,
                         "source": ", ".join(sorted(set(group["source"])))})
    return pd.concat([table, pd.DataFrame(averages, columns=table.columns)], ignore_index=True)
