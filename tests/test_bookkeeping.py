"""The study's record of what ran, without Ray: StudyPlanner over a real ledger (Optuna's
journal storage), trial folders written in the form trials write them (result.json lines,
final.json, error.txt), and summary.csv rebuilt from both by build_summary. Every status a
trial can have is one row of the summary, with the numbers its folder holds; a session that
ends with trials running leaves the next session what it needs to resume them."""
import json
import math

import pandas as pd
import pytest
from optuna.trial import TrialState

from study.config import StudyConfig
from study.ledger import RERUN, SEARCH, Ledger
from study.search import StudyPlanner
from study import summary as summary_module
from study.summary import build_summary
from study.teachers import TeacherStage, write_json
from study.trainable import FINAL_FILE, trial_folder

STUDENT, METHOD = "mlp1d_8", "ce"
CELL = f"{STUDENT}-{METHOD}"
TEACHERS = pd.DataFrame([{"role": "teacher", "arch": "cnn1d_32", "test_acc": 91.5}])
PARAMS = {"cnn1d_32": 40_000, STUDENT: 400}


@pytest.fixture
def study():
    return StudyConfig.preset("smoke").replace(students=[STUDENT], methods=[METHOD], trials_per_cell=5,
                                               rerun_seeds=2, rerun_max_seeds=2, confirm_top=0, audit_pruned=1,
                                               pruner="none", seed=3, epochs=8)


def session(study, exp_dir):
    """A driver session's planner (a new one reconciles what the last one left)."""
    teachers = TeacherStage(study, exp_dir, exp_dir / "teachers")
    teachers.folder.mkdir(parents=True, exist_ok=True)
    write_json(teachers.row_file("teacher"), {"role": "teacher", "arch": "cnn1d_32", "path": "t.pt",
                                              "best_val_acc": 92.0, "test_acc": 91.5, "metric": "accuracy"})
    return StudyPlanner(study, Ledger(study, exp_dir, "book"), exp_dir, teachers)


def write_results(exp_dir, run, trial_id, rows, final=None, error=None):
    """A trial's folder as Tune and the trainable leave it."""
    folder = trial_folder(str(exp_dir), run, trial_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if final is not None:
        (folder / FINAL_FILE).write_text(json.dumps(final))
    if error is not None:
        (folder / "error.txt").write_text(error)
    return folder


def epoch_row(epoch, val, selected_test, test, finished=False, **extra):
    """One epoch's result: selected_test_* is the test score of the best-validation epoch so
    far; test_acc, this epoch's own test score, must never reach the summary."""
    return {"epoch": epoch, "best_val_acc": val, "selected_test_acc": selected_test,
            "selected_test_accuracy": selected_test, "test_acc": test, "test_accuracy": test,
            "primary_metric": "accuracy", "time_total_s": 10.0 * epoch, "teacher_wait_s": 4.0,
            "node_ip": "10.0.0.7", "node_id": "abcdef0123456789", "finished": finished, **extra}


def run_search_trial(planner, exp_dir, trial_id, rows, outcome="completed", error=None):
    run = planner.suggest(trial_id)
    assert run["stage"] == SEARCH
    write_results(exp_dir, run, trial_id, rows, error=error)
    if outcome == "pruned":
        planner.mark_pruned(trial_id)
    planner.on_trial_complete(trial_id, rows[-1] if rows else None, error=outcome == "error")
    return run


def test_every_status_is_one_summary_row_with_its_folder_numbers(study, tmp_path):
    planner = session(study, tmp_path)
    # completed: the best validation epoch (3) is not the best test epoch (4), by construction
    completed = [epoch_row(1, 50.0, 48.0, 48.0), epoch_row(2, 60.0, 55.0, 55.0), epoch_row(3, 70.0, 61.0, 61.0),
                 *[epoch_row(e, 70.0, 61.0, 66.0) for e in range(4, 8)], epoch_row(8, 70.0, 61.0, 66.0, True)]
    run_search_trial(planner, tmp_path, "t-done", completed)
    run_search_trial(planner, tmp_path, "t-pruned", [epoch_row(1, 30.0, 29.0, 29.0), epoch_row(2, 35.0, 33.0, 33.0)],
                     outcome="pruned")
    diverged = [epoch_row(1, 20.0, 19.0, 19.0, diverged=True, reason="diverged: loss is nan at epoch 1")]
    run_search_trial(planner, tmp_path, "t-nan", diverged)
    run_search_trial(planner, tmp_path, "t-error", [], outcome="error",
                     error="Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n")
    running = planner.suggest("t-running")  # still running when the summary is written
    write_results(tmp_path, running, "t-running", [epoch_row(1, 40.0, 39.0, 39.0)])

    summary = build_summary(tmp_path, study, "book", TEACHERS, PARAMS)
    rows = summary.set_index("trial_id")
    assert list(summary.trial_id) == ["t-done", "t-pruned", "t-nan", "t-error", "t-running"]
    assert list(summary.optuna_trial) == [0, 1, 2, 3, 4]
    assert rows.status.to_dict() == {"t-done": "completed", "t-pruned": "pruned", "t-nan": "failed",
                                     "t-error": "failed", "t-running": "running"}
    assert rows.reason.to_dict() == {"t-done": "", "t-pruned": "pruned at epoch 2",
                                     "t-nan": "diverged: loss is nan at epoch 1",
                                     "t-error": "RuntimeError: CUDA out of memory", "t-running": ""}
    done = rows.loc["t-done"]
    assert (done.best_val_acc, done.test_acc, done.test_accuracy) == (70.0, 61.0, 61.0)  # never 66 (best test)
    assert (done.epochs_run, done.epochs_budget, done.seconds) == (8, 8, 76.0)  # 80 s less the 4 s teacher wait
    assert (done.node, done.metric, done.stage, done.audit) == ("10.0.0.7/abcdef01", "accuracy", "search", False)
    assert (done.capacity_ratio, done.teacher_test_acc, done.seed) == (100.0, 91.5, 3)
    assert json.loads(done.config) == planner.params_of(planner.ledger.trials(CELL)[0])
    assert done.lr == json.loads(done.config)["lr"] and math.isnan(done.tau_max)
    assert rows.loc["t-pruned"].epochs_run == 2 and rows.loc["t-pruned"].best_val_acc == 35.0
    assert math.isnan(rows.loc["t-error"].best_val_acc) and rows.loc["t-error"].epochs_run == 0
    assert rows.loc["t-running"].best_val_acc == 40.0


def test_re_runs_and_audits_are_planned_from_the_search_and_summarised_by_stage(study, tmp_path):
    planner = session(study, tmp_path)
    for i, val in enumerate([60.0, 75.0, 65.0]):
        run_search_trial(planner, tmp_path, f"s{i}", [epoch_row(e, val, val - 5, val) for e in range(1, 8)] +
                         [epoch_row(8, val, val - 5, val, True)])
    for i in (3, 4):
        run_search_trial(planner, tmp_path, f"s{i}", [epoch_row(1, 20.0 + i, 19.0, 19.0)], outcome="pruned")
    best = planner.params_of(planner.ledger.trials(CELL)[1])
    pruned_params = [planner.params_of(t) for t in planner.ledger.trials(CELL)[3:]]
    plan = planner.missing_reruns(CELL)
    # the best search trial with seeds study seed + 1, + 2; one pruned trial audited at the study seed
    assert [(stage, seed) for stage, seed, _ in plan] == [("rerun", 4), ("rerun", 5), ("audit", 3)]
    assert plan[0][2] == plan[1][2] == best and plan[2][2] in pruned_params
    for i in range(3):
        run = planner.suggest(f"r{i}")
        assert (run["stage"], run["seed"], run["params"]) == plan[i]
        write_results(tmp_path, run, f"r{i}", [epoch_row(8, 70.0 + i, 68.0 + i, 69.0 + i, True)])
        planner.on_trial_complete(f"r{i}", {"best_val_acc": 70.0 + i, "finished": True})
    assert planner.missing_reruns(CELL) == [] and planner.suggest("more") is StudyPlanner.FINISHED

    summary = build_summary(tmp_path, study, "book", TEACHERS, PARAMS)
    later = summary[summary.stage != SEARCH]
    assert list(later.stage) == ["rerun", "rerun", "audit"] and list(later.seed) == [4, 5, 3]
    assert list(later.test_acc) == [68.0, 69.0, 70.0] and list(later.audit) == [False, False, True]
    assert list(later.status) == ["completed"] * 3


def test_a_killed_session_leaves_its_running_trials_to_the_next_one(study, tmp_path):
    first = session(study, tmp_path)
    run_search_trial(first, tmp_path, "a", [epoch_row(e, 50.0, 45.0, 45.0) for e in range(1, 8)] +
                     [epoch_row(8, 50.0, 45.0, 45.0, True)])
    # b finished but its driver died before hearing of it: final.json is there
    b = first.suggest("b")
    write_results(tmp_path, b, "b", [epoch_row(7, 66.0, 60.0, 60.0)], final=epoch_row(8, 67.0, 61.0, 62.0, True))
    # c was interrupted at epoch 3, with a checkpoint in its folder
    c = first.suggest("c")
    c_folder = write_results(tmp_path, c, "c", [epoch_row(e, 40.0, 38.0, 38.0) for e in range(1, 4)])
    # an interrupt reaches c: not finished, so it is not told (the next session runs it again)
    first.on_trial_complete("c", {"best_val_acc": 40.0, "finished": False})
    assert [t.state for t in first.ledger.trials(CELL)] == [TrialState.COMPLETE, TrialState.RUNNING,
                                                             TrialState.RUNNING]

    second = session(study, tmp_path)  # reconciles
    states = [t.state for t in second.ledger.trials(CELL)]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert second.ledger.trials(CELL)[1].value == 67.0
    assert second.ledger.replaced(CELL, SEARCH) == {2}
    assert [t.number for t in second.search_trials(CELL)] == [0, 1, 3]
    again = second.suggest("c2")  # the queued replacement: c's configuration, from c's folder
    assert again["params"] == c["params"] and again["optuna_trial"] == 3
    assert again["resume_from"] == str(c_folder)

    summary = build_summary(tmp_path, study, "book", TEACHERS, PARAMS)
    assert list(summary.trial_id) == ["a", "b", "c", "c2"]
    assert list(summary.status) == ["completed", "completed", "replaced", "running"]
    assert summary.reason.iloc[2] == "interrupted: run again by the next session as a new trial"
    assert summary.best_val_acc.iloc[1] == 67.0 and summary.test_acc.iloc[1] == 61.0  # from final.json


def test_an_interrupted_re_run_is_planned_again_and_resumes_from_its_folder(study, tmp_path):
    first = session(study, tmp_path)
    for i, val in enumerate([60.0, 70.0, 65.0, 50.0, 55.0]):
        run_search_trial(first, tmp_path, f"s{i}", [epoch_row(8, val, val - 5, val, True)])
    rerun = first.suggest("r0")
    assert (rerun["stage"], rerun["seed"]) == ("rerun", 4)
    folder = write_results(tmp_path, rerun, "r0", [epoch_row(2, 61.0, 60.0, 60.0)])

    second = session(study, tmp_path)
    assert [t.state for t in second.ledger.trials(CELL, RERUN)] == [TrialState.FAIL]
    assert second.ledger.replaced(CELL, RERUN) == {0} and second.reruns(CELL) == []
    again = second.suggest("r0b")
    assert (again["stage"], again["seed"], again["params"]) == ("rerun", 4, rerun["params"])
    assert again["resume_from"] == str(folder)
    assert second.suggest("r1")["resume_from"] is None  # seed 5 never started: from scratch


def test_a_row_holds_every_column_and_defaults_where_a_folder_has_nothing(tmp_path):
    """Recorded through the ledger alone: a TAKD trial with a full folder (a line cut by a kill
    in the middle of result.json, which a resumed trial then appended to), and trials whose
    folders hold nothing or little, as a summary written mid-study finds them."""
    study = StudyConfig.preset("smoke").replace(students=[STUDENT], methods=["ce", "takd"], assistant="cnn1d_16",
                                                trials_per_cell=3, pruner="none", seed=3, epochs=8)
    ledger = Ledger(study, tmp_path, "book")
    takd, ce = f"{STUDENT}-takd", CELL

    def record(cell, method, tune_trial, state, value=None):
        number, params, _ = ledger.ask_search(cell, method, tune_trial)
        if state != TrialState.RUNNING:
            ledger.tell(cell, SEARCH, number, state, value)
        return params, trial_folder(str(tmp_path), {"cell": cell, "stage": SEARCH}, tune_trial)

    params, folder = record(takd, "takd", "k1", TrialState.COMPLETE, 71.0)
    folder.mkdir(parents=True)
    rows = [epoch_row(7, 70.0, 60.0, 60.0), epoch_row(8, 71.0, 62.0, 64.0, True, teacher_wait_s=None)]
    (folder / "result.json").write_text(json.dumps(rows[0]) + "\n" + '{"epoch": 8, "best_va\n' + json.dumps(rows[1]) + "\n")
    (folder / FINAL_FILE).write_text(json.dumps(epoch_row(8, 99.0, 99.0, 99.0, True)))  # Tune's record wins
    _, pruned_folder = record(ce, "ce", "c1", TrialState.PRUNED)
    _, failed_folder = record(ce, "ce", "c2", TrialState.FAIL)
    failed_folder.mkdir(parents=True)
    (failed_folder / "error.txt").write_text("")  # an error file the kill left empty
    _, long_folder = record(ce, "ce", "c3", TrialState.FAIL)
    long_folder.mkdir(parents=True)
    (long_folder / "error.txt").write_text("Traceback\n  File x\nValueError: " + "v" * 400 + "\n")
    _, nan_folder = record(ce, "ce", "c4", TrialState.FAIL)
    nan_folder.mkdir(parents=True)
    (nan_folder / "result.json").write_text(json.dumps({"epoch": 2, "diverged": True}) + "\n")
    ledger.study(ce).ask()  # a driver killed between Optuna's ask() and writing the trial's attributes
    before = (tmp_path / "optuna-journal.log").read_bytes()

    summary = build_summary(tmp_path, study, "book", pd.DataFrame(columns=["role"]), {**PARAMS, "cnn1d_16": 9_000})
    assert (tmp_path / "optuna-journal.log").read_bytes() == before  # a summary never writes to the ledger
    assert list(summary.columns) == list(summary_module.COLUMNS)
    assert list(summary.cell) == [ce] * 5 + [takd]  # the study's cells in order, each in ledger order
    row = summary.iloc[5].to_dict()
    expected = {
        "trial_id": "k1", "optuna_trial": 0, "stage": "search", "cell": takd, "dataset": "mnist1d",
        "method": "takd", "teacher": study.teacher, "student": STUDENT, "assistant": "cnn1d_16",
        "teacher_params": 40_000, "student_params": 400, "capacity_ratio": 100.0, "seed": 3,
        "config": json.dumps(params, sort_keys=True), "status": "completed", "reason": "", "metric": "accuracy",
        "best_val_acc": 71.0, "test_acc": 62.0, "test_accuracy": 62.0, "epochs_run": 8, "epochs_budget": 8,
        "seconds": 80.0, "node": "10.0.0.7/abcdef01", "trial_dir": f"trials/{takd}_search_k1", "audit": False,
        **{p: params.get(p, math.nan) for p in summary_module.PARAM_COLUMNS}}
    for column in summary_module.COLUMNS:
        want = expected.get(column, math.nan)  # NaN: no teachers.csv yet, or no such metric
        got = row[column]
        assert (isinstance(want, float) and math.isnan(want) and math.isnan(got)) or got == want, column
    rest = summary.iloc[:5].set_index("trial_id")
    assert list(rest.index) == ["c1", "c2", "c3", "c4", ""] and rest.assistant.tolist() == [""] * 5
    assert rest.reason.tolist() == ["pruned at epoch 0", "error", "ValueError: " + "v" * 288, "diverged", ""]
    assert rest.status.tolist() == ["pruned", "failed", "failed", "failed", "running"]
    assert rest.metric.tolist() == [""] * 5 and rest.node.tolist() == ["/"] * 5
    assert rest.epochs_run.tolist() == [0, 0, 0, 2, 0] and rest.config.tolist()[-1] == "{}"
    assert rest.trial_dir.tolist()[-1] == f"trials/{ce}_search_"
    assert rest[["best_val_acc", "test_acc", "test_accuracy", "seconds"]].isna().all().all()


def test_a_study_without_a_ledger_has_an_empty_summary_with_every_column(study, tmp_path):
    summary = build_summary(tmp_path, study, "book", TEACHERS, PARAMS)
    assert summary.empty and list(summary.columns) == list(summary_module.COLUMNS)
    assert not (tmp_path / "optuna-journal.log").exists()


def test_cells_that_wait_for_a_teacher_start_after_the_ready_ones_and_name_their_row_files(tmp_path):
    """While the teacher and assistant train, CE searches first; then a teacher-waiting cell's
    search trial starts anyway (it waits inside its trial, README "The default study"), the
    cell with the fewest trials first, and names the row files it waits for."""
    study = StudyConfig.preset("smoke").replace(students=[STUDENT], methods=["ce", "kd", "takd"], assistant="cnn1d_16",
                                                trials_per_cell=2, pruner="none", seed=3, epochs=8)
    teachers = TeacherStage(study, tmp_path, tmp_path / "teachers")
    planner = StudyPlanner(study, Ledger(study, tmp_path, "book"), tmp_path, teachers)
    runs = [planner.suggest(f"t{i}") for i in range(6)]
    assert [r["cell"] for r in runs] == [CELL, CELL, f"{STUDENT}-kd", f"{STUDENT}-takd", f"{STUDENT}-kd",
                                         f"{STUDENT}-takd"]
    rows = {name: str(teachers.row_file(name)) for name in ("teacher", "assistant")}
    assert runs[0] == {"cell": CELL, "student": STUDENT, "method": "ce", "stage": "search", "seed": 3,
                       "optuna_trial": 0, "params": runs[0]["params"], "teacher_rows": {}, "resume_from": None}
    assert set(runs[0]["params"]) == {"lr", "weight_decay"}
    assert runs[2]["teacher_rows"] == {"teacher_checkpoint": rows["teacher"]}
    assert runs[3]["teacher_rows"] == {"assistant_checkpoint": rows["assistant"], "teacher_checkpoint": rows["teacher"]}
    assert [r["optuna_trial"] for r in runs] == [0, 1, 0, 0, 1, 1]
    assert planner.suggest("t6") is None  # every search trial started: nothing until one ends
