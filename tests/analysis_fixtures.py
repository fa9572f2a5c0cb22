"""Synthetic experiment directories in the exact format the study writes (no Ray, no training).

`write_synthetic_experiment` draws every number from a seeded RNG and derives the summary
from the per-epoch progress it writes, so the two files agree the way a real study's do:
summary best_val_acc/test_acc are the last progress row's best_val_acc/selected_test_acc.
`make_partial` turns a finished directory into what an interrupted study leaves behind.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

# CIFAR-100 parameter counts with option-B shortcuts (SPEC §3).
PARAMS = {"resnet8": 83_892, "resnet14": 181_108, "resnet20": 278_324, "resnet32": 472_756,
          "resnet56": 861_620, "resnet110": 1_736_564}
STUDENT_ACC = {"resnet8": 60.0, "resnet14": 64.0, "resnet20": 67.0, "resnet32": 69.0}
METHOD_BONUS = {"ce": 0.0, "kd": 0.4, "takd": 0.6, "annealing": 1.5, "continuation": 2.0}
TEACHER_ACC = 71.9
SUMMARY_COLUMNS = [
    "trial_id", "stage", "cell", "dataset", "method", "teacher", "student", "assistant",
    "teacher_params", "student_params", "capacity_ratio", "teacher_test_acc", "seed", "config",
    "tau_max", "stage_epochs", "lr", "weight_decay", "temperature", "alpha", "psi_epochs", "margin",
    "status", "reason", "best_val_acc", "test_acc", "epochs_run", "epochs_budget", "seconds", "node",
    "trial_dir", "audit",
]
HPARAMS = ("tau_max", "stage_epochs", "lr", "weight_decay", "temperature", "alpha", "psi_epochs", "margin")


def write_synthetic_experiment(path, *, name: str = "synthetic", dataset: str = "cifar100",
                               teacher: str = "resnet110", students=("resnet8", "resnet20"),
                               methods=("ce", "kd", "annealing"), search_trials: int = 4,
                               rerun_seeds: int = 3, epochs: int = 12, seed: int = 0,
                               audits: bool = True) -> Path:
    """A finished study: per cell `search_trials` trials (index 1 pruned; the last trial of the
    first distillation cell failed), `rerun_seeds` re-runs of the best config, one audit re-run
    of each cell's pruned config; progress.csv for every trial that ran an epoch."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    seed_effect = {s: rng.normal(0, 0.3) for s in range(1, rerun_seeds + 1)}  # shared: pairing matters
    rows = []
    failed_cell = next((f"{students[0]}-{m}" for m in methods if m != "ce"), None)
    cells = [(student, method) for student in students for method in methods]
    for cell_index, (student, method) in enumerate(cells):
        cell = f"{student}-{method}"
        base = STUDENT_ACC.get(student, 62.0) + METHOD_BONUS.get(method, 0.0)
        search = []
        for i in range(search_trials):
            status = "pruned" if i == 1 else "completed"
            if cell == failed_cell and i == search_trials - 1:
                status = "failed"
            hp = _sample_config(method, epochs, rng)
            final = base - 3.0 * abs(math.log10(hp["lr"] / 0.1)) + rng.normal(0, 0.4)
            run = {"completed": epochs, "pruned": epochs // 3, "failed": 3}[status]
            row = _trial(root, rng, name=f"{cell}_search_{i:03d}", stage="search", cell=cell,
                         method=method, student=student, hp=hp, final=final, run=run,
                         epochs=epochs, status=status, seed=seed, dataset=dataset, teacher=teacher)
            search.append(row)
        rows += search
        done = [r for r in search if r["status"] == "completed"]
        best = max(done, key=lambda r: r["best_val_acc"])
        best_hp = json.loads(best["config"])
        best_final = best["best_val_acc"]
        for s in range(1, rerun_seeds + 1):
            rows.append(_trial(root, rng, name=f"{cell}_rerun_seed{s}", stage="rerun", cell=cell,
                               method=method, student=student, hp=best_hp,
                               final=best_final + seed_effect[s] + rng.normal(0, 0.2), run=epochs,
                               epochs=epochs, status="completed", seed=s, dataset=dataset,
                               teacher=teacher))
        if audits:
            for j, pruned in enumerate(r for r in search if r["status"] == "pruned"):
                # Alternate between audits that would and would not have beaten the best.
                delta = 0.8 if (cell_index + j) % 2 else -1.5
                rows.append(_trial(root, rng, name=f"{cell}_audit_{j:03d}", stage="audit", cell=cell,
                                   method=method, student=student, hp=json.loads(pruned["config"]),
                                   final=best_final + delta, run=epochs, epochs=epochs,
                                   status="completed", seed=seed, dataset=dataset, teacher=teacher))
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    summary.to_csv(root / "summary.csv", index=False)
    teachers = [{"role": "teacher", "arch": teacher, "params": PARAMS.get(teacher, 1_000_000),
                 "best_val_acc": TEACHER_ACC + 0.4, "test_acc": TEACHER_ACC, "epochs": 2 * epochs,
                 "seconds": 120.0}]
    pd.DataFrame(teachers).to_csv(root / "teachers.csv", index=False)
    info = {
        "name": name, "preset": "synthetic",
        # The shape run_study.py writes (study/config.py StudyConfig.to_dict()).
        "config": {"dataset": dataset, "data_dir": None, "teacher": teacher, "assistant": None,
                   "students": list(students), "methods": list(methods), "epochs": epochs,
                   "trials_per_cell": search_trials, "rerun_seeds": rerun_seeds, "audit_pruned": int(audits),
                   "search": {}, "pruner": "asha", "grace_epochs": 2, "startup_trials": 2,
                   "train": {"val_size": 5000, "teacher_epochs": 2 * epochs}, "cpus_per_trial": 1,
                   "gpus_per_trial": 0, "max_concurrent": None, "max_failures": 2, "seed": seed},
        "versions": {"python": "3.11.9", "torch": "2.14.1", "ray": "2.60.0", "optuna": "5.0.0",
                     "pandas": "3.1.1"},
        "git_revision": "0123456789abcdef0123456789abcdef01234567",
        "hardware": {"cpus": 2, "gpus": 0, "gpu_names": [], "nodes": 1},
        "started": "2026-01-05T10:00:00", "finished": "2026-01-05T11:30:00", "status": "finished",
    }
    (root / "study.json").write_text(json.dumps(info, indent=2))
    return root


def make_partial(path) -> None:
    """What an interrupted study leaves: status running, two progress files never written,
    a trial still running, and the last cell without any re-runs."""
    root = Path(path)
    info = json.loads((root / "study.json").read_text())
    info.update(status="running", finished=None)
    (root / "study.json").write_text(json.dumps(info))
    summary = pd.read_csv(root / "summary.csv", keep_default_na=False)
    last_cell = summary["cell"].iloc[-1]
    summary = summary[~((summary["cell"] == last_cell) & (summary["stage"] != "search"))].copy()
    search = summary.index[summary["stage"] == "search"]
    for idx in search[:2]:
        (root / summary.at[idx, "trial_dir"] / "progress.csv").unlink()
    summary.loc[search[2], ["status", "best_val_acc", "test_acc"]] = ["running", "", ""]
    summary.to_csv(root / "summary.csv", index=False)


def _sample_config(method: str, epochs: int, rng) -> dict:
    hp = {"lr": float(10 ** rng.uniform(-2, -0.7)), "weight_decay": float(10 ** rng.uniform(-4.5, -3))}
    if method in ("kd", "takd"):
        hp.update(temperature=float(rng.choice([2.0, 4.0, 8.0])), alpha=float(rng.uniform(0.1, 1.0)))
    if method in ("annealing", "continuation"):
        # Leave at least one phase-2 epoch: tau_max x stage_epochs < epochs.
        hp.update(tau_max=int(rng.integers(2, 5)), stage_epochs=int(rng.integers(1, 3)))
    if method == "continuation":
        hp.update(psi_epochs=epochs // 2, margin=float(rng.uniform(0, 1)))
    return hp


def _trial(root: Path, rng, *, name, stage, cell, method, student, hp, final, run, epochs, status,
           seed, dataset, teacher) -> dict:
    trial_dir = f"{stage}/{cell}/{name}"
    # Trials start one after another, as in a study with one trial slot.
    start = 1_767_607_200 + 60 * sum(1 for _ in root.glob("*/*/*/progress.csv"))
    progress = _progress(method, hp, run, epochs, final, rng, name, start)
    (root / trial_dir).mkdir(parents=True, exist_ok=True)
    progress.to_csv(root / trial_dir / "progress.csv", index=False)
    last = progress.iloc[-1]
    ok = status != "failed"
    reason = {"completed": "", "pruned": f"pruned at epoch {run}",
              "failed": f"diverged: loss became nan at epoch {run + 1}"}[status]
    return {
        "trial_id": name, "stage": stage, "cell": cell, "dataset": dataset, "method": method,
        "teacher": teacher, "student": student, "assistant": "",
        "teacher_params": PARAMS.get(teacher, 1_000_000), "student_params": PARAMS.get(student, 100_000),
        "capacity_ratio": PARAMS.get(teacher, 1_000_000) / PARAMS.get(student, 100_000),
        "teacher_test_acc": TEACHER_ACC, "seed": seed, "config": json.dumps(hp),
        **{k: hp.get(k, "") for k in HPARAMS},
        "status": status, "reason": reason,
        "best_val_acc": float(last["best_val_acc"]) if ok else "",
        "test_acc": float(last["selected_test_acc"]) if ok else "",
        "epochs_run": run, "epochs_budget": epochs, "seconds": float(progress["time_total_s"].iloc[-1]),
        "node": "10.0.0.1", "trial_dir": trial_dir, "audit": stage == "audit",
    }


def _progress(method, hp, run, epochs, final, rng, trial_id, start) -> pd.DataFrame:
    """One row per epoch, with the schedule and running selection exactly as kd.train reports them."""
    phase1 = hp["tau_max"] * hp["stage_epochs"] if method in ("annealing",) else epochs
    rows, best, total = [], None, 0.0
    for epoch in range(1, run + 1):
        phase = 1 if epoch <= phase1 else 2
        phase_epoch = epoch if phase == 1 else epoch - phase1
        if phase == 2 and phase_epoch == 1:
            best = None  # selection restarts in every phase
        T = phi = None
        if method == "annealing" and phase == 1:
            T = hp["tau_max"] - (phase_epoch - 1) // hp["stage_epochs"]
            phi = 1 - (T - 1) / hp["tau_max"]
        val = final - (final - 10) * math.exp(-epoch / 2.5) + rng.normal(0, 0.3)
        test = val + rng.normal(-0.3, 0.3)
        if best is None or val > best[0]:
            best = (val, test, epoch)
        seconds = float(rng.uniform(0.8, 1.2))
        total += seconds
        next_T = None
        if method == "annealing" and phase == 1 and phase_epoch < phase1:
            next_T = hp["tau_max"] - phase_epoch // hp["stage_epochs"]
        stage_end = (phase == 1 and (phase_epoch == phase1 or next_T != T)) or epoch == epochs
        term = "mse" if method == "annealing" and phase == 1 else ("kl" if method in ("kd", "takd") else "ce")
        loss = float(2.0 * math.exp(-epoch / 4) + 0.1)
        rows.append({
            "epoch": epoch, "phase": phase,
            "phase_name": {"annealing": ("anneal", "finetune")}.get(method, ("train", "train"))[phase - 1],
            "phase_epoch": phase_epoch, "T": T, "phi": phi, "psi": None, "lr": hp["lr"],
            "train_loss": loss, f"loss_{term}": loss, "val_acc": val, "test_acc": test,
            "best_val_acc": best[0], "selected_test_acc": best[1], "selected_epoch": best[2],
            "stage_end": stage_end, "done": epoch == epochs, "epoch_seconds": seconds,
            "samples_per_s": 45_000 / seconds,
            # Tune's own columns.
            "trial_id": trial_id, "training_iteration": epoch, "time_total_s": total,
            "timestamp": start + int(total), "node_ip": "10.0.0.1", "time_this_iter_s": seconds,
            "pid": 4242, "hostname": "node-0", "date": "2026-01-05_10-00-00",
        })
    return pd.DataFrame(rows)
