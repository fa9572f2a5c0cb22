"""What the study's planner starts next and when it says the study is done, without Ray:
StudyPlanner over a real ledger (Optuna's journal storage), results told by hand as Tune
reports them, a teacher ready once the teacher stage has written its row file. A second
planner over the same experiment folder is the next session of a killed driver."""
import warnings

import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher

from study.config import StudyConfig
from study.ledger import Ledger
from study.search import StudyPlanner
from study.teachers import TeacherStage
from study.trainable import trial_folder

from planner_helpers import finish, teacher_trained

STUDENT = "mlp1d_8"
CE, KD = f"{STUDENT}-ce", f"{STUDENT}-kd"


@pytest.fixture
def make_planner(tmp_path):
    def make(methods=("ce",), teacher_ready=True, **changes):
        study = StudyConfig.preset("smoke").replace(**{
            "students": [STUDENT], "methods": list(methods), "trials_per_cell": 3, "rerun_seeds": 2,
            "rerun_max_seeds": 2, "confirm_top": 0, "audit_pruned": 0, "pruner": "none", "seed": 5,
            "epochs": 8, **changes})
        teachers = TeacherStage(study, tmp_path, tmp_path / "teachers")
        teachers.folder.mkdir(parents=True, exist_ok=True)
        if teacher_ready:
            teacher_trained(teachers)
        return StudyPlanner(study, Ledger(study, tmp_path, "plan"), tmp_path, teachers)
    return make


def test_ready_cells_take_turns_the_one_with_fewest_search_trials_first(make_planner):
    planner = make_planner(methods=("ce", "kd"))
    assert [planner.suggest(f"t{i}")["cell"] for i in range(6)] == [CE, KD, CE, KD, CE, KD]


def test_a_search_trial_started_to_wait_for_its_teacher_is_told_like_any_other(make_planner):
    planner = make_planner(methods=("kd",), teacher_ready=False)
    run = planner.suggest("w0")
    assert (run["cell"], run["stage"], run["optuna_trial"]) == (KD, "search", 0)
    finish(planner, "w0", 71.0)
    trial = planner.ledger.trials(KD)[0]
    assert (trial.state, trial.value, trial.user_attrs["tune_trial"]) == (TrialState.COMPLETE, 71.0, "w0")


def test_the_trial_a_killed_session_left_running_runs_again_though_every_search_trial_had_started(make_planner):
    first = make_planner()
    runs = [first.suggest(t) for t in "abc"]
    finish(first, "a", 60.0)
    finish(first, "b", 65.0)
    second = make_planner()  # the driver was killed while c ran: c is queued again
    again = second.suggest("c2")
    assert (again["stage"], again["optuna_trial"], again["params"]) == ("search", 3, runs[2]["params"])
    assert second.suggest("d") is None  # the cell's trial count is reached: the re-runs wait for c2


def test_the_study_waits_for_a_training_teacher_and_ends_once_it_is_ready(make_planner):
    planner = make_planner(methods=("kd",), teacher_ready=False, trials_per_cell=2)
    for trial_id in ("w0", "w1"):  # started to wait for the teacher, lost with their node
        planner.suggest(trial_id)
        planner.on_trial_complete(trial_id, None, error=True)
    assert planner.suggest("w2") is None  # nothing runs, but the teacher may still plan more
    teacher_trained(planner.teachers)
    # no trial ended since the planner last found nothing; the teacher's row alone is news
    assert planner.suggest("w3") == Searcher.FINISHED  # both searches failed: no re-run to plan


def test_a_trial_stopped_by_an_interrupt_keeps_the_study_from_ending(make_planner):
    planner = make_planner()
    for trial_id in "abc":
        planner.suggest(trial_id)
    finish(planner, "a", 60.0)
    finish(planner, "b", 65.0)
    planner.on_trial_complete("c", {"best_val_acc": 50.0, "finished": False})
    assert planner.ledger.trials(CE)[2].state == TrialState.RUNNING
    assert not planner.live and planner.suggest("d") is None  # not FINISHED: c runs again next session


def test_once_nothing_can_start_the_planner_answers_without_reading_the_ledger_until_a_trial_ends(
        make_planner, monkeypatch):
    planner = make_planner()
    for trial_id in "abc":
        planner.suggest(trial_id)
    assert planner.suggest("d") is None
    looked = []
    next_run = planner.next_run
    monkeypatch.setattr(planner, "next_run", lambda trial_id: looked.append(trial_id) or next_run(trial_id))
    assert planner.suggest("e") is None and looked == []  # Tune asks on every scheduling step
    finish(planner, "a", 60.0)
    assert planner.suggest("f") is None and looked == ["f"]  # b and c still run: the re-runs wait


def test_a_cells_search_and_its_students_re_runs_finish_in_that_order(make_planner):
    planner = make_planner()
    for trial_id in "ab":
        planner.suggest(trial_id)
        finish(planner, trial_id, 60.0)
    # every trial started so far has finished, but the cell's trial count is not reached
    assert not planner.search_complete(CE) and not planner.reruns_finished(STUDENT)
    planner.suggest("c")
    finish(planner, "c", 70.0)
    assert planner.search_complete(CE)
    assert not planner.reruns_finished(STUDENT)  # its re-runs are planned, not started
    reruns = [planner.suggest(f"r{i}") for i in range(2)]
    assert [(r["stage"], r["seed"], r["optuna_trial"]) for r in reruns] == [("rerun", 6, 0), ("rerun", 7, 1)]
    assert not planner.reruns_finished(STUDENT)
    for i in range(2):
        finish(planner, f"r{i}", 68.0 + i)
    assert planner.reruns_finished(STUDENT)
    assert [t.value for t in planner.ledger.trials(CE, "rerun")] == [68.0, 69.0]
    assert planner.suggest("z") == Searcher.FINISHED


def test_without_re_run_seeds_the_study_ends_with_its_search(make_planner):
    planner = make_planner(rerun_seeds=0, rerun_max_seeds=None)
    for trial_id in "abc":
        planner.suggest(trial_id)
        finish(planner, trial_id, 60.0)
    assert planner.suggest("d") == Searcher.FINISHED
    assert planner.ledger.trials(CE, "rerun") == []


def test_a_trial_told_twice_or_never_suggested_changes_nothing(make_planner):
    planner = make_planner()
    planner.suggest("a")
    finish(planner, "a", 60.0)
    finish(planner, "a", 10.0, error=True)  # a second word on the same trial: the first stands
    finish(planner, "stranger", 99.0)
    assert [(t.state, t.value) for t in planner.ledger.trials(CE)] == [(TrialState.COMPLETE, 60.0)]
    assert planner.changes == 1


def test_a_diverged_trial_is_told_failed_without_a_warning_in_the_drivers_output(make_planner):
    planner = make_planner()
    planner.suggest("a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns when told a trial without a value or state
        planner.on_trial_complete("a", {"best_val_acc": 12.0, "finished": True, "diverged": True})
    assert planner.ledger.trials(CE)[0].state == TrialState.FAIL


def test_a_confirmation_a_killed_session_left_running_resumes_from_its_own_folder(make_planner, tmp_path):
    first = make_planner(confirm_top=1, confirm_seeds=2)
    for trial_id, value in zip("abc", (60.0, 70.0, 65.0)):
        first.suggest(trial_id)
        finish(first, trial_id, value)
    confirm = first.suggest("k0")
    assert (confirm["stage"], confirm["seed"]) == ("confirm", 1006)
    second = make_planner(confirm_top=1, confirm_seeds=2)  # the driver died while k0 ran
    again = second.suggest("k0b")
    assert (again["stage"], again["seed"], again["params"]) == ("confirm", 1006, confirm["params"])
    assert again["resume_from"] == str(trial_folder(str(tmp_path), {"cell": CE, "stage": "confirm"}, "k0"))


def test_a_new_session_starts_from_each_cells_best_validation_score_on_record(make_planner):
    """The metrics gauge of a resumed study (StudyMetrics' best_on_record) starts from here."""
    first = make_planner(methods=("ce", "kd"), trials_per_cell=2)
    cells = {t: first.suggest(t)["cell"] for t in "abcd"}
    assert cells == {"a": CE, "b": KD, "c": CE, "d": KD}
    finish(first, "a", 60.0)
    assert not first.report_and_should_prune("b", 75.0, 3)
    first.mark_pruned("b")
    first.on_trial_complete("b", {"best_val_acc": 75.0, "finished": False})  # pruned: its last report counts
    finish(first, "c", 62.0)
    first.on_trial_complete("d", {"best_val_acc": 99.0, "finished": True, "diverged": True})  # failed: no score
    assert make_planner(methods=("ce", "kd"), trials_per_cell=2).best_on_record() == {CE: 62.0, KD: 75.0}
    assert (first.suggest("r")["cell"], first.suggest("r2")["stage"]) == (CE, "rerun")
    finish(first, "r", 81.0)  # a re-run's score counts too
    assert make_planner(methods=("ce", "kd"), trials_per_cell=2).best_on_record() == {CE: 81.0, KD: 75.0}
