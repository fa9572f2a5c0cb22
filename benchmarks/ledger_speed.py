"""The study's ledger on Optuna's journal file against SQLite: time per trial of what the
driver does for one search trial (ask with the cell's TPE sampler, report at the default
study's four decision steps with a should_prune each, tell), in the same process.

    python benchmarks/ledger_speed.py [--trials 60]

The last line is `journal_speedup: X.XX` = SQLite's time per trial / the journal's.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import machine_line, setup_device

import optuna

DECISION_STEPS = (2, 4, 8, 16)


def time_storage(storage, trials: int) -> float:
    """Median seconds per trial over `trials` trials of a fresh study in `storage`."""
    study = optuna.create_study(storage=storage, study_name="cell", direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0, multivariate=True,
                                                                   constant_liar=True, n_startup_trials=8),
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=2))
    times = []
    for _ in range(trials):
        started = time.perf_counter()
        trial = study.ask()
        lr = trial.suggest_float("lr", 0.02, 1.0, log=True)
        trial.suggest_float("weight_decay", 1e-5, 1e-3, log=True)
        value = 50 + 10 * lr
        for step in DECISION_STEPS:
            trial.report(value + step / 10, step)
            if trial.should_prune():
                break
        study.tell(trial, value)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=60)
    args = parser.parse_args()
    device = setup_device("cpu", 1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    print(machine_line(device))
    with tempfile.TemporaryDirectory() as folder:
        journal = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(Path(folder) / "optuna-journal.log")))
        sqlite = optuna.storages.RDBStorage(f"sqlite:///{Path(folder) / 'optuna.db'}")
        journal_s = time_storage(journal, args.trials)
        sqlite_s = time_storage(sqlite, args.trials)
    print(f"per trial (ask, {len(DECISION_STEPS)} reports and should_prune, tell), median of {args.trials}: "
          f"journal {1000 * journal_s:.1f} ms, SQLite {1000 * sqlite_s:.1f} ms")
    print(f"journal_speedup: {sqlite_s / journal_s:.2f}")


if __name__ == "__main__":
    main()
