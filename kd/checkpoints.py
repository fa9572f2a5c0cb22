"""Stored model files: how a trained model is written, checked and read back.

A run's frozen teacher (kd.runtime), the teacher bank (a teacher file's sha256 names its
bank) and the teacher store all read these files, so the file layer sits below all three
and imports none of them.

A stored model is `model.pt` (a plain dict of tensors and primitives, loadable with
`torch.load(weights_only=True)`) and `model.pt.sha256`, checked on every load so a
truncated or corrupted file is reported instead of silently producing a wrong teacher.
Text models also store the keyword arguments that rebuild them (vocabulary size, padding
id, max_length).

A teacher can also be a fine-tuned Hugging Face checkpoint, ``hf:<name or folder>``, used
as it is (never trained here): `load_model` loads it with its head sized for the data.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from kd.models import build_model


class CorruptCheckpointError(RuntimeError):
    pass


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
