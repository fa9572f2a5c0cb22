"""CellPruner's rule with a real CellSearcher (one real OptunaSearch and Optuna ASHA pruner
per cell): when a poor trial may be stopped. Results are fed by hand, epoch by epoch, in the
form trials report them (an empty T as NaN); the Tune trial is stood in by its id."""
import math
from types import SimpleNamespace

import optuna
import pytest
from ray.tune.schedulers import TrialScheduler

from study.config import StudyConfig
from study.search import CellPruner, CellSearcher

EPOCHS = 8


def feed(pruner, trial_id, values, temperatures):
    """Reports epochs until the pruner stops the trial; returns the decisions made."""
    decisions = []
    for epoch, (value, T) in enumerate(zip(values, temperatures), start=1):
        next_T = temperatures[epoch] if epoch < len(temperatures) else None
        result = {"epoch": epoch, "best_val_acc": value, "T": math.nan if T is None else T,
                  "stage_end": T is not None and next_T != T, "finished": epoch == EPOCHS}
        decisions.append(pruner.on_trial_result(None, SimpleNamespace(trial_id=trial_id), result))
        if decisions[-1] == TrialScheduler.STOP:
            break
    if decisions[-1] != TrialScheduler.STOP:
        pruner.searcher.on_trial_complete(trial_id, {**result, "finished": True})
    return decisions


@pytest.mark.parametrize("method, temperatures, first_stop", [
    # no temperature schedule: stoppable from grace_epochs on
    ("ce", [None] * EPOCHS, 2),
    # tau_max 2, 3 epochs per stage: the first stage ends at epoch 3. ASHA decides at its
    # rungs (epochs 2, 4, 8): the stop it asks for at 2 is refused, the next comes at 4
    ("annealing", [2, 2, 2, 1, 1, 1, None, None], 4),
])
def test_a_poor_trial_is_stopped_after_grace_and_its_first_stage(method, temperatures, first_stop):
    study = StudyConfig.preset("smoke").replace(students=["cnn1d_8"], methods=[method], trials_per_cell=4,
                                                pruner="asha", grace_epochs=2, reduction_factor=2)
    searcher = CellSearcher(study, optuna.storages.InMemoryStorage(), "pruning")
    pruner = CellPruner(searcher, grace_epochs=study.grace_epochs)
    ids = [f"t{i}" for i in range(4)]
    for trial_id in ids:
        assert searcher.suggest(trial_id)["cell"] == f"cnn1d_8-{method}"
    # three good trials, each better than the last at every epoch: never stopped
    for k, trial_id in enumerate(ids[:3]):
        good = [50 + 10 * k + epoch for epoch in range(EPOCHS)]
        assert TrialScheduler.STOP not in feed(pruner, trial_id, good, temperatures)
    poor = feed(pruner, ids[3], [10.0] * EPOCHS, temperatures)
    assert poor == [TrialScheduler.CONTINUE] * (first_stop - 1) + [TrialScheduler.STOP]
    states = [t.state.name for t in searcher.cells[f"cnn1d_8-{method}"]._ot_study.get_trials()]
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "RUNNING"]  # told PRUNED on completion
    searcher.on_trial_complete(ids[3], {"epoch": first_stop, "best_val_acc": 10.0, "finished": False})
    assert searcher.cells[f"cnn1d_8-{method}"]._ot_study.get_trials()[3].state.name == "PRUNED"
