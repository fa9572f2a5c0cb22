"""The report's verdict (analysis/verdict.py) on hand-made re-run scores, with hand-checked values."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from analysis import verdict
from analysis.load import Experiment

TEACHER_PARAMS = 8_000


def experiment(scores: dict[tuple[str, str], list[float]], params: dict[str, int],
               teacher_acc: float = 90.0) -> Experiment:
    """Completed re-runs with the given test scores (seeds 1, 2, ... in list order)."""
    rows = []
    for (student, method), values in scores.items():
        for seed, value in enumerate(values, start=1):
            rows.append({"stage": "rerun", "status": "completed", "cell": f"{student}-{method}",
                         "method": method, "student": student, "seed": seed, "test_acc": value,
                         "best_val_acc": value, "teacher_params": TEACHER_PARAMS,
                         "student_params": params[student],
                         "capacity_ratio": TEACHER_PARAMS / params[student], "teacher_test_acc": teacher_acc})
    teachers = pd.DataFrame([{"role": "teacher", "test_acc": teacher_acc}])
    return Experiment(Path("."), {}, pd.DataFrame(rows), pd.DataFrame(), teachers)


def test_holm_adjusts_step_down_and_keeps_nan_out_of_the_family():
    p = pd.Series([0.01, 0.04, math.nan, 0.03])
    # sorted 0.01, 0.03, 0.04 with m = 3: 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(1 x 0.04, 0.06) = 0.06
    assert verdict.holm(p).tolist()[:2] == pytest.approx([0.03, 0.06])
    assert math.isnan(verdict.holm(p)[2]) and verdict.holm(p)[3] == pytest.approx(0.06)
    # 2 x 0.02 = 0.04; the larger p keeps its own 0.5 (the running maximum only raises)
    assert verdict.holm(pd.Series([0.5, 0.02])).tolist() == pytest.approx([0.5, 0.04])


def test_minimum_detectable_effect_by_hand():
    # (t_0.975,4 + t_0.8,4) x sd / sqrt(n) = (2.7764 + 0.9410) x 2 / sqrt(5) = 3.3250
    assert verdict.minimum_detectable_effect(2.0, 5, 0.05) == pytest.approx(3.3250, abs=1e-3)
    # a stricter level needs a larger effect
    assert verdict.minimum_detectable_effect(2.0, 5, 0.01) > 3.3250
    assert math.isnan(verdict.minimum_detectable_effect(2.0, 1, 0.05))


def test_paired_differences_use_the_seeds_both_cells_have():
    exp = experiment({("s", "ce"): [80, 81, 82], ("s", "annealing"): [81, 83]}, {"s": 1000})
    scores = verdict.per_seed_scores(exp)
    assert verdict.paired_differences(scores, "annealing", "ce", "s").tolist() == [1.0, 2.0]


def test_verdicts_pair_by_seed_and_correct_for_every_comparison():
    # AKD beats CE by 2 +- 0.1 on every seed (the seeds' spread of 5 points cancels in the pairs);
    # KD differs from CE by noise around zero.
    ce = [70.0, 75.0, 80.0, 72.0, 78.0]
    akd = [c + d for c, d in zip(ce, [2.0, 2.1, 1.9, 2.0, 2.05])]
    kd = [c + d for c, d in zip(ce, [0.5, -0.6, 0.3, -0.2, 0.1])]
    exp = experiment({("s", "ce"): ce, ("s", "kd"): kd, ("s", "annealing"): akd}, {"s": 1000})
    table = verdict.verdicts(exp).set_index(["method", "baseline"])
    assert set(table.index) == {("kd", "ce"), ("annealing", "ce"), ("annealing", "kd")}
    row = table.loc[("annealing", "ce")]
    assert row["n_pairs"] == 5 and row["mean_diff"] == pytest.approx(2.01)
    assert row["verdict"] == verdict.BETTER and row["p_holm"] >= row["p"]
    assert table.loc[("kd", "ce"), "verdict"] == verdict.NO_DIFFERENCE
    # the MDE is at Bonferroni's level over the 3 comparisons
    sd = table.loc[("kd", "ce"), "sd_diff"]
    assert table.loc[("kd", "ce"), "mde"] == pytest.approx(verdict.minimum_detectable_effect(sd, 5, 0.05 / 3))
    # unpaired, the 5-point spread of the seeds would hide a 2-point gain: the pairing matters
    worse = experiment({("s", "ce"): ce, ("s", "annealing"): [a - 3 for a in akd]}, {"s": 1000})
    assert verdict.verdicts(worse).iloc[0]["verdict"] == verdict.WORSE


def test_gap_trend_slope_per_doubling_of_the_ratio():
    # gain over CE: 1 point at ratio 2, 3 points at ratio 8 (two doublings): slope 1 per doubling
    ce = [80.0, 81.0, 82.0]
    exp = experiment({("big", "ce"): ce, ("big", "annealing"): [c + 1 + e for c, e in zip(ce, [0.1, -0.1, 0])],
                      ("small", "ce"): ce, ("small", "annealing"): [c + 3 + e for c, e in zip(ce, [0.1, -0.1, 0])]},
                     {"big": TEACHER_PARAMS // 2, "small": TEACHER_PARAMS // 8})
    trend = verdict.gap_trend(exp)
    assert trend["pairs"] == 6 and trend["slope"] == pytest.approx(1.0)
    # share of the CE-teacher gap closed: 1 / (90 - 81) at the big student
    assert trend["closed"]["big"] == pytest.approx(1 / 9)
    assert verdict.gap_sentence(exp).startswith("Yes: Annealing-KD closes more of the gap")
    flat = experiment({("big", "ce"): ce, ("big", "annealing"): [c + 1 for c in ce]}, {"big": 4000})
    assert "cannot be judged yet" in verdict.gap_sentence(flat)


def test_replication_counts_cells_outside_their_interval():
    a = experiment({("s", "ce"): [80, 81, 82], ("s", "kd"): [85, 86, 87]}, {"s": 1000})
    b = experiment({("s", "ce"): [80.5, 81.5, 82.5], ("s", "kd"): [75, 76, 77]}, {"s": 1000})
    table = verdict.replication(a, b).set_index("method")
    assert table.loc["ce", "difference"] == pytest.approx(-0.5) and table.loc["ce", "within"]
    assert table.loc["kd", "difference"] == pytest.approx(10.0) and not table.loc["kd", "within"]


def test_verdict_agreement_tells_a_flip_near_the_mde_from_one_beyond_it_and_from_a_contradiction():
    ce = [80.0, 81.0, 82.0, 83.0, 84.0]

    def run(annealing_gain, kd_gain):
        return experiment({("s", "ce"): ce, ("s", "annealing"): [c + d for c, d in zip(ce, annealing_gain)],
                           ("s", "kd"): [c + d for c, d in zip(ce, kd_gain)]}, {"s": 1000})

    # Annealing-KD +2.01 (sd 1, t 4.49, p 0.011: Holm's last step, better) below its MDE at
    # Bonferroni's level over 3: (t_0.99167,4 + t_0.8,4) x 1 / sqrt(5) = (3.961 + 0.941) / 2.236 = 2.192
    a = run([3.01, 1.01, 2.01, 3.01, 1.01], [-3.0, -2.9, -3.1, -3.0, -3.0])
    b = run([1.0, -1.0, 0.5, 1.5, -0.5], [2.0, -4.0, 1.0, -3.0, 0.4])  # +0.30 and -0.72: nothing detected
    table = verdict.verdict_agreement(a, b).set_index(["method", "baseline"])
    assert table.loc[("annealing", "ce"), "mde_a"] == pytest.approx(2.192, abs=1e-3)
    assert not table["agree"].any() and not table["contradict"].any()
    # a marginal detection may flip; KD's -3.0 (sd 0.07, MDE 0.155) and Annealing-KD's +5.01 over
    # KD (MDE 2.25) should have been found again (each run's own MDE: b's, 5.7 and 5.3, are larger)
    assert table["beyond_mde"].to_dict() == {("kd", "ce"): True, ("annealing", "ce"): False,
                                             ("annealing", "kd"): True}
    # +2.01 against +0.30: 1.71 apart, Welch interval t_0.975,7.98 x sqrt(0.2 + 0.215) = 1.485
    assert not table.loc[("annealing", "ce"), "effect_within"]

    c = run([-2.0, -2.1, -1.9, -2.0, -2.0], [-3.0, -2.9, -3.1, -3.0, -3.0])  # Annealing-KD worse than CE
    table = verdict.verdict_agreement(a, c).set_index(["method", "baseline"])
    assert table["contradict"].to_dict() == {("kd", "ce"): False, ("annealing", "ce"): True,
                                             ("annealing", "kd"): False}
    assert table.loc[("kd", "ce"), "effect_within"] and not table["beyond_mde"].any()
    same = verdict.verdict_agreement(a, a)
    assert same["agree"].all() and same["effect_within"].all() and not same["beyond_mde"].any()
