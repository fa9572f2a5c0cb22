"""The verdict every report opens with: each method against CE and against Hinton KD at each
capacity ratio, paired by seed, with Holm-corrected tests and the minimum detectable effect.

The unit of evidence is a seed: re-runs of two cells with the same seed share the data order
and the initialisation draw, so their difference removes the spread both have in common.
Every comparison of the report is one family for the Holm correction (the verdicts are read
together, so the chance of any false "better" or "worse" is what must stay at ALPHA).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis import tables
from analysis.figures import style
from analysis.load import Experiment

ALPHA = 0.05
POWER = 0.8
BASELINES = ("ce", "kd")
BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no detectable difference"
COLUMNS = ["student", "capacity_ratio", "method", "baseline", "n_pairs", "mean_diff", "sd_diff",
           "ci95_low", "ci95_high", "p", "p_holm", "mde", "verdict"]


def per_seed_scores(exp: Experiment) -> pd.DataFrame:
    """Test score of every completed re-run, one row per (method, student, seed)."""
    reruns = tables.completed(exp.trials, "rerun").dropna(subset=["test_acc", "seed"])
    return reruns.groupby(["method", "student", "seed"], as_index=False)["test_acc"].mean()


def paired_differences(scores: pd.DataFrame, method: str, baseline: str, student: str) -> pd.Series:
    """method − baseline for one student, one value per seed both have."""
    mine = scores[(scores["method"] == method) & (scores["student"] == student)]
    base = scores[(scores["method"] == baseline) & (scores["student"] == student)]
    joined = mine.merge(base, on="seed", suffixes=("", "_base"))
    return (joined["test_acc"] - joined["test_acc_base"]).reset_index(drop=True)


def holm(p_values: pd.Series) -> pd.Series:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count in the family)."""
    valid = p_values.dropna().sort_values()
    m = len(valid)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * valid.to_numpy()))
    return pd.Series(adjusted, index=valid.index).reindex(p_values.index)


def minimum_detectable_effect(sd: float, n: int, alpha: float) -> float:
    """The paired mean difference a two-sided t-test at level `alpha` detects with POWER."""
    if n < 2 or not sd > 0:
        return math.nan
    return (stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(POWER, n - 1)) * sd / math.sqrt(n)


def verdicts(exp: Experiment) -> pd.DataFrame:
    """One row per (student, method, baseline): the paired test and its verdict."""
    scores = per_seed_scores(exp)
    ratios = tables.capacity_ratios(exp)
    rows = []
    for student in scores["student"].unique():
        have = set(scores.loc[scores["student"] == student, "method"])
        for baseline in BASELINES:
            if baseline not in have:
                continue
            # against CE: every other method; against KD: the methods that are not baselines
            others = have - set(BASELINES[:BASELINES.index(baseline) + 1])
            for method in sorted(others, key=tables.method_key):
                diff = paired_differences(scores, method, baseline, student)
                n = len(diff)
                mean = diff.mean() if n else math.nan
                sd = diff.std() if n > 1 else math.nan
                if n > 1 and sd > 0:
                    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
                    p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
                else:
                    half, p = math.nan, math.nan
                rows.append({"student": student, "capacity_ratio": ratios.get(student, math.nan), "method": method,
                             "baseline": baseline, "n_pairs": n, "mean_diff": mean, "sd_diff": sd,
                             "ci95_low": mean - half, "ci95_high": mean + half, "p": p})
    table = pd.DataFrame(rows, columns=COLUMNS)
    if table.empty:
        return table
    table["p_holm"] = holm(table["p"])
    family = int(table["p"].notna().sum())
    # What the first Holm step needs: Bonferroni's level, the strictest any comparison faces.
    table["mde"] = [minimum_detectable_effect(sd, n, ALPHA / max(family, 1))
                    for sd, n in zip(table["sd_diff"], table["n_pairs"])]
    significant = table["p_holm"] < ALPHA
    table["verdict"] = np.where(significant & (table["mean_diff"] > 0), BETTER,
                                np.where(significant & (table["mean_diff"] < 0), WORSE, NO_DIFFERENCE))
    return tables.sort_rows(table, "capacity_ratio", "student", "baseline", "method")


def gap_trend(exp: Experiment, method: str = "annealing") -> dict[str, Any]:
    """Does `method` close more of the teacher-student gap at larger capacity ratios (the
    Annealing-KD paper's claim)? Its gain over CE, paired by seed, regressed on log2 of the
    capacity ratio (every pair one point): the slope in points per doubling of the ratio."""
    scores, ratios = per_seed_scores(exp), tables.capacity_ratios(exp)
    teacher = tables.teacher_accuracy(exp)
    points, closed = [], {}
    for student in scores["student"].unique():
        diff = paired_differences(scores, method, "ce", student)
        if len(diff) and pd.notna(ratios.get(student)):
            points += [(math.log2(ratios[student]), d) for d in diff]
            ce = scores[(scores["method"] == "ce") & (scores["student"] == student)]["test_acc"].mean()
            closed[student] = diff.mean() / (teacher - ce) if teacher - ce > 0 else math.nan
    result = {"method": method, "closed": closed, "pairs": len(points), "slope": math.nan,
              "ci95_low": math.nan, "ci95_high": math.nan, "p": math.nan}
    if len(closed) < 2 or len(points) < 3:
        return result
    x, y = np.array(points).T
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.975, len(points) - 2) * fit.stderr
    result.update(slope=fit.slope, ci95_low=fit.slope - half, ci95_high=fit.slope + half, p=fit.pvalue)
    return result


def gap_sentence(exp: Experiment, method: str = "annealing") -> str:
    """One sentence: the answer to the paper's claim, with its evidence."""
    name = style(method)[2]
    trend = gap_trend(exp, method)
    if math.isnan(trend["slope"]):
        return (f"Whether {name} closes more of the gap at larger capacity ratios cannot be judged yet: "
                f"it needs re-runs paired by seed with CE at two capacity ratios or more.")
    ratios = tables.capacity_ratios(exp)
    closed = ", ".join(f"{100 * c:+.0f}% at {ratios[s]:.1f}×" for s, c in
                       sorted(trend["closed"].items(), key=lambda kv: ratios[kv[0]]))
    slope = (f"its gain over CE changes by {trend['slope']:+.2f} points per doubling of the ratio "
             f"(95% interval [{trend['ci95_low']:+.2f}, {trend['ci95_high']:+.2f}], {trend['pairs']} seed pairs)")
    if trend["ci95_low"] > 0:
        answer = f"Yes: {name} closes more of the gap at larger capacity ratios"
    elif trend["ci95_high"] < 0:
        answer = f"No: {name} closes less of the gap at larger capacity ratios"
    else:
        answer = f"Not detectably: {name} does not close more of the gap at larger capacity ratios"
    return f"{answer}; {slope}; share of the CE-teacher gap it closes: {closed}."


def welch_half_width(sd_a, n_a, sd_b, n_b):
    """Half-width of the 95% Welch interval of the difference of two independent means (works
    on numbers and on pandas columns alike)."""
    var_a, var_b = sd_a ** 2 / n_a, sd_b ** 2 / n_b
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (n_a - 1) + var_b ** 2 / (n_b - 1))  # Welch-Satterthwaite
    return stats.t.ppf(0.975, df) * np.sqrt(var_a + var_b)


def replication(first: Experiment, second: Experiment) -> pd.DataFrame:
    """Two runs of the same study (other seeds): each cell's difference of headline means and
    the 95% Welch interval of that difference. A cell whose difference lies outside it
    disagrees more than its seeds' spread explains (with independent runs, 1 in 20 by chance)."""
    keep = ["method", "student", "capacity_ratio", "test_mean", "test_std", "n_seeds"]
    joined = tables.gap_table(first)[keep].merge(tables.gap_table(second)[keep], on=["method", "student"],
                                                 suffixes=("_a", "_b"))
    half = welch_half_width(joined["test_std_a"], joined["n_seeds_a"], joined["test_std_b"], joined["n_seeds_b"])
    joined["difference"] = joined["test_mean_a"] - joined["test_mean_b"]
    joined["ci95_half_width"] = half
    joined["within"] = joined["difference"].abs() <= half
    joined["capacity_ratio"] = joined.pop("capacity_ratio_a")
    return tables.sort_rows(joined.drop(columns="capacity_ratio_b"), "capacity_ratio", "student", "method")


def verdict_agreement(first: Experiment, second: Experiment) -> pd.DataFrame:
    """The two runs' verdicts side by side, comparison by comparison, and how they disagree.

    `effect_within`: the two runs' paired effects differ by no more than the 95% Welch interval
    of their difference (as `replication` asks of the cells). `contradict`: better in one run,
    worse in the other. `beyond_mde`: the verdicts differ although the run that found a
    difference saw an effect of at least its minimum detectable effect, which the other run
    should then have detected 4 times in 5: a flip its MDE does not explain. A verdict flips
    between two honest runs where the effect is near the MDE (detected about half the time)."""
    keys = ["student", "method", "baseline"]
    a, b = verdicts(first), verdicts(second)
    cols = [*keys, "mean_diff", "sd_diff", "n_pairs", "mde", "verdict"]
    joined = a[[*cols, "capacity_ratio"]].merge(b[cols], on=keys, how="outer", suffixes=("_a", "_b"))
    joined["agree"] = joined["verdict_a"] == joined["verdict_b"]
    half = welch_half_width(joined["sd_diff_a"], joined["n_pairs_a"], joined["sd_diff_b"], joined["n_pairs_b"])
    joined["effect_within"] = (joined["mean_diff_a"] - joined["mean_diff_b"]).abs() <= half
    found_a = joined["verdict_a"] != NO_DIFFERENCE
    found_b = joined["verdict_b"] != NO_DIFFERENCE
    joined["contradict"] = found_a & found_b & ~joined["agree"]
    joined["beyond_mde"] = ~joined["agree"] & (
        (found_a & ~found_b & (joined["mean_diff_a"].abs() >= joined["mde_a"]))
        | (found_b & ~found_a & (joined["mean_diff_b"].abs() >= joined["mde_b"])))
    return tables.sort_rows(joined, "capacity_ratio", "student", "baseline", "method")
