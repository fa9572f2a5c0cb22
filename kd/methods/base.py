"""What every distillation method provides to the trainer: its phases and its named losses."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from kd.losses import label_loss
from kd.registry import Registry

METHODS: Registry[type["Method"]] = Registry("method")


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    uses_teacher: bool
    # Annealing-KD phase 2 continues from the best phase-1 student, not the last one.
    start_from_best: bool = False


@dataclass(frozen=True)
class EpochContext:
    """Per-epoch quantities a loss needs; also reported, so users can see the schedule."""
    phase: int          # 1-based index of the phase
    phase_epoch: int    # 0-based epoch inside the phase
    T: int | None = None
    phi: float | None = None
    psi: float | None = None


def validate_schedule(cfg, fail: Callable[[str, str], None]) -> None:
    """tau_max and stage_epochs of the annealed methods (Annealing-KD, Continuation-KD)."""
    if cfg.tau_max < 1:
        fail("tau_max", "it must be an integer >= 1")
    if cfg.stage_epochs < 1:
        fail("stage_epochs", "it must be an integer >= 1")


class Method:
    needs_teacher = False
    needs_assistant = False

    def __init__(self, cfg):
        from kd.data import dataset_info

        self.cfg = cfg
        # Regression tasks (STS-B) train on MSE where classification uses CE.
        self.regression = dataset_info(cfg.dataset).task.regression
        self.label_term = "label_mse" if self.regression else "ce"

    def label_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return label_loss(logits, labels, self.regression)

    @classmethod
    def validate(cls, cfg, fail: Callable[[str, str], None]) -> None:
        """Reject configurations this method cannot run (fail(field, rule) raises)."""

    def phases(self) -> list[Phase]:
        return [Phase("train", self.cfg.epochs, uses_teacher=self.needs_teacher)]

    def context(self, phase: int, phase_epoch: int) -> EpochContext:
        return EpochContext(phase, phase_epoch)

    def losses(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
               labels: torch.Tensor, ctx: EpochContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError
