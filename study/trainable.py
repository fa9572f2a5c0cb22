"""The Tune function trainable: one kd.train run, as the planner suggested it.

A trial keeps everything in its folder on the shared storage, <experiment>/trials/<name>:
every epoch's metrics (epochs.jsonl, the learning curves), its training state (state.pt,
written at every temperature-stage and phase end and every `checkpoint_every` epochs), and
its final result (final.json). A trial that starts again (its worker or node died, and Tune
retried it; or it replaces a trial of an interrupted session, `resume_from`) continues from
the last state it finds. Teachers and banks are read by path from the shared storage.

Tune and Optuna hear from a trial only where a decision or a checkpoint needs it: at the
pruner's decision steps (search trials), at checkpoints and at the end. A report is a round
trip through the driver (scheduler, loggers, the Optuna storage), which on small models
costs as much as an epoch.
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from kd.train import DivergedError, train
from study.config import StudyConfig

TRIALS_FOLDER = "trials"
STATE_FILE, EPOCHS_FILE, FINAL_FILE = "state.pt", "epochs.jsonl", "final.json"


def run_config(study: StudyConfig, run: dict[str, Any], poll_seconds: float = 0.5):
    """The run's TrainConfig with its teachers' checkpoints, and the seconds it waited for
    them: a trial may start before its teacher is ready (study/search.py) and waits here for
    the role's row file. The wait is not work: the summary leaves it out of a trial's time."""
    cfg = study.train_config(run["student"], run["method"], seed=run.get("seed", study.seed), **run["params"])
    started, checkpoints = time.monotonic(), {}
    for field, row_file in run.get("teacher_rows", {}).items():
        while not Path(row_file).is_file():
            time.sleep(poll_seconds)
        checkpoints[field] = json.loads(Path(row_file).read_text())["path"]
    return cfg.replace(**checkpoints), time.monotonic() - started


def trial_dirname(trial) -> str:
    """Short, readable trial folders: <cell>_<stage>_<trial id> (Tune's default embeds every
    parameter and overflows path limits on real search spaces)."""
    return _dirname(trial.config, trial.trial_id)


def _dirname(run: dict[str, Any], trial_id: str) -> str:
    # Hugging Face names carry "/" and ":" (hf:google/bert_uncased_L-2_H-128_A-2): one folder level.
    cell = re.sub(r"[^A-Za-z0-9._=-]+", "_", str(run.get("cell", "trial")))
    return f"{cell}_{run.get('stage', '')}_{trial_id}"


def trial_folder(exp_dir: str, run: dict[str, Any], trial_id: str) -> Path:
    """The trial's folder in the experiment (on the shared storage, seen by every node)."""
    return Path(exp_dir) / TRIALS_FOLDER / _dirname(run, trial_id)


def stored_bank(cfg, bank_root: str):
    """The teacher bank the teacher stage built into the storage, memory-mapped; None when
    there is none (bank off, or over bank_memory_gb: then train() runs the teacher live)."""
    from kd.bank import bank_key, bank_path, load_bank

    if not cfg.teacher_bank or cfg.method == "ce":
        return None
    source = cfg.assistant_checkpoint if cfg.method == "takd" else cfg.teacher_checkpoint
    key = bank_key(source, cfg)
    path = bank_path(bank_root, key)
    # the teacher stage verified the checksum once; trials check the size and the key
    return load_bank(path, mmap=True, verify=False, expected_key=key) if path.is_file() else None


def with_stored_bank(cfg, bank_root: str):
    """cfg and its bank. Without a stored bank the trial runs the teacher live rather than
    building a bank of its own (on CIFAR that costs ~162 teacher epochs per trial)."""
    bank = stored_bank(cfg, bank_root)
    if bank is None and cfg.teacher_bank:
        cfg = cfg.replace(teacher_bank=False)
    return cfg, bank


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    # Tune's loggers and the analysis read NaN more easily than None.
    return {k: (math.nan if v is None else v) for k, v in metrics.items()}


def last_state(folder: Path, resume_from: str | None) -> Path | None:
    """The state to continue from: the trial's own (Tune retried it), else the one of the
    trial it replaces."""
    for candidate in (folder, Path(resume_from) if resume_from else None):
        if candidate is not None and (candidate / STATE_FILE).is_file():
            return candidate / STATE_FILE
    return None


class StorageNotShared(RuntimeError):
    """This node does not see the experiment folder the driver writes."""


def check_storage_here(exp_dir: str) -> None:
    """Every trial writes into the experiment folder on the shared storage: a node that does not
    mount it would write to a folder of its own, and its results would never reach the study. The
    driver's study.json is the sign the folder is the shared one."""
    if not (Path(exp_dir) / "study.json").is_file():
        node = f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"
        raise StorageNotShared(f"storage: node {node} cannot see the study's storage {exp_dir} (no study.json "
                               f"there); mount the shared storage at the same path on every node")


def run_trial(config: dict[str, Any], study_values: dict[str, Any], exp_dir: str,
              bank_root: str) -> None:
    check_storage_here(exp_dir)  # before anything is written or trained
    trial_id = tune.get_context().get_trial_id()
    folder = trial_folder(exp_dir, config, trial_id)
    final = folder / FINAL_FILE
    if final.is_file():  # finished before its driver could record it: report the result again
        tune.report({**json.loads(final.read_text()), "replayed": True})
        return
    study = StudyConfig(**study_values)
    torch.set_num_threads(max(1, int(study.cpus_per_trial)))  # no oversubscription of shared cores
    cfg, waited = run_config(study, config)
    cfg, bank = with_stored_bank(cfg, bank_root)
    decide_at = set(study.decision_steps) if config["stage"] == "search" else set()
    resume_from = last_state(folder, config.get("resume_from"))
    folder.mkdir(parents=True, exist_ok=True)
    node_id = ray.get_runtime_context().get_node_id()
    last: dict[str, Any] = {}

    def report(metrics: dict[str, Any], save_state) -> None:
        last.update(metrics)
        metrics = {**_clean(metrics), "node_id": node_id, "pid": os.getpid(), "teacher_wait_s": waited}
        with open(folder / EPOCHS_FILE, "a") as f:  # a resumed trial repeats epochs: the last row wins
            f.write(json.dumps(metrics) + "\n")
        if metrics["finished"]:
            final.write_text(json.dumps(metrics))
            tune.report(metrics)
            return
        if metrics["stage_end"] or metrics["epoch"] % study.checkpoint_every == 0:
            save_state(folder / STATE_FILE)
            metrics["checkpoint_epoch"] = metrics["epoch"]
            tune.report(metrics)
        elif metrics["final_phase_epoch"] in decide_at:
            tune.report(metrics)

    try:
        train(cfg, report=report, resume_from=resume_from, bank=bank)
    except DivergedError as error:
        # A diverged configuration is a result, not a crash: no retry, the study goes on.
        tune.report({"best_val_acc": last.get("best_val_acc", 0.0) if last else 0.0,
                     "epoch": last.get("epoch", 0), "diverged": True, "reason": f"diverged: {error}",
                     "finished": False, "stage_end": False, "final_phase_epoch": 0})
