"""The Tune function trainable: one kd.train run, reported every epoch, checkpointed at
temperature-stage and phase boundaries, resumed from the last checkpoint after a failure.

Teachers reach the trial through Ray's object store (as the bytes of their stored file),
so a worker never needs to see the driver's disk for them; a fine-tuned Hugging Face
teacher (`hf:` name or folder) arrives as its name, which every worker loads itself.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from kd.train import DivergedError, train
from study.config import StudyConfig
from study.metrics import TrialMetrics

STATE_FILE = "state.pt"


def materialize(blob: bytes | str) -> str:
    """Write a stored model's bytes to a node-local cache once; return the path. A name
    (an `hf:` reference) is returned as it is."""
    if isinstance(blob, str):
        return blob
    digest = hashlib.sha256(blob).hexdigest()
    folder = Path(tempfile.gettempdir()) / "kd-teachers"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest[:24]}.pt"
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)
    return str(path)


def run_config(study: StudyConfig, run: dict[str, Any], teacher_files: dict[str, bytes]):
    seed = run.get("seed", study.seed)
    cfg = study.train_config(run["student"], run["method"], seed=seed, **run["params"])
    changes = {"teacher_checkpoint": materialize(teacher_files["teacher"])}
    if run["method"] == "takd":
        changes["assistant_checkpoint"] = materialize(teacher_files["assistant"])
    return cfg.replace(**changes)


def trial_dirname(trial) -> str:
    """Short, readable trial folders: <cell>_<stage>_<trial id> (Tune's default embeds every
    parameter and overflows path limits on real search spaces)."""
    run = trial.config.get("run", trial.config)
    return _dirname(run, trial.trial_id)


def _dirname(run: dict[str, Any], trial_id: str) -> str:
    # Hugging Face names carry "/" and ":" (hf:google/bert_uncased_L-2_H-128_A-2): one folder level.
    cell = re.sub(r"[^A-Za-z0-9._=-]+", "_", str(run.get("cell", "trial")))
    return f"{cell}_{run.get('stage', '')}_{trial_id}"


def _final_marker(exp_dir: str, run: dict[str, Any], trial_id: str) -> Path:
    stage_folder = "search" if run["stage"] == "search" else "rerun"
    return Path(exp_dir) / stage_folder / _dirname(run, trial_id) / "final.json"


def stored_bank(cfg, bank_root: str):
    """The teacher bank the driver built into the storage, memory-mapped; None when there is
    none (bank off, or over bank_memory_gb: then train() runs the teacher live)."""
    from kd.bank import bank_key, bank_path, load_bank

    if not cfg.teacher_bank or cfg.method == "ce":
        return None
    source = cfg.assistant_checkpoint if cfg.method == "takd" else cfg.teacher_checkpoint
    key = bank_key(source, cfg)
    path = bank_path(bank_root, key)
    # the driver verified the checksum once; trials check the size and the key
    return load_bank(path, mmap=True, verify=False, expected_key=key) if path.is_file() else None


def with_stored_bank(cfg, bank_root: str):
    """cfg and its bank. Without a stored bank the trial runs the teacher live rather than
    building a bank of its own (on CIFAR that costs ~162 teacher epochs per trial)."""
    bank = stored_bank(cfg, bank_root)
    if bank is None and cfg.teacher_bank:
        cfg = cfg.replace(teacher_bank=False)
    return cfg, bank


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    # Tune's CSV logger and the analysis read NaN more easily than None.
    return {k: (math.nan if v is None else v) for k, v in metrics.items()}


def run_trial(config: dict[str, Any], study_values: dict[str, Any], teacher_files: dict[str, bytes],
              study_name: str, exp_dir: str, bank_root: str) -> None:
    run = config.get("run", config)  # re-runs arrive through a grid over whole run dicts
    # Tune can schedule a trial again when the driver stopped between the trial's last
    # report and its bookkeeping; a finished trial then reports its final result again
    # instead of training from its previous checkpoint.
    marker = _final_marker(exp_dir, run, tune.get_context().get_trial_id())
    if marker.is_file():
        tune.report({**json.loads(marker.read_text()), "replayed": True})
        return
    study = StudyConfig(**study_values)
    torch.set_num_threads(max(1, int(study.cpus_per_trial)))  # no oversubscription of shared cores
    cfg, bank = with_stored_bank(run_config(study, run, teacher_files), bank_root)
    gauges = TrialMetrics(study_name, run["cell"], tune.get_context().get_trial_id())

    resume_from = None
    checkpoint = tune.get_checkpoint()
    workdir = Path(tempfile.mkdtemp(prefix="kd-trial-"))
    if checkpoint is not None:
        resume_from = Path(checkpoint.to_directory(str(workdir / "restored"))) / STATE_FILE

    last: dict[str, Any] = {}

    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, Any], save_state) -> None:
        last.update(metrics)
        gauges.update(metrics)
        metrics = {**_clean(metrics), "node_id": node_id}
        if metrics["finished"]:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps(metrics))
        if metrics["stage_end"] or metrics["finished"]:
            with tempfile.TemporaryDirectory(dir=workdir) as folder:
                save_state(Path(folder) / STATE_FILE)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)

    try:
        train(cfg, report=report, resume_from=resume_from, bank=bank)
    except DivergedError as error:
        # A diverged configuration is a result, not a crash: no retry, the study goes on.
        tune.report({"best_val_acc": last.get("best_val_acc", 0.0) if last else 0.0,
                     "epoch": last.get("epoch", 0), "diverged": True, "reason": f"diverged: {error}",
                     "finished": False, "stage_end": False})
