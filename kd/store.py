"""Teacher store: each teacher (and TAKD assistant) is trained once and kept under a key
derived from its configuration, so trials, resumed studies and later studies share it.

A stored teacher is `<root>/<arch>-<key16>/`: its model file (kd/checkpoints.py: `model.pt`
and its checksum), its `config.json` and its final metrics (`metrics.json`).
"""
from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any, Callable

from kd.checkpoints import load_model, save_model
from kd.config import TrainConfig
from kd.methods import METHODS
from kd.train import train


# What a student's config passes on to its teacher: the data and the hardware, never
# the student's own (tuned) hyperparameters, so every trial shares one teacher.
_INHERITED = ("dataset", "data_dir", "download", "num_samples", "val_size", "data_seed",
              "tokenizer", "max_length", "batch_size", "optimizer", "momentum", "lr_schedule",
              "warmup_ratio", "teacher_epochs", "teacher_lr", "teacher_weight_decay", "teacher_seed",
              "device", "amp", "compile", "paper_protocol")


def teacher_config(cfg: TrainConfig) -> TrainConfig:
    inherited = {name: getattr(cfg, name) for name in _INHERITED}
    return TrainConfig(model=cfg.teacher, method="ce", epochs=cfg.teacher_epochs, lr=cfg.teacher_lr,
                       weight_decay=cfg.teacher_weight_decay, seed=cfg.teacher_seed,
                       **inherited).validate()


# TAKD's assistant distils from the teacher at these settings (the common CIFAR KD ones,
# RepDistiller's); they are not searched, and every report states them (teachers.csv).
ASSISTANT_TEMPERATURE, ASSISTANT_ALPHA = 4.0, 0.9


def assistant_config(cfg: TrainConfig, teacher_path: str) -> TrainConfig:
    """TAKD's assistant: Hinton KD from the teacher with a student's epoch budget (cfg.epochs,
    as TAKD trains its assistant like a student) and the teacher's optimiser settings."""
    inherited = {name: getattr(cfg, name) for name in _INHERITED}
    return TrainConfig(model=cfg.assistant, method="kd", teacher=cfg.teacher,
                       teacher_checkpoint=teacher_path, epochs=cfg.epochs, lr=cfg.teacher_lr,
                       weight_decay=cfg.teacher_weight_decay, seed=cfg.teacher_seed,
                       temperature=ASSISTANT_TEMPERATURE, alpha=ASSISTANT_ALPHA, **inherited).validate()


class TeacherStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def path_for(self, cfg: TrainConfig) -> Path:
        # The teacher checkpoint path is part of an assistant's key: a different teacher
        # file means a different assistant.
        return self.root / f"{cfg.model}-{cfg.key()[:16]}" / "model.pt"

    def metrics(self, cfg: TrainConfig) -> dict[str, Any]:
        return json.loads((self.path_for(cfg).parent / "metrics.json").read_text())

    def get_or_train(self, cfg: TrainConfig, report: Callable | None = None,
                     trainer: Callable | None = None) -> Path:
        """The stored model for cfg, trained now if it is not stored yet (once, under a lock).

        `trainer(cfg, report)` defaults to kd.train.train; the study passes one that trains
        on a Ray worker (a GPU node) and returns the same result dict.
        """
        path = self.path_for(cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent trials wait for one training
            if path.is_file():
                load_model(path)  # verify now, not in the middle of a student's run
                return path
            result = (trainer or train)(cfg, report)
            state_dict = result.pop("state_dict")
            (path.parent / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
            (path.parent / "metrics.json").write_text(json.dumps(result, indent=2))
            save_model(path, cfg.model, cfg.num_classes, state_dict,
                       {"metrics": result, "model_kwargs": result.get("model_kwargs") or {}})
        return path

    def resolve(self, cfg: TrainConfig, report: Callable | None = None,
                trainer: Callable | None = None) -> TrainConfig:
        """cfg with teacher_checkpoint (and assistant_checkpoint for a method that needs one, TAKD) filled in."""
        changes: dict[str, Any] = {}
        teacher_path = cfg.teacher_checkpoint
        if cfg.teacher is not None and teacher_path is None:
            teacher_path = str(self.get_or_train(teacher_config(cfg), report, trainer))
            changes["teacher_checkpoint"] = teacher_path
        if METHODS.get(cfg.method, field="method").needs_assistant and cfg.assistant_checkpoint is None:
            changes["assistant_checkpoint"] = str(
                self.get_or_train(assistant_config(cfg, teacher_path), report, trainer))
        return cfg.replace(**changes) if changes else cfg
