"""analysis/tables.py on hand-made trial rows: whole frames checked by hand (columns, order,
dtypes, values), including the edges the synthetic experiments do not reach."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis import tables
from analysis.load import Experiment


def experiment(rows: list[dict], config: dict | None = None) -> Experiment:
    teachers = pd.DataFrame([{"role": "teacher", "test_acc": 90.0}])
    return Experiment(Path("."), {"config": config or {}}, pd.DataFrame(rows), pd.DataFrame(), teachers)


def search(cell: str, status: str, val: float, run: float, budget: float, audit: bool = False) -> dict:
    student, method = cell.split("-")
    return {"trial_id": f"{cell}-{status}-{run}", "stage": "audit" if audit else "search", "status": status,
            "cell": cell, "method": method, "student": student, "best_val_acc": val, "test_acc": val,
            "epochs_run": run, "epochs_budget": budget, "audit": audit, "config": "{}"}


def test_pruning_audit_by_hand():
    rows = [
        search("s1-kd", "pruned", 45.0, 6, 12),  # alone in its cell, as much saved as run, no audit
        # budget 12 (one from the study's config): the pruned trial saves 12 - 6; the running one nothing
        search("s1-ce", "completed", 70.0, 12, 12), search("s1-ce", "pruned", 50.0, 6, math.nan),
        search("s1-ce", "running", 40.0, 3, 12),
        search("s1-ce", "completed", 70.0, 12, 12, audit=True),  # a tie with the best: does not beat it
        search("s2-ce", "failed", math.nan, 0, 12),  # nothing run, nothing saved
    ]
    audit = tables.pruning_audit(experiment(rows, {"epochs": 12}))
    expected = pd.DataFrame({
        "cell": ["s1-ce", "s1-kd", "s2-ce"], "method": ["ce", "kd", "ce"], "student": ["s1", "s1", "s2"],
        "trials": [3, 1, 1], "completed": [1, 0, 0], "pruned": [1, 1, 0], "failed": [0, 0, 1],
        "running": [1, 0, 0], "epochs_run": [21.0, 6.0, 0.0], "epochs_without_pruning": [27.0, 12.0, 0.0],
        "epochs_saved": [6.0, 6.0, 0.0], "saved_ratio": [6 / 27, 0.5, math.nan],
        "best_search_val_acc": [70.0, math.nan, math.nan], "audited": [1, 0, 0],
        "audited_beat_best": pd.array([0, pd.NA, pd.NA], dtype="Int64"),
    })
    pd.testing.assert_frame_equal(audit, expected)


def ranked(cell: str, test: float, ratio: float) -> dict:
    student, method = cell.split("-")
    row = search(cell, "completed" if not math.isnan(test) else "failed", test, 12, 12)
    return {**row, "test_acc": test, "capacity_ratio": ratio, "teacher_params": 8000, "student_params": 8000 / ratio}


def test_ranking_by_hand():
    # names sort against the capacity ratios (a_small is the larger ratio); b_big and c_twin
    # have the same ratio; kd and annealing tie in a_small; c_twin-annealing has no score
    rows = [ranked("a_small-ce", 60.0, 8.0), ranked("a_small-kd", 65.0, 8.0), ranked("a_small-annealing", 65.0, 8.0),
            ranked("b_big-ce", 80.0, 2.0), ranked("b_big-kd", 84.0, 2.0),
            ranked("c_twin-ce", 82.0, 2.0), ranked("c_twin-kd", 81.0, 2.0), ranked("c_twin-annealing", math.nan, 2.0)]
    rank = tables.ranking(experiment(rows))
    expected = pd.DataFrame({
        "capacity_ratio": [2.0, 2.0, 2.0, 2.0, 2.0, 8.0, 8.0, 8.0],
        "student": ["b_big", "b_big", "c_twin", "c_twin", "c_twin", "a_small", "a_small", "a_small"],
        "method": ["kd", "ce", "ce", "kd", "annealing", "kd", "annealing", "ce"],
        "test_mean": [84.0, 80.0, 82.0, 81.0, math.nan, 65.0, 65.0, 60.0],
        "source": ["search"] * 4 + ["none"] + ["search"] * 3,
        "rank": pd.array([1, 2, 1, 2, pd.NA, 1, 1, 3], dtype="Int64"),
    })
    pd.testing.assert_frame_equal(rank, expected)


def rerun(cell: str, seed: float, test: float, ratio: float, status: str = "completed") -> dict:
    return {**ranked(cell, test, ratio), "stage": "rerun", "status": status, "seed": seed,
            "trial_id": f"{cell}-rerun-{seed}-{status}"}


T_975_1 = 12.706204736174698  # Student's t, 97.5% quantile, 1 degree of freedom (tables)


def test_gain_over_ce_by_hand():
    rows = [rerun("b_big-ce", 1, 80.0, 2.0), rerun("b_big-ce", 2, 82.0, 2.0),
            rerun("b_big-annealing", 1, 81.0, 2.0), rerun("b_big-annealing", 2, 85.0, 2.0),  # +1, +3
            rerun("b_big-kd", 1, 83.0, 2.0), rerun("b_big-kd", 2, 86.0, 2.0),                # +3, +4
            rerun("b_big-kd", 3, 99.0, 2.0, status="failed"),  # not completed: no pair
            rerun("b_big-kd", math.nan, 99.0, 2.0),            # no seed: no pair
            rerun("c_twin-ce", 1, 70.0, 2.0), rerun("c_twin-kd", 1, 69.0, 2.0),              # one pair: -1
            rerun("a_small-kd", 1, 60.0, 8.0)]                                               # no CE at all
    gain = tables.gain_over_ce(experiment(rows))
    expected = pd.DataFrame({
        "method": ["kd", "annealing", "kd", "kd"], "student": ["b_big", "b_big", "c_twin", "a_small"],
        "capacity_ratio": [2.0, 2.0, 2.0, 8.0], "gain_mean": [3.5, 2.0, -1.0, math.nan],
        "gain_std": [math.sqrt(0.5), math.sqrt(2.0), math.nan, math.nan], "n_pairs": [2, 2, 1, 0],
        # half-width t(0.975, n - 1) * std / sqrt(n): 12.706 x 0.5 and 12.706 x 1
        "ci95_low": [3.5 - T_975_1 * 0.5, 2.0 - T_975_1, math.nan, math.nan],
        "ci95_high": [3.5 + T_975_1 * 0.5, 2.0 + T_975_1, math.nan, math.nan],
    })
    pd.testing.assert_frame_equal(gain, expected, rtol=1e-12)


def test_teacher_accuracy_reads_the_teacher_row_before_the_trials():
    trials = pd.DataFrame({"teacher_test_acc": [84.0, 85.0, 86.0, math.nan]})
    both = pd.DataFrame([{"role": "assistant", "test_acc": 70.0}, {"role": "teacher", "test_acc": 90.0}])
    assert tables.teacher_accuracy(Experiment(Path("."), {}, trials, pd.DataFrame(), both)) == 90.0
    only_assistant = both.iloc[:1]  # no teacher row yet: the median the trials carry
    assert tables.teacher_accuracy(Experiment(Path("."), {}, trials, pd.DataFrame(), only_assistant)) == 85.0


def test_cells_and_headlines_by_hand():
    """best_configs and headline_scores as whole frames: cells in the order capacity ratio,
    student, method (against the names' and the rows' order), a configuration with one
    re-run and one with two, search-only cells, a cell with nothing completed, and a CE-only
    student whose ratio comes from the teacher's and its own parameter counts."""
    d_ce = {**ranked("d_ce-ce", 70.0, math.nan), "teacher_params": math.nan, "student_params": 2000.0}
    rows = [ranked("c_twin-kd", 81.0, 2.0), ranked("b_big-annealing", 84.0, 2.0),
            rerun("b_big-annealing", 1, 81.0, 2.0), rerun("b_big-annealing", 2, 85.0, 2.0),
            ranked("b_big-ce", 79.0, 2.0), rerun("b_big-ce", 1, 80.0, 2.0), d_ce,
            ranked("a_small-kd", 65.0, 8.0), ranked("a_small-ce", math.nan, 8.0)]
    exp = experiment([{**row, "test_f1": row["test_acc"] - 50} for row in rows])
    order = {"method": ["ce", "annealing", "kd", "ce", "ce", "kd"],
             "student": ["b_big", "b_big", "c_twin", "d_ce", "a_small", "a_small"],
             "capacity_ratio": [2.0, 2.0, 2.0, 4.0, 8.0, 8.0]}
    expected_configs = pd.DataFrame({
        "cell": [f"{s}-{m}" for s, m in zip(order["student"], order["method"])], **order,
        "best_trial_id": ["b_big-ce-completed-12", "b_big-annealing-completed-12", "c_twin-kd-completed-12",
                          "d_ce-ce-completed-12", "", "a_small-kd-completed-12"],
        "best_config": ["{}", "{}", "{}", "{}", "", "{}"],
        "best_val_acc": [79.0, 84.0, 81.0, 70.0, math.nan, 65.0],
        "test_mean": [80.0, 83.0, math.nan, math.nan, math.nan, math.nan],
        "test_std": [math.nan, math.sqrt(8.0), math.nan, math.nan, math.nan, math.nan],
        "n_seeds": [1, 2, 0, 0, 0, 0],
    })
    pd.testing.assert_frame_equal(tables.best_configs(exp), expected_configs)
    expected_headlines = pd.DataFrame({
        **order, "test_mean": [80.0, 83.0, 81.0, 70.0, math.nan, 65.0],
        "test_std": [math.nan, math.sqrt(8.0), math.nan, math.nan, math.nan, math.nan],
        "n_seeds": [1, 2, 1, 1, 0, 1],
        "source": ["rerun", "rerun", "search", "search", "none", "search"],
    })
    pd.testing.assert_frame_equal(tables.headline_scores(exp), expected_headlines)
    f1 = tables.headline_scores(exp, "test_f1")  # another test column: the same cells, its values
    pd.testing.assert_series_equal(f1["test_mean"], expected_headlines["test_mean"] - 50)


def test_capacity_ratio_of_a_ce_only_student_when_one_trial_knows_the_teacher():
    rows = [{**ranked("s1-kd", 80.0, 4.0), "teacher_params": 8000.0},
            {**ranked("s1-ce", 70.0, math.nan), "teacher_params": math.nan},
            {**ranked("s2-ce", 70.0, math.nan), "teacher_params": math.nan, "student_params": 1000.0}]
    ratios = tables.capacity_ratios(experiment(rows))
    assert ratios.to_dict() == {"s1": 4.0, "s2": 8.0}


def test_pruning_audit_without_a_budget_anywhere():
    # an experiment whose config and trials do not say the budget: nothing counts as saved
    rows = [search("s1-ce", "pruned", 50.0, 6, math.nan), search("s1-ce", "completed", 70.0, 12, math.nan)]
    audit = tables.pruning_audit(experiment(rows, {}))
    assert audit[["epochs_run", "epochs_without_pruning", "epochs_saved", "saved_ratio"]].iloc[0].tolist() == \
        [18.0, 18.0, 0.0, 0.0]


def test_sort_rows_is_stable_and_keeps_an_empty_frame_as_it_is():
    frame = pd.DataFrame({"key": [i % 3 for i in range(1000)], "order": range(1000)})
    by_key = tables.sort_rows(frame, "key")
    assert by_key["key"].is_monotonic_increasing and by_key.index.tolist() == list(range(1000))
    assert all(group["order"].is_monotonic_increasing for _, group in by_key.groupby("key"))
    empty = tables.sort_rows(pd.DataFrame({"student": [], "method": []}, index=pd.Index([], name="x")), "student")
    assert empty.columns.tolist() == ["student", "method"] and empty.index.name is None
