"""CellPruner's rule with a real StudyPlanner over a real ledger (Optuna's journal storage,
its real ASHA pruner per cell): when a poor trial may be stopped, and that trials are
compared at the same epoch of their final phase. Results are fed by hand, epoch by epoch, in
the form trials report them (an empty T as NaN); the Tune trial is stood in by its id, the
teacher by the row file the teacher stage writes when it is ready."""
import math
from types import SimpleNamespace

import optuna
import pytest
from ray.tune.schedulers import TrialScheduler

from study.config import StudyConfig
from study.ledger import Ledger, make_pruner
from study.search import CellPruner, StudyPlanner
from study.teachers import TeacherStage

from planner_helpers import teacher_trained

STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE


@pytest.fixture
def make_cell(tmp_path):
    def make(method, epochs, grace=2, trials=4, pruner="asha"):
        study = StudyConfig.preset("smoke").replace(students=["cnn1d_8"], methods=[method], trials_per_cell=trials,
                                                    epochs=epochs, pruner=pruner, grace_epochs=grace,
                                                    reduction_factor=2)
        teachers = TeacherStage(study, tmp_path, tmp_path / "teachers")
        teachers.folder.mkdir(parents=True)
        teacher_trained(teachers)
        planner = StudyPlanner(study, Ledger(study, tmp_path, "pruning"), tmp_path, teachers)
        return planner, CellPruner(planner, set(study.decision_steps))
    return make


def results(values, phase1_temperatures=()):
    """What a trial reports after each epoch: best validation accuracy so far in the phase,
    T in phase 1 (Annealing-KD), and how many epochs of its final phase it has trained."""
    phase1, rows = len(phase1_temperatures), []
    for epoch, value in enumerate(values, start=1):
        T = phase1_temperatures[epoch - 1] if epoch <= phase1 else None
        next_T = phase1_temperatures[epoch] if epoch < phase1 else None
        rows.append({"epoch": epoch, "best_val_acc": value, "T": math.nan if T is None else T,
                     "stage_end": T is not None and next_T != T or epoch == phase1 or epoch == len(values),
                     "final_phase_epoch": max(0, epoch - phase1), "finished": epoch == len(values)})
    return rows


def feed(planner, pruner, trial_id, rows):
    """Reports epochs until the pruner stops the trial; returns the decisions made."""
    decisions = []
    for result in rows:
        decisions.append(pruner.on_trial_result(None, SimpleNamespace(trial_id=trial_id), result))
        if decisions[-1] == STOP:
            break
    planner.on_trial_complete(trial_id, result)
    return decisions


def states(planner, cell):
    return [t.state.name for t in planner.ledger.trials(cell)]


@pytest.mark.parametrize("grace, first_stop", [(2, 2), (3, 3)])
def test_a_poor_ce_trial_is_stopped_at_the_first_decision_step(make_cell, grace, first_stop):
    planner, pruner = make_cell("ce", epochs=8, grace=grace)
    ids = [f"t{i}" for i in range(4)]
    for trial_id in ids:
        assert planner.suggest(trial_id)["cell"] == "cnn1d_8-ce"
    for k, trial_id in enumerate(ids[:3]):  # three good trials, each better than the last: never stopped
        assert STOP not in feed(planner, pruner, trial_id, results([50 + 10 * k + e for e in range(8)]))
    poor = feed(planner, pruner, ids[3], results([10.0] * 8))
    assert poor == [CONTINUE] * (first_stop - 1) + [STOP]  # never before grace_epochs
    assert states(planner, "cnn1d_8-ce") == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"]
    pruned = planner.ledger.trials("cnn1d_8-ce")[3]
    assert pruned.value == 10.0 and list(pruned.intermediate_values) == [first_stop]


def test_a_poor_trial_between_rungs_runs_on_to_the_next_rung(make_cell):
    # decisions at final-phase epochs 2, 4, 8 only: a trial that stalls passes the cut at epoch
    # 2, falls behind at epoch 3 and is stopped at epoch 4
    planner, pruner = make_cell("ce", epochs=8)
    for i in range(4):
        planner.suggest(f"t{i}")
    for k in range(3):
        feed(planner, pruner, f"t{k}", results([50 + 10 * k + e for e in range(8)]))
    late = feed(planner, pruner, "t3", results([62.0] * 8))
    assert late == [CONTINUE, CONTINUE, CONTINUE, STOP]


# Annealing-KD cell, 12 epochs. Short schedules (tau_max 2 x 1 epoch) reach a good accuracy
# fast; the long one (tau_max 4 x 2 epochs) is poor for its whole phase 1 (the student
# regresses onto Phi(T) z_t, it is not trying to classify yet) and ends best of all.
SHORT = [60, 70] + [80, 82, 83, 84, 84, 85, 85, 85, 85, 85]
LONG = [20, 22, 25, 30, 35, 40, 45, 50] + [88, 90, 91, 92]


# grace 1: the first decision is at final-phase epoch 1, and a phase-1 epoch (final-phase epoch 0) is still none
@pytest.mark.parametrize("grace, seen", [(2, {2: 90}), (1, {1: 88, 2: 90})])
def test_a_long_annealing_schedule_is_not_pruned_on_its_phase_1_accuracy(make_cell, grace, seen):
    planner, pruner = make_cell("annealing", epochs=12, grace=grace)
    for i in range(4):
        planner.suggest(f"t{i}")
    for k in range(3):  # three short schedules, slightly different
        rows = results([v + k for v in SHORT], phase1_temperatures=[2, 1])
        assert STOP not in feed(planner, pruner, f"t{k}", rows)
    long = feed(planner, pruner, "t3", results(LONG, phase1_temperatures=[4, 4, 3, 3, 2, 2, 1, 1]))
    assert long == [CONTINUE] * 12  # ran its whole budget
    trials = planner.ledger.trials("cnn1d_8-annealing")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    best = max(trials, key=lambda t: t.value)
    assert best.number == 3 and best.value == 92
    # Optuna saw the long schedule only in its phase 2, at decision steps (its last, 4, is the end)
    assert trials[3].intermediate_values == seen


def test_a_poor_annealing_phase_2_is_pruned_against_phase_2_peers(make_cell):
    planner, pruner = make_cell("annealing", epochs=12)
    for i in range(4):
        planner.suggest(f"t{i}")
    for k in range(3):
        feed(planner, pruner, f"t{k}", results([v + k for v in SHORT], phase1_temperatures=[2, 1]))
    # a long schedule whose phase 2 stays poor: stopped at its 2nd phase-2 epoch, epoch 10
    poor = feed(planner, pruner, "t3", results(LONG[:8] + [30] * 4, phase1_temperatures=[4, 4, 3, 3, 2, 2, 1, 1]))
    assert poor == [CONTINUE] * 9 + [STOP]
    assert states(planner, "cnn1d_8-annealing")[3] == "PRUNED"


def test_the_median_pruner_stops_a_trial_below_the_median_only_at_decision_steps(make_cell):
    # smoke: 2 start-up trials; decisions at final-phase epochs 2, 4 and 8
    planner, pruner = make_cell("ce", epochs=8, grace=2, pruner="median")
    for i in range(5):
        planner.suggest(f"t{i}")
    assert STOP not in feed(planner, pruner, "t0", results([50.0] * 8))
    assert STOP not in feed(planner, pruner, "t1", results([60.0] * 8))
    # above the median of the two before it (55) at every decision step: runs to the end
    assert STOP not in feed(planner, pruner, "t2", results([56, 56, 56, 58, 58, 58, 58, 59]))
    # above the median of 50, 60, 56 at epoch 2, below that of 50, 60, 58 at epoch 4: stopped there
    assert feed(planner, pruner, "t3", results([57.0] * 8)) == [CONTINUE] * 3 + [STOP]
    assert states(planner, "cnn1d_8-ce")[:4] == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"]
    assert list(planner.ledger.trials("cnn1d_8-ce")[3].intermediate_values) == [2, 4]


def test_a_diverged_result_never_reaches_the_pruner_and_the_searcher_names_its_metric(make_cell):
    planner, pruner = make_cell("ce", epochs=8)
    assert (planner.metric, planner.mode) == ("best_val_acc", "max")  # what Tune sorts trials by
    for i in range(3):
        planner.suggest(f"t{i}")
        feed(planner, pruner, f"t{i}", results([80.0 + e for e in range(8)]))
    planner.suggest("bad")
    diverged = {**results([10.0] * 8)[1], "diverged": True}  # at a decision step, far below its peers
    assert pruner.on_trial_result(None, SimpleNamespace(trial_id="bad"), diverged) == CONTINUE
    assert list(planner.ledger.trials("cnn1d_8-ce")[3].intermediate_values) == []
    # a re-run's folder without a stage attribute is a re-run's, and one without a Tune id is nameless
    assert planner.folder("cnn1d_8-ce", "rerun", {}) == planner.folder("cnn1d_8-ce", "rerun", {"stage": "rerun",
                                                                                                "tune_trial": ""})
    assert "rerun" in planner.folder("cnn1d_8-ce", "rerun", {}).name


def test_only_running_search_trials_reach_the_pruner(make_cell):
    planner, pruner = make_cell("ce", epochs=8, trials=2)
    for i in range(2):
        planner.suggest(f"t{i}")
        feed(planner, pruner, f"t{i}", results([80.0 + e for e in range(8)]))
    rerun = planner.suggest("r0")
    assert rerun["stage"] == "rerun"
    # a re-run far below the search at every decision step runs to its end: re-runs are never pruned
    assert feed(planner, pruner, "r0", results([10.0] * 8)) == [CONTINUE] * 8
    assert planner.ledger.trials("cnn1d_8-ce", "rerun")[0].state.name == "COMPLETE"
    # a late result of a trial already told, at a decision step
    assert pruner.on_trial_result(None, SimpleNamespace(trial_id="t0"), results([10.0] * 8)[1]) == CONTINUE
    assert states(planner, "cnn1d_8-ce") == ["COMPLETE", "COMPLETE"]


@pytest.mark.parametrize("pruner", ["asha", "median"])
def test_a_cells_optuna_pruner_on_its_own_decides_first_at_grace(pruner):
    """The planner reports only at decision steps; the pruner itself holds the same rule, so
    neither hides a mistake in the other: fed every epoch, a poor trial is stopped at grace."""
    study = StudyConfig.preset("smoke").replace(pruner=pruner, grace_epochs=3, reduction_factor=2, startup_trials=2)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cell = optuna.create_study(direction="maximize", pruner=make_pruner(study))
    for k in range(3):
        trial = cell.ask()
        for step in range(1, 9):
            trial.report(50.0 + 10 * k + step, step)
            assert not trial.should_prune()  # ASHA records a rung's values when asked
        cell.tell(trial, 60.0 + 10 * k)
    poor, decisions = cell.ask(), []
    for step in range(1, 9):
        poor.report(10.0, step)
        decisions.append(poor.should_prune())
        if decisions[-1]:
            break
    assert decisions == [False, False, True]
