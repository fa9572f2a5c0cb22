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

    def final_phase_epochs(self, phase: int, phase_epochs_done: int) -> int:
        """Epochs trained so far in the run's final phase, where the method trains on its final
        objective (0 while a temperature schedule still leads there). Only runs at the same
        final-phase epoch are comparable on validation accuracy: an Annealing-KD student
        regressing onto Phi(T) z_t is not yet trying to classify."""
        return phase_epochs_done if phase == len(self.phases()) else 0

    def losses(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
               labels: torch.Tensor, ctx: EpochContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError
