"""What every distillation method provides: its phases and named losses to the trainer, and
its description to everyone else.

A method class declares its hyperparameters (`Param`), the search space a study gives it by
default, whether it needs a teacher or an assistant, and how reports name and draw it.
TrainConfig, `python -m kd train`, the study and the report read all of it from METHODS, so
a method is one file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from kd.losses import label_loss
from kd.registry import Registry


@dataclass(frozen=True)
class Param:
    """A hyperparameter a method owns: a TrainConfig field, a `python -m kd train --<name>`
    option and a dimension a study may search. Names are one namespace: methods that share a
    parameter (KD and TAKD's temperature) declare the very same Param, and registration
    refuses a method whose parameter has another method's name with another declaration."""
    name: str
    type: type                  # int, float, bool or str
    default: Any
    help: str                   # what it means; the CLI adds which methods use it
    low: float | None = None    # smallest value allowed
    high: float | None = None   # largest value allowed
    above_low: bool = False     # low itself is not allowed (a temperature is > 0)

    def allows(self, value: Any) -> bool:
        if self.low is not None and (value <= self.low if self.above_low else value < self.low):
            return False
        return self.high is None or value <= self.high

    def bounds(self) -> str:
        """The allowed range: '> 0', '>= 1', 'in [0, 1]'."""
        if self.high is not None:
            return f"in {'(' if self.above_low else '['}{self.low:g}, {self.high:g}]"
        return f"{'>' if self.above_low else '>='} {self.low:g}"

    def describe(self) -> str:
        limits = f", {self.bounds()}" if self.low is not None else ""
        return f"{self.type.__name__}, default {self.default}{limits}: {self.help}"

    def rule(self) -> str:
        """The allowed range, in the words of the error message."""
        if self.high is not None:
            return f"it must lie {self.bounds()}"
        return f"it must be {'an integer ' if self.type is int else ''}{self.bounds()}"


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
    # ---- its description (read through METHODS by the config, the CLI, the study and the report)
    name: ClassVar[str] = ""               # the registered name, set by METHODS.register
    label: ClassVar[str] = ""              # display name in reports; the name when a class declares none
    reference: ClassVar[str] = ""          # the paper (and code) it follows
    rule: ClassVar[str] = ""               # what is fixed by construction, one line (report: how it was run)
    colour: ClassVar[str] = "#E69F00"      # the same colour and marker in every figure
    marker: ClassVar[str] = "P"
    order: ClassVar[int] = 100             # place in tables and verdicts (the papers' order)
    # When its runs are comparable on validation accuracy (the pruner's clock, final_phase_epochs),
    # in the words of the report's protocol: "<label> <final_phase>"
    final_phase: ClassVar[str] = "every epoch"
    needs_teacher: ClassVar[bool] = False
    needs_assistant: ClassVar[bool] = False
    params: ClassVar[tuple[Param, ...]] = ()
    # The study's default search over its own parameters (study/space.py's range convention);
    # every method also searches lr and weight decay over the study's shared ranges.
    search: ClassVar[dict[str, Any]] = {}
    # Search keys that set an epoch-count parameter as a fraction of the study's budget
    # (at least 1 epoch): a ramp over 20-80% of any budget.
    budget_fractions: ClassVar[dict[str, str]] = {}
    # Search keys that constrain the space (check_search) rather than name a parameter.
    search_settings: ClassVar[tuple[str, ...]] = ()

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
        """Reject configurations this method cannot run (fail(field, rule) raises). Each
        parameter's declared range is checked before, for every method."""

    @classmethod
    def check_search(cls, corner: dict[str, Any], space: dict[str, Any], epochs: int) -> str | None:
        """Why the most demanding corner of a study's search space cannot run within `epochs`
        epochs (None: it can). `corner` holds the parameters, `space` the study's ranges."""
        return None

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


def _check_declaration(name: str, method: type[Method], registered: dict[str, type[Method]]) -> None:
    """Refuse a method whose parameter clashes with another method's, or whose default search
    names something it does not declare; then give it its name (and label)."""
    for param in method.params:
        for other, other_method in registered.items():
            theirs = next((p for p in other_method.params if p.name == param.name), None)
            if theirs is not None and theirs != param:
                raise ValueError(
                    f"method {name!r}: parameter {param.name!r} is declared by method {other!r} too, "
                    f"differently ({other}: {theirs.describe()}; {name}: {param.describe()}); share it by "
                    f"declaring the same Param (same type, default, range and meaning) or choose another name")
    names = {p.name for p in method.params}
    own = names | set(method.budget_fractions) | set(method.search_settings)
    unknown = sorted(set(method.search) - own) + sorted(set(method.budget_fractions.values()) - names)
    if unknown:
        raise ValueError(f"method {name!r}: its search names {unknown}, which are none of its params, "
                         f"budget_fractions or search_settings")
    method.name = name
    if "label" not in vars(method):  # a subclass (TAKD of Hinton KD) never shows its parent's label
        method.label = name


METHODS: Registry[type[Method]] = Registry("method", check=_check_declaration)
