"""Search efficiency and selection bias of the study's search, on every cell of a preset.

For each cell (student x method) of the preset (default: mnist1d, the default study) and
each seed, two searches of `trials_per_cell` trials over the cell's search space, with the
preset's epoch budget, teachers and data, run by kd.train in this process (no Ray):

- arm A (the study's search): the cell's sampler (study/ledger.py `make_sampler`: TPE,
  multivariate, the preset's start-up trials, seeded from the cell's name) and its pruner
  (`make_pruner`), told the best validation accuracy at the study's decision steps of the
  trial's final phase (study/search.py, the pruning rule). A trial the pruner stops is
  told PRUNED there, as in the study, and counts the epochs it had run; it is then trained
  on to the end off the books, so the pick can be ranked among the same configurations
  run to completion.
- arm B: random search (RandomSampler) without pruning: every trial runs its budget.

Per cell it prints the epochs each arm spent (A's up to its pruning points), the best
validation accuracy each arm found (over its completed trials, as the study selects), and
the rank of A's pick among A's configurations run to completion (1 = best; diverged ones
left out). The summary gives the epoch ratio B / A, the mean best-validation difference
A - B with its standard error over cells and seeds, and the mean rank fraction (rank / n;
the study's target: at most 0.25, a pick in the top quarter). The test set plays no part in
either search; the test score of each arm's pick is printed after it, as the unbiased measure
of what the pick is worth (a best validation score is the maximum of noisy scores, and the
arm that completes more trials takes the maximum over more of them).

Teachers (and TAKD's assistant) are trained once into a teacher store, as the study's
teacher stage does (study/teachers.py `prepare_role`, with its logit banks).
"""
from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import zlib
from pathlib import Path

from _common import machine_line, setup_device

import optuna
from optuna.trial import TrialState

from kd.data import load_data
from kd.train import DivergedError, train
from study.config import StudyConfig
from study.ledger import make_pruner, make_sampler
from study.space import MethodSpace, corner_params
from study.teachers import prepare_role, roles_needed
from study.trainable import stored_bank


def run_trial(cfg, data, bank, decide, trial=None) -> dict:
    """One configuration to its end. With `trial`, reports at the decision steps until the
    pruner says stop; `charged` counts the epochs up to that point (the search's cost)."""
    state = {"charged": 0, "pruned_at": None, "epoch": 0}

    def report(metrics, save_state):
        state["epoch"] = metrics["epoch"]
        if state["pruned_at"] is None:
            state["charged"] += 1
            step = metrics["final_phase_epoch"]
            if trial is not None and step in decide and not metrics["finished"]:
                trial.report(metrics["best_val_acc"], step)
                if trial.should_prune():
                    state["pruned_at"] = metrics["epoch"]

    try:
        result = train(cfg, report=report, data=data, bank=bank)
    except DivergedError:
        if state["pruned_at"] is None:
            state["charged"] += 1  # the epoch in which it diverged was spent too
        return {**state, "value": math.nan, "diverged": True}
    return {**state, "value": result["best_val_acc"], "test": result["test_acc"], "diverged": False}


def search(study: StudyConfig, cell: str, method: str, sampler, pruner, build, data, banks) -> list[dict]:
    optuna_study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    space = MethodSpace(study, method)
    decide = set(study.decision_steps) if not isinstance(pruner, optuna.pruners.NopPruner) else set()
    rows = []
    for _ in range(study.trials_per_cell):
        trial = optuna_study.ask()
        params = space(trial)
        cfg = build(params)
        row = run_trial(cfg, data, banks.get(method), decide, trial if decide else None)
        if row["diverged"] and row["pruned_at"] is None:
            optuna_study.tell(trial, state=TrialState.FAIL)
        elif row["pruned_at"] is not None:
            optuna_study.tell(trial, state=TrialState.PRUNED)
        else:
            optuna_study.tell(trial, row["value"])
        rows.append({**row, "params": params})
    return rows


def pick_rank(rows: list[dict]) -> tuple[int, int] | None:
    """Rank of the search's pick (its best completed trial) among its configurations run to
    completion, and how many there were."""
    completed = [r for r in rows if r["pruned_at"] is None and not r["diverged"]]
    finished = sorted((r["value"] for r in rows if not r["diverged"]), reverse=True)
    if not completed:
        return None
    pick = max(completed, key=lambda r: r["value"])["value"]
    return 1 + sum(v > pick for v in finished), len(finished)


def best_completed(rows: list[dict], pruned_too: bool = False, score: str = "value") -> float:
    """Best validation score of the trials the search completed (with `pruned_too`: of all
    its configurations, run to completion); with score="test", the test score of that trial."""
    candidates = [r for r in rows if (pruned_too or r["pruned_at"] is None) and not r["diverged"]]
    return max(candidates, key=lambda r: r["value"])[score] if candidates else math.nan


def prepare_teachers(study: StudyConfig, store: Path, folder: Path) -> dict[str, str]:
    """The roles' checkpoints, as the study's teacher stage trains them (with their banks)."""
    paths, rows = {}, {}
    for role in ("teacher", "assistant"):
        if role == "assistant" and "takd" not in study.methods:
            continue
        started = time.perf_counter()
        rows[role] = prepare_role(study.to_dict(), role, str(store), str(folder / f"{role}.json"),
                                  rows.get("teacher"))
        paths[f"{role}_checkpoint"] = rows[role]["path"]
        print(f"{role} {rows[role]['arch']}: val {rows[role]['best_val_acc']:.2f}, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist1d")
    parser.add_argument("--cells", nargs="+", default=None, metavar="STUDENT-METHOD",
                        help="only these cells (default: every cell of the preset)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="study seeds: one pair of searches each")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--store", default=None, help="teacher store (default: a temporary folder)")
    args = parser.parse_args()
    device = setup_device(args.device, args.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    preset = StudyConfig.preset(args.preset)
    base = preset.replace(train={**preset.train, "device": device.type})
    cells = [(s, m) for s, m in base.cells if args.cells is None or f"{s}-{m}" in args.cells]
    print(f"search_efficiency: preset {args.preset}, {len(cells)} cells, {base.trials_per_cell} trials per arm, "
          f"{base.epochs} epochs each, seeds {args.seeds}, {device}")
    print(f"arm A: TPE ({base.startup_trials} start-up trials) + {base.pruner} deciding at final-phase epochs "
          f"{base.decision_steps}; arm B: random search, no pruning")
    print(machine_line(device))
    results = []
    with tempfile.TemporaryDirectory() as folder:
        store = Path(args.store or Path(folder) / "store")
        paths = prepare_teachers(base, store, Path(folder))
        probe = base.train_config(base.students[0], "ce")
        data = load_data(probe).to(device)
        banks = {}
        for method in base.methods:
            if method != "ce":
                cfg = base.train_config(base.students[0], method, **corner_params(base, method, min)).replace(**paths)
                banks[method] = stored_bank(cfg, str(store))
        print(f"{'seed':<5}{'cell':<26}{'A epochs':>9}{'B epochs':>9}{'A pruned':>9}{'A best':>8}{'B best':>8}"
              f"{'A - B':>7}{'pick rank':>10}{'s':>6}", flush=True)
        for seed in args.seeds:
            study = base.replace(seed=seed)
            for student, method in cells:
                cell = f"{student}-{method}"
                needed = {f"{r}_checkpoint" for r in roles_needed(method)}
                if method == "takd":
                    needed.add("teacher_checkpoint")

                def build(params, student=student, method=method, needed=needed):
                    return study.train_config(student, method, **params).replace(
                        **{k: v for k, v in paths.items() if k in needed})

                started = time.perf_counter()
                arm_a = search(study, cell, method, make_sampler(study, cell), make_pruner(study), build, data, banks)
                arm_b = search(study, cell, method, optuna.samplers.RandomSampler(seed=zlib.crc32(
                    f"random:{seed}:{cell}".encode())), optuna.pruners.NopPruner(), build, data, banks)
                rank = pick_rank(arm_a)
                row = {"seed": seed, "cell": cell, "a_epochs": sum(r["charged"] for r in arm_a),
                       "b_epochs": sum(r["charged"] for r in arm_b),
                       "a_pruned": sum(r["pruned_at"] is not None for r in arm_a),
                       "a_best": best_completed(arm_a), "a_full": best_completed(arm_a, pruned_too=True),
                       "b_best": best_completed(arm_b), "rank": rank,
                       "a_test": best_completed(arm_a, score="test"), "b_test": best_completed(arm_b, score="test")}
                results.append(row)
                rank_text = f"{rank[0]} of {rank[1]}" if rank else "-"
                print(f"{seed:<5}{cell:<26}{row['a_epochs']:>9}{row['b_epochs']:>9}{row['a_pruned']:>9}"
                      f"{row['a_best']:>8.2f}{row['b_best']:>8.2f}{row['a_best'] - row['b_best']:>+7.2f}"
                      f"{rank_text:>10}{time.perf_counter() - started:>6.0f}", flush=True)

    diffs = [r["a_best"] - r["b_best"] for r in results if not math.isnan(r["a_best"] - r["b_best"])]
    fractions = [r["rank"][0] / r["rank"][1] for r in results if r["rank"]]
    epochs_a = sum(r["a_epochs"] for r in results)
    epochs_b = sum(r["b_epochs"] for r in results)
    print()
    print("per method (over students and seeds):")
    for method in base.methods:
        mine = [r for r in results if r["cell"].endswith(f"-{method}")]
        if not mine:
            continue
        d = [r["a_best"] - r["b_best"] for r in mine]
        f = [r["rank"][0] / r["rank"][1] for r in mine if r["rank"]]
        print(f"  {method:<13} epochs x{sum(r['b_epochs'] for r in mine) / sum(r['a_epochs'] for r in mine):.2f} "
              f"fewer, best val A - B {statistics.mean(d):+.2f}, pick rank fraction {statistics.mean(f):.2f}")
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    # A - B in two parts: what pruning cost (A's pick against the best of its own configurations
    # run to completion) and what the sampler's configurations were worth against random ones
    pruning = [r["a_best"] - r["a_full"] for r in results if not math.isnan(r["a_best"] - r["a_full"])]
    sampling = [r["a_full"] - r["b_best"] for r in results if not math.isnan(r["a_full"] - r["b_best"])]
    print(f"A - B = pruning {statistics.mean(pruning):+.2f} (A's pick - best of A's configurations run to "
          f"completion) + sampler {statistics.mean(sampling):+.2f} (best of A's configurations - best of B's)")
    print(f"total: A {epochs_a} epochs, B {epochs_b}; best val A - B {statistics.mean(diffs):+.2f} points "
          f"(standard error {se:.2f} over {len(diffs)} cell searches; one validation example = "
          f"{100 / len(data.val_x):.2f} points); mean pick rank fraction {statistics.mean(fractions):.2f} "
          f"(rank / configurations run to completion; 1/n = the best)")
    tests = [r["a_test"] - r["b_test"] for r in results if not math.isnan(r["a_test"] - r["b_test"])]
    print(f"test score of the pick, A - B: {statistics.mean(tests):+.2f} points (standard error "
          f"{statistics.stdev(tests) / math.sqrt(len(tests)) if len(tests) > 1 else math.nan:.2f}; the "
          f"best validation score is a maximum over noisy scores and favours the arm with more completed "
          f"trials, the test score of each pick does not)")
    print(f"epoch_savings: {epochs_b / epochs_a:.2f}")


if __name__ == "__main__":
    main()
