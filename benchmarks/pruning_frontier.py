"""What each pruning rule saves and what it costs, on every cell of a preset, from learning curves.

search_efficiency.py runs the study's own rule in live searches; this runs many rules on the same
configurations, offline. For each study seed and cell it trains `--configs` configurations drawn
at random from the cell's search space to the end, recording every epoch (with kd.train, in this
process, the preset's budget, data and teachers; kept in `--curves`, a JSON-lines file, so a
second run only simulates). Then, for every rule, the first `--trials` configurations of each cell
go one after the other through a real Optuna pruner, told the best validation score at the rule's
decision steps of the trial's final phase, as the study tells it (study/search.py): a trial the
pruner stops counts the epochs it ran.

Per rule it prints the epochs saved against running every configuration to the end, the pick's
cost (the best completed validation score minus the best of the same configurations run to the
end; over cells and seeds, with its standard error), the same for test scores, and the pick's
rank fraction among them. Random search, not TPE, proposes the configurations: the sampler is the
same for every rule, and the rule's own effect is what is measured.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import zlib
from collections import defaultdict
from pathlib import Path

from _common import machine_line, setup_device

import optuna
from optuna.trial import TrialState

from kd.data import load_data
from kd.train import DivergedError, train
from search_efficiency import prepare_teachers
from study.config import StudyConfig
from study.space import MethodSpace, corner_params
from study.teachers import roles_needed
from study.trainable import stored_bank

# (pruner, grace_epochs, reduction_factor): the study's rule and its neighbours
RULES = [("asha", 6, 2), ("asha", 6, 3), ("asha", 5, 2), ("asha", 4, 2), ("asha", 4, 3), ("asha", 3, 2),
         ("median", 6, 2), ("median", 4, 2)]


def collect(preset: StudyConfig, seeds: list[int], configs: int, path: Path, device) -> None:
    """Full curves of random configurations of every cell, appended to `path`."""
    have = {(r["seed"], r["cell"]) for r in read(path)}
    if all((seed, f"{s}-{m}") in have for seed in seeds for s, m in preset.cells):
        return
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "store"
        paths = prepare_teachers(preset, store, Path(folder))
        data = load_data(preset.train_config(preset.students[0], "ce")).to(device)
        banks = {m: stored_bank(preset.train_config(preset.students[0], m, **corner_params(preset, m, min))
                                .replace(**paths), str(store)) for m in preset.methods if m != "ce"}
        with open(path, "a") as out:
            for seed in seeds:
                study = preset.replace(seed=seed)
                for student, method in study.cells:
                    cell = f"{student}-{method}"
                    if (seed, cell) in have:
                        continue
                    needed = {f"{r}_checkpoint" for r in roles_needed(method)} | (
                        {"teacher_checkpoint"} if method == "takd" else set())
                    sampler = optuna.samplers.RandomSampler(seed=zlib.crc32(f"curves:{seed}:{cell}".encode()))
                    draw = optuna.create_study(sampler=sampler)
                    space = MethodSpace(study, method)
                    for number in range(configs):
                        trial = draw.ask()
                        params = space(trial)
                        draw.tell(trial, 0.0)
                        cfg = study.train_config(student, method, **params).replace(
                            **{k: v for k, v in paths.items() if k in needed})
                        curve = []
                        keep = ("epoch", "best_val_acc", "final_phase_epoch")
                        try:
                            result = train(cfg, report=lambda m, _: curve.append({k: m[k] for k in keep}),
                                           data=data, bank=banks.get(method))
                            row = {"val": result["best_val_acc"], "test": result["test_acc"]}
                        except DivergedError:
                            row = {"val": math.nan, "test": math.nan}
                        out.write(json.dumps({"seed": seed, "cell": cell, "number": number, "params": params,
                                              **row, "curve": curve}) + "\n")
                        out.flush()
                    print(f"curves: seed {seed} {cell}: {configs} configurations", flush=True)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def make_pruner(kind: str, grace: int, factor: int, startup: int) -> optuna.pruners.BasePruner:
    # the study's own construction (study/ledger.py make_pruner), for any grace and factor
    study = StudyConfig.preset("smoke").replace(pruner=kind, grace_epochs=grace, reduction_factor=factor,
                                                startup_trials=startup)
    from study.ledger import make_pruner as study_pruner
    return study_pruner(study)


def simulate(rows: list[dict], rule: tuple[str, int, int], preset: StudyConfig) -> list[tuple[int, bool, dict]]:
    """(epochs charged, completed, row) for each configuration, in order, under the rule."""
    kind, grace, factor = rule
    decide = set(preset.replace(pruner=kind, grace_epochs=grace, reduction_factor=factor).decision_steps)
    study = optuna.create_study(direction="maximize", pruner=make_pruner(kind, grace, factor, preset.startup_trials))
    out = []
    for row in rows:
        trial = study.ask()
        if math.isnan(row["val"]):
            study.tell(trial, state=TrialState.FAIL)
            out.append((max(1, len(row["curve"])), False, row))
            continue
        charged, stopped = 0, False
        for epoch in row["curve"]:
            charged += 1
            step = epoch["final_phase_epoch"]
            if step in decide and epoch["epoch"] < preset.epochs:
                trial.report(epoch["best_val_acc"], step)
                if trial.should_prune():
                    stopped = True
                    break
        if stopped:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, row["val"])
        out.append((charged, not stopped, row))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist1d")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--configs", type=int, default=32, help="configurations trained to the end per cell and seed")
    parser.add_argument("--trials", type=int, default=None, help="configurations per simulated search "
                        "(default: the preset's trials_per_cell)")
    parser.add_argument("--curves", default="pruning-curves.jsonl", help="curves file, reused when it has them")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    device = setup_device(args.device, args.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    preset = StudyConfig.preset(args.preset)
    preset = preset.replace(train={**preset.train, "device": device.type})
    trials = args.trials or preset.trials_per_cell
    if trials > args.configs:
        parser.error(f"--trials {trials} is not allowed; at most --configs ({args.configs})")
    print(f"pruning_frontier: preset {args.preset}, seeds {args.seeds}, {trials} of {args.configs} random "
          f"configurations per cell, {preset.epochs} epochs; {machine_line(device)}")
    collect(preset, args.seeds, args.configs, Path(args.curves), device)
    cells = defaultdict(list)
    for row in read(Path(args.curves)):
        if row["seed"] in args.seeds:
            cells[(row["seed"], row["cell"])].append(row)
    print(f"\n{'rule':<22}{'decisions':<14}{'saved':>7}{'val cost':>10}{'(se)':>7}{'test cost':>10}{'rank':>6}   per method: saved, val cost")
    for rule in RULES:
        per_method = defaultdict(lambda: {"charged": 0, "full": 0, "val": [], "test": [], "rank": []})
        for (seed, cell), rows in sorted(cells.items()):
            rows = sorted(rows, key=lambda r: r["number"])[:trials]
            outcome = simulate(rows, rule, preset)
            runs = [r for _, _, r in outcome if not math.isnan(r["val"])]
            done = [r for _, completed, r in outcome if completed]
            tally = per_method[cell.split("-", 1)[1]]
            tally["charged"] += sum(charged for charged, _, _ in outcome)
            tally["full"] += preset.epochs * len(outcome)
            if done:
                pick, best = max(done, key=lambda r: r["val"]), max(runs, key=lambda r: r["val"])
                tally["val"].append(pick["val"] - best["val"])
                tally["test"].append(pick["test"] - best["test"])
                tally["rank"].append((1 + sum(r["val"] > pick["val"] for r in runs)) / len(runs))
        every = {k: [x for t in per_method.values() for x in t[k]] for k in ("val", "test", "rank")}
        saved = sum(t["full"] for t in per_method.values()) / sum(t["charged"] for t in per_method.values())
        kind, grace, factor = rule
        steps = preset.replace(pruner=kind, grace_epochs=grace, reduction_factor=factor).decision_steps
        se = statistics.stdev(every["val"]) / math.sqrt(len(every["val"]))
        methods = "  ".join(f"{m} x{t['full'] / t['charged']:.2f} {statistics.mean(t['val']):+.2f}"
                            for m, t in per_method.items())
        print(f"{f'{kind} rf {factor}':<22}{str(steps):<14}{saved:>6.2f}x{statistics.mean(every['val']):>+10.2f}"
              f"{se:>7.2f}{statistics.mean(every['test']):>+10.2f}{statistics.mean(every['rank']):>6.2f}   {methods}")


if __name__ == "__main__":
    main()
