"""Which configuration a cell's headline re-runs use: StudyPlanner over a real ledger (Optuna's
journal storage), results told by hand as trials report them. With `confirm_top`, the best
search trials first run again with other seeds, and the best MEAN validation score decides;
the headline seeds never take part."""
import json

import pytest

from kd.config import ConfigError
from study.config import StudyConfig
from study.ledger import Ledger
from study.search import StudyPlanner, half_width
from study.teachers import TeacherStage

from planner_helpers import finish

CELL = "mlp1d_8-ce"


@pytest.fixture
def make_planner(tmp_path):
    def make(**changes):
        study = StudyConfig.preset("smoke").replace(**{"students": ["mlp1d_8"], "methods": ["ce"], "trials_per_cell": 4,
                                                       "rerun_seeds": 3, "pruner": "none", "seed": 7, **changes})
        teachers = TeacherStage(study, tmp_path, tmp_path / "teachers")
        return StudyPlanner(study, Ledger(study, tmp_path, "selection"), tmp_path, teachers)
    return make


def search(planner, values):
    """Runs the cell's search: one trial per value; returns each trial's params."""
    runs = [planner.suggest(f"s{i}") for i in range(len(values))]
    assert [r["stage"] for r in runs] == ["search"] * len(values)
    for i, value in enumerate(values):
        finish(planner, f"s{i}", value)
    return [r["params"] for r in runs]


def suggest_all(planner, prefix):
    """Every run the planner has for now (it answers None when the rest must wait)."""
    runs = []
    while (run := planner.suggest(f"{prefix}{len(runs)}")) is not None and isinstance(run, dict):
        runs.append(run)
    return runs


def test_without_confirmation_the_best_search_trial_is_re_run_with_the_headline_seeds(make_planner):
    planner = make_planner(confirm_top=0)
    params = search(planner, [60.0, 70.0, 65.0, 50.0])
    reruns = suggest_all(planner, "r")
    assert [(r["stage"], r["seed"]) for r in reruns] == [("rerun", 8), ("rerun", 9), ("rerun", 10)]
    assert all(r["params"] == params[1] for r in reruns)


def test_the_confirmed_mean_not_one_lucky_seed_chooses_the_configuration(make_planner):
    planner = make_planner(confirm_top=2, confirm_seeds=2)
    params = search(planner, [60.0, 70.0, 65.0, 50.0])
    confirms = suggest_all(planner, "c")
    # the two best search trials (70, then 65), each with seeds 7 + 1001 and 7 + 1002
    assert [(r["stage"], r["seed"], r["params"]) for r in confirms] == [
        ("confirm", 1008, params[1]), ("confirm", 1009, params[1]),
        ("confirm", 1008, params[2]), ("confirm", 1009, params[2])]
    for i, value in enumerate([55.0, 56.0, 66.0]):
        finish(planner, f"c{i}", value)
    assert suggest_all(planner, "w") == []  # no re-run while a candidate's seeds are missing
    finish(planner, "c3", 67.0)
    reruns = suggest_all(planner, "r")
    # means: 70, 55, 56 -> 60.33; 65, 66, 67 -> 66.0: the second search trial is re-run
    assert [(r["stage"], r["seed"]) for r in reruns] == [("rerun", 8), ("rerun", 9), ("rerun", 10)]
    assert all(r["params"] == params[2] for r in reruns)
    assert json.loads(planner.ledger.trials(CELL, "rerun")[-1].user_attrs["params"]) == params[2]


def test_a_candidate_that_diverges_under_another_seed_is_not_chosen(make_planner):
    planner = make_planner(confirm_top=2, confirm_seeds=1)
    params = search(planner, [60.0, 70.0, 65.0, 50.0])
    confirms = suggest_all(planner, "c")
    assert [r["params"] for r in confirms] == [params[1], params[2]]
    planner.on_trial_complete("c0", {"best_val_acc": None, "diverged": True})  # mean of the rest: 70
    finish(planner, "c1", 40.0)                                                # mean 52.5
    reruns = suggest_all(planner, "r")
    assert reruns and all(r["params"] == params[2] for r in reruns)


@pytest.mark.parametrize("changes, field", [({"confirm_top": -1}, "confirm_top"),
                                            ({"confirm_top": 5}, "confirm_top"),
                                            ({"confirm_top": 2, "confirm_seeds": 0}, "confirm_seeds"),
                                            ({"rerun_seeds": 1000}, "rerun_seeds")])
def test_bad_confirmation_settings_are_refused_naming_the_field(changes, field):
    with pytest.raises(ConfigError, match=f"^{field}: "):
        StudyConfig.preset("smoke").replace(trials_per_cell=4, **changes)


def test_the_report_names_the_configuration_the_re_runs_used_not_the_best_single_seed():
    import pandas as pd

    from analysis.tables import best_search_trial

    group = pd.DataFrame({
        "trial_id": ["a", "b", "c", "r1", "r2"], "stage": ["search"] * 3 + ["rerun"] * 2,
        "status": ["completed", "completed", "pruned", "completed", "completed"],
        "best_val_acc": [70.0, 65.0, 40.0, 64.0, 66.0],
        "config": ['{"lr": 0.9}', '{"lr": 0.3}', '{"lr": 0.1}', '{"lr": 0.3}', '{"lr": 0.3}']})
    assert best_search_trial(group)["trial_id"] == "b"       # confirmed on more seeds, re-run
    assert best_search_trial(group.iloc[:3])["trial_id"] == "a"  # before any re-run: best validation


def test_half_width_of_the_95_percent_t_interval_by_hand():
    # mean 2, sample sd 1, t(0.975, 2 dof) = 4.302653: 4.302653 / sqrt(3)
    assert half_width([1.0, 2.0, 3.0]) == pytest.approx(2.484138, abs=1e-6)
    # sd 2 over 4 values, t(0.975, 3) = 3.182446: 3.182446 * 2 / 2
    assert half_width([0.0, 0.0, 4.0, 4.0]) == pytest.approx(3.675, abs=1e-3)


def rerun_round(planner, prefix, values):
    """Runs every re-run the planner has now, with these validation scores; returns their seeds."""
    runs = suggest_all(planner, prefix)
    for i, value in enumerate(values[:len(runs)]):
        finish(planner, f"{prefix}{i}", value)
    return [r["seed"] for r in runs]


def test_a_wide_interval_tops_up_seeds_in_steps_until_the_maximum(make_planner):
    planner = make_planner(confirm_top=0, rerun_seeds=2, rerun_max_seeds=5, rerun_target=1.0)
    search(planner, [60.0, 70.0, 65.0, 50.0])
    assert planner.planned_seeds("mlp1d_8") == 2
    assert rerun_round(planner, "a", [60.0, 66.0]) == [8, 9]  # study seed 7 + 1, + 2
    # 60 and 66: half-width 38: two more seeds, then one (the maximum is 5)
    assert rerun_round(planner, "b", [62.0, 64.0]) == [10, 11] and planner.planned_seeds("mlp1d_8") == 4
    resumed = make_planner(confirm_top=0, rerun_seeds=2, rerun_max_seeds=5, rerun_target=1.0)
    assert resumed.planned_seeds("mlp1d_8") == 4  # a new session counts the seeds the ledger holds
    assert rerun_round(planner, "c", [63.0]) == [12] and planner.planned_seeds("mlp1d_8") == 5
    assert not planner.top_up("mlp1d_8") and planner.reruns_finished("mlp1d_8") and suggest_all(planner, "d") == []


def test_a_narrow_interval_keeps_the_planned_seeds(make_planner):
    planner = make_planner(confirm_top=0, rerun_seeds=3, rerun_max_seeds=9, rerun_target=1.0, audit_pruned=1)
    search(planner, [60.0, 70.0, 65.0, 50.0])
    assert rerun_round(planner, "a", [64.0, 64.2, 64.1]) == [8, 9, 10]  # half-width 0.25 < 1.0
    assert not planner.top_up("mlp1d_8") and planner.planned_seeds("mlp1d_8") == 3
    assert planner.reruns_finished("mlp1d_8") and suggest_all(planner, "b") == []
    # Tune's bound: twice (replacements) 1 cell x (4 search + 9 seeds + 1 audit + 0 confirmations)
    assert planner.max_trials() == 2 * 1 * (4 + 9 + 1 + 0)


def test_an_interval_exactly_as_wide_as_the_target_is_narrow_enough(make_planner):
    planner = make_planner(confirm_top=0, rerun_seeds=2, rerun_max_seeds=5, rerun_target=half_width([60.0, 66.0]))
    search(planner, [60.0, 70.0, 65.0, 50.0])
    assert rerun_round(planner, "a", [60.0, 66.0]) == [8, 9]
    assert not planner.top_up("mlp1d_8") and suggest_all(planner, "b") == []


def test_only_the_headline_re_runs_that_completed_decide_a_top_up(make_planner):
    planner = make_planner(confirm_top=1, confirm_seeds=2, rerun_seeds=3, rerun_max_seeds=5, rerun_target=1.0)
    search(planner, [60.0, 70.0, 65.0, 50.0])
    confirms = suggest_all(planner, "c")
    assert [c["stage"] for c in confirms] == ["confirm", "confirm"]
    finish(planner, "c0", 40.0)  # far from the headline seeds: no part of their interval
    finish(planner, "c1", 90.0)
    reruns = suggest_all(planner, "r")
    assert [r["seed"] for r in reruns] == [8, 9, 10]
    finish(planner, "r0", 64.0)
    finish(planner, "r1", 64.1)
    planner.on_trial_complete("r2", {"best_val_acc": None, "finished": True, "diverged": True})
    assert [t.state.name for t in planner.reruns(CELL)][-1] == "FAIL"
    assert not planner.top_up("mlp1d_8")  # 64.0 and 64.1: half-width 0.64
    assert planner.reruns_finished("mlp1d_8") and suggest_all(planner, "s") == []


def test_tune_checkpoints_of_the_planner_hold_nothing_the_ledger_does_not(make_planner, tmp_path):
    planner = make_planner()
    path = tmp_path / "searcher.json"
    planner.save(str(path))
    assert path.read_text() == "{}"
    planner.restore(str(path))  # a new session starts from the ledger, not from this file
    assert planner.set_search_properties("best_val_acc", "max", {}) is True


def test_tunes_trial_bound_counts_every_stage_of_every_cell_twice(make_planner):
    planner = make_planner(methods=["ce", "kd"], confirm_top=2, confirm_seeds=3, rerun_seeds=3, rerun_max_seeds=5,
                           audit_pruned=1)
    assert planner.max_trials() == 2 * 2 * (4 + 5 + 1 + 2 * 3)
