"""Search efficiency: our Optuna search with pruning vs random search without, same trials.

One MNIST-1D cell (default: student cnn1d_8, Annealing-KD, teacher cnn1d_64 trained once
into a temporary kd.store.TeacherStore), the study's search space for annealing on
MNIST-1D (tau_max 2..6, stage_epochs 1..2 with >= 4 phase-2 epochs, lr 0.01..0.3 log,
weight_decay 1e-5..1e-3 log) and the same epoch budget for every trial. Both arms run
kd.train.train in this process (no Ray) with the teacher's logits from one shared bank.

- arm A (ours): TPESampler(multivariate=True, constant_liar=True, seed, n_startup_trials
  as in the mnist1d preset: 8) + an Optuna pruner (default: SuccessiveHalvingPruner, i.e. ASHA,
  min_resource 3, reduction factor 2: rungs at epochs 3, 6, 12), told after every epoch the
  metric the study reports (best validation accuracy of the current phase); like the
  study's pruner adapter it never stops a trial before `--grace` epochs nor inside the
  trial's first temperature stage. Diverged trials count their epochs and are told FAIL.
- arm B: RandomSampler(seed) and no pruning: every trial runs its whole budget.

It prints both arms' epochs consumed and the best validation accuracy each reached (over
completed trials; the test accuracy of that trial is shown for context, never used). The
last line is `epoch_savings: X.XX` = epochs of arm B / epochs of arm A (summed over the
seeds when `--seeds` lists several; each seed is a separate pair of searches, with that
seed for the samplers and the training runs).

The best validation accuracy of a 24-trial search moves by one to two points between
seeds either way, so the default runs 12 seeds and prints the standard error of the mean
difference. The default student is cnn1d_8: cnn1d_4's runs are so seed-dependent that the
best of 24 full random runs is about a point above the best of 12 by luck alone, more than
the 0.5-point tolerance being measured (benchmarks/README.md has both cells).
"""
from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

from _common import machine_line, setup_device

import optuna

from kd.bank import get_or_build_bank
from kd.config import TrainConfig
from kd.data import load_data
from kd.store import TeacherStore
from kd.train import DivergedError, train
from study.config import StudyConfig
from study.search import make_pruner, make_sampler
from study.space import MethodSpace


class Pruned(Exception):
    pass


def run_arm(name: str, sampler, pruner, space: MethodSpace, base: TrainConfig, args, data, bank) -> dict:
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner, study_name=name)
    epochs_used = [0]
    rows = []

    def objective(trial: optuna.Trial) -> float:
        cfg = base.replace(**space(trial))
        last = [0]

        def report(metrics, save_state):
            epochs_used[0] += 1
            step = last[0] = metrics["epoch"]
            trial.report(metrics["best_val_acc"], step)  # the metric the study reports to Tune
            if step >= max(args.grace, cfg.stage_epochs) and not metrics["finished"] and trial.should_prune():
                rows.append((trial.number, "pruned", step, metrics["best_val_acc"], trial.params))
                raise Pruned

        try:
            result = train(cfg, report=report, data=data, bank=bank)
        except Pruned:
            raise optuna.TrialPruned() from None
        except DivergedError:  # a result, as in the study: told to Optuna as FAIL
            epochs_used[0] += 1  # the epoch in which it diverged was spent too
            rows.append((trial.number, "diverged", last[0] + 1, float("nan"), trial.params))
            raise
        rows.append((trial.number, "complete", result["epochs_run"], result["best_val_acc"], trial.params))
        trial.set_user_attr("test_acc", result["test_acc"])
        return result["best_val_acc"]

    started = time.perf_counter()
    study.optimize(objective, n_trials=args.trials, catch=(DivergedError,))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value)
    return {"epochs": epochs_used[0], "best_val": best.value, "best_test": best.user_attrs["test_acc"],
            "best_params": best.params, "complete": len(complete),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
            "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials),
            "seconds": time.perf_counter() - started, "rows": rows}


def study_cell(args, seed: int) -> StudyConfig:
    """The study's own configuration of this one cell: the mnist1d preset's search space,
    sampler and pruner settings, so arm A is exactly what `run_study.py` runs."""
    return StudyConfig.preset("mnist1d").replace(
        students=[args.student], methods=["annealing"], epochs=args.epochs, seed=seed,
        pruner="asha" if args.pruner == "hyperband" else args.pruner,  # hyperband: arm_a_pruner
        grace_epochs=args.grace, reduction_factor=args.reduction_factor,
        **({} if args.startup is None else {"startup_trials": args.startup}))


def arm_a_pruner(cell: StudyConfig, args) -> optuna.pruners.BasePruner:
    if args.pruner == "hyperband":
        # For comparison only: not a study option (benchmarks/README.md has why).
        return optuna.pruners.HyperbandPruner(min_resource=args.grace, max_resource=args.epochs,
                                              reduction_factor=args.reduction_factor)
    return make_pruner(cell)


def print_trials(arm: dict) -> None:
    for number, state, epochs, value, params in arm["rows"]:
        shown = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        print(f"   trial {number:>2} {state:<8} epochs {epochs:>2} val {value:6.2f}  {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=24, help="trials per arm")
    parser.add_argument("--epochs", type=int, default=20, help="epoch budget of every trial")
    parser.add_argument("--student", default="cnn1d_8")
    parser.add_argument("--teacher", default="cnn1d_64")
    parser.add_argument("--teacher-epochs", type=int, default=60)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--val-size", type=int, default=None, help="validation examples (default: the dataset's)")
    parser.add_argument("--pruner", default="asha", choices=("asha", "median", "hyperband"),
                        help="arm A's pruner: the study's asha or median, or Optuna's HyperbandPruner "
                             "(min_resource --grace, max_resource --epochs; not a study option)")
    parser.add_argument("--grace", type=int, default=3,
                        help="no pruning before this epoch (ASHA min_resource; median: warm-up)")
    parser.add_argument("--reduction-factor", type=int, default=2, help="ASHA reduction factor")
    parser.add_argument("--startup", type=int, default=None,
                        help="random TPE startup trials, and median-pruner startup (default: the mnist1d preset's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(12)),
                        help="one pair of searches per seed")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--store", default=None, help="teacher store (default: a temporary folder)")
    parser.add_argument("--verbose", action="store_true", help="print every trial")
    args = parser.parse_args()
    device = setup_device(args.device, args.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # diverged trials are counted, not logged
    startup = study_cell(args, 0).startup_trials
    pruner_text = {
        "asha": f"ASHA (SuccessiveHalvingPruner, min_resource {args.grace}, reduction factor {args.reduction_factor})",
        "hyperband": f"HyperbandPruner (min_resource {args.grace}, max_resource {args.epochs}, "
                     f"reduction factor {args.reduction_factor})",
        "median": f"MedianPruner (startup {startup}, from epoch {args.grace})"}[args.pruner]

    print(f"search_efficiency: MNIST-1D, student {args.student}, annealing, teacher {args.teacher}; "
          f"{args.trials} trials per arm, {args.epochs} epochs each, seeds {args.seeds}, {device}")
    print(f"arm A: TPE (multivariate, {startup} startup trials) + {pruner_text}; "
          f"arm B: random search, no pruning")
    print(machine_line(device))
    results = []
    with tempfile.TemporaryDirectory() as folder:
        store = TeacherStore(args.store or Path(folder) / "teachers")
        for seed in args.seeds:
            base = TrainConfig(model=args.student, method="annealing", teacher=args.teacher,
                               teacher_epochs=args.teacher_epochs, epochs=args.epochs,
                               num_samples=args.num_samples, val_size=args.val_size, device=device.type, seed=seed,
                               tau_max=2, stage_epochs=1).validate()
            started = time.perf_counter()
            base = store.resolve(base)  # one teacher for all seeds (teacher_seed is fixed)
            teacher_seconds = time.perf_counter() - started
            data = load_data(base).to(device)
            bank = get_or_build_bank(Path(base.teacher_checkpoint).parent, base.teacher_checkpoint, base,
                                     data=data)
            if seed == args.seeds[0]:
                print(f"teacher {args.teacher}: {teacher_seconds:.1f} s (trained once); {bank.describe()}, "
                      f"shared by every trial")
            cell = study_cell(args, seed)
            space = MethodSpace(cell, "annealing")
            arm_a = run_arm("tpe+pruning", make_sampler(cell, 0), arm_a_pruner(cell, args), space, base, args,
                            data, bank)
            arm_b = run_arm("random", optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner(),
                            space, base, args, data, bank)
            results.append((seed, arm_a, arm_b))

    print()
    print(f"{'seed':<6}{'arm':<32}{'epochs':>8}{'pruned':>8}{'diverged':>9}{'best val %':>12}"
          f"{'(its test %)':>14}{'seconds':>9}")
    for seed, arm_a, arm_b in results:
        for label, arm in (("A: TPE + pruner (ours)", arm_a), ("B: random, no pruning", arm_b)):
            print(f"{seed:<6}{label:<32}{arm['epochs']:>8}{arm['pruned']:>8}{arm['failed']:>9}"
                  f"{arm['best_val']:>12.2f}{arm['best_test']:>14.2f}{arm['seconds']:>9.1f}")
            if args.verbose:
                print_trials(arm)
        print(f"{'':<6}A - B: best val {arm_a['best_val'] - arm_b['best_val']:+.2f} points, "
              f"epochs x{arm_b['epochs'] / arm_a['epochs']:.2f} fewer; best A params {arm_a['best_params']}")
    epochs_a = sum(a["epochs"] for _, a, _ in results)
    epochs_b = sum(b["epochs"] for _, _, b in results)
    diffs = [a["best_val"] - b["best_val"] for _, a, b in results]
    diff = statistics.mean(diffs)
    spread = (f", standard error {statistics.stdev(diffs) / math.sqrt(len(diffs)):.2f} over {len(diffs)} seeds"
              if len(diffs) > 1 else "")
    print(f"total: A {epochs_a} epochs, B {epochs_b} epochs; mean best val difference A - B {diff:+.2f} "
          f"points{spread} (validation set of {len(data.val_x)}: one example = {100 / len(data.val_x):.2f} points)")
    print(f"epoch_savings: {epochs_b / epochs_a:.2f}")


if __name__ == "__main__":
    main()
