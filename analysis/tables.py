"""The report's tables: pure pandas functions of a loaded Experiment, one DataFrame each.

Headline numbers come from the seed re-runs of each cell's best search configuration
(mean and sample std, ddof 1, over seeds). Search trials are only a fallback, and every
table that uses one says so in its `source` column: a single search trial was selected
on validation among many, so its test accuracy is one optimistic draw, not a mean.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from analysis.load import Experiment
from kd.methods import METHODS, Method, order_key

SELECTION_RULE = "checkpoint with best validation accuracy; test accuracy reported for that checkpoint"
PAPER_SELECTION_RULE = ("checkpoint with best TEST accuracy (paper_protocol, as the official code); "
                        "test accuracy of that checkpoint, optimistic by construction")


def method_of(method: str) -> type[Method] | None:
    """The method as it describes itself (kd/methods); None for one this process does not know
    (a plugin the report could not load)."""
    return METHODS.get(method) if method in METHODS else None


method_key = order_key  # methods in the order of the papers' tables, unknown ones after, by name


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
    """The cell's selected search trial: the one whose configuration its re-runs use (with
    `confirm_top`, chosen on the mean validation score of several seeds, study/search.py);
    before any re-run, the completed search trial with the best validation score (the first
    on ties); None before any search trial has completed."""
    search = completed(group, "search").dropna(subset=["best_val_acc"])
    if "config" in group:
        chosen = search[search["config"].isin(set(group.loc[group["stage"] == "rerun", "config"].dropna()))]
        if len(chosen):
            return chosen.iloc[0]
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
    if ("cells", column) not in exp.memo:
        exp.memo[("cells", column)] = _compute_cells(exp, column)
    return exp.memo[("cells", column)].copy()  # callers may change their copy


def _compute_cells(exp: Experiment, column: str) -> pd.DataFrame:
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
