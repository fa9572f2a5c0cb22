"""Teacher store: each teacher (and TAKD assistant) is trained once and kept under a key
derived from its configuration, so trials, resumed studies and later studies share it.

A stored model is `<root>/<arch>-<key16>/model.pt` (a plain dict of tensors and
primitives, loadable with `torch.load(weights_only=True)`), its `config.json`, its final
metrics, and `model.pt.sha256`, checked on every load so a truncated or corrupted file is
reported instead of silently producing a wrong teacher. Text models also store the
keyword arguments that rebuild them (vocabulary size, padding id, max_length).

A teacher can also be a fine-tuned Hugging Face checkpoint, ``hf:<name or folder>``, used
as it is (never trained here): `load_model` loads it with its head sized for the data.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from kd.config import TrainConfig
from kd.models import build_model


class CorruptCheckpointError(RuntimeError):
    pass


# What a student's config passes on to its teacher: the data and the hardware, never
# the student's own (tuned) hyperparameters, so every trial shares one teacher.
_INHERITED = ("dataset", "data_dir", "download", "num_samples", "val_size", "data_seed",
              "tokenizer", "max_length", "batch_size", "optimizer", "momentum", "lr_schedule",
              "warmup_ratio", "teacher_epochs", "teacher_lr", "teacher_weight_decay", "teacher_seed",
              "device", "amp", "compile", "paper_protocol")
HF_PREFIX = "hf:"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(path: str | Path, arch: str, num_classes: int, state_dict: dict,
               extra: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    payload = {"arch": arch, "num_classes": num_classes,
               "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, **(extra or {})}
    torch.save(payload, tmp)
    (path.parent / (path.name + ".sha256")).write_text(_sha256(tmp) + "\n")
    tmp.replace(path)
    return path


def is_hf_reference(path: str | Path | None) -> bool:
    return str(path or "").startswith(HF_PREFIX)


def load_model(path: str | Path, map_location: Any = "cpu", data=None) -> nn.Module:
    """A stored model (checked against its checksum), or a fine-tuned `hf:` checkpoint
    (which needs `data`: its number of classes and tokenizer settings)."""
    if is_hf_reference(path):
        if data is None:
            raise ValueError(f"teacher_checkpoint: {str(path)!r} is a Hugging Face checkpoint; loading it "
                             f"needs the run's data (num_classes, tokenizer settings)")
        try:
            return build_model(str(path), data.num_classes, keep_head=True, **data.model_kwargs).to(map_location)
        except RuntimeError as error:  # a head of another size: fine-tuned on another task
            raise CorruptCheckpointError(f"teacher_checkpoint: {str(path)!r} does not fit {data.name} "
                                         f"({data.num_classes} outputs): {error}") from error
    path = Path(path)
    checksum_file = path.parent / (path.name + ".sha256")
    if not path.is_file():
        raise FileNotFoundError(f"stored model {path} does not exist")
    if checksum_file.is_file() and checksum_file.read_text().strip() != _sha256(path):
        raise CorruptCheckpointError(
            f"stored model {path} does not match its checksum {checksum_file.name}: the file is "
            f"corrupt or was changed; delete its folder {path.parent} to have it trained again")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
        kwargs = payload.get("model_kwargs") or {}
        if kwargs:  # a text model: the architecture only, its weights come next
            kwargs = {**kwargs, "pretrained": False}
        model = build_model(payload["arch"], payload["num_classes"], **kwargs)
        model.load_state_dict(payload["state_dict"])
    except CorruptCheckpointError:
        raise
    except Exception as error:  # unpickling and shape errors alike mean an unusable file
        raise CorruptCheckpointError(f"stored model {path} cannot be loaded ({error}); delete its "
                                     f"folder {path.parent} to have it trained again") from error
    return model.to(map_location)


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
        from kd.train import train

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
        """cfg with teacher_checkpoint (and assistant_checkpoint for takd) filled in."""
        changes: dict[str, Any] = {}
        teacher_path = cfg.teacher_checkpoint
        if cfg.teacher is not None and teacher_path is None:
            teacher_path = str(self.get_or_train(teacher_config(cfg), report, trainer))
            changes["teacher_checkpoint"] = teacher_path
        if cfg.method == "takd" and cfg.assistant_checkpoint is None:
            changes["assistant_checkpoint"] = str(
                self.get_or_train(assistant_config(cfg, teacher_path), report, trainer))
        return cfg.replace(**changes) if changes else cfg
