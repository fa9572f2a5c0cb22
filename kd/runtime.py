"""Where a run executes: its device, bf16 autocast and the frozen teacher it distils from.

The trainer and the teacher bank must run the teacher alike (same device choice, same
autocast, eval mode without gradients), or a bank's logits would differ from the live
teacher's. Both import them from here: kd.train imports kd.bank, so the bank cannot take
them from kd.train.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
import torch.nn as nn

from kd.checkpoints import load_model
from kd.config import ConfigError
from kd.data import Data


class FrozenTeacher(nn.Module):
    """A teacher that is in eval mode and gradient-free by construction, whatever callers do."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.model.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)  # BN statistics and dropout of a teacher never change

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' is not allowed here; no CUDA device is visible (use auto or cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def autocast_for(device: torch.device, amp: bool) -> Callable[[], Any]:
    """bf16 autocast on CUDA (when amp), nothing elsewhere."""
    if device.type == "cuda" and amp:
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def load_teacher(path: str, device: torch.device, data: Data | None = None) -> FrozenTeacher:
    """A stored model, or a fine-tuned `hf:` checkpoint (its head sized by data.num_classes)."""
    return FrozenTeacher(load_model(path, map_location=device, data=data)).to(device)
