"""Pure loss functions and the Annealing-KD temperature schedule, exactly as published.

Notation follows Jafari et al. (EACL 2021): student and teacher logits are raw (before
softmax); T is the integer annealing temperature, tau_max its starting value.

Regression tasks (STS-B: one output, a real-valued label) swap the cross-entropy on labels
for the mean squared error (`label_loss`) and Hinton KD for its regression form; the
annealing and continuation terms compare logits directly and need no change.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_temperature(T: int, tau_max: int) -> None:
    if isinstance(tau_max, bool) or int(tau_max) != tau_max or tau_max < 1:
        raise ValueError(f"tau_max: {tau_max!r} is not allowed; it must be an integer >= 1")
    if isinstance(T, bool) or int(T) != T or not 1 <= T <= tau_max:
        raise ValueError(f"T: {T!r} is not allowed; it must be an integer in [1, tau_max={tau_max}]")


def phi(T: int, tau_max: int) -> float:
    """Annealing factor Phi(T) = 1 - (T - 1) / tau_max: 1/tau_max at T = tau_max, 1 at T = 1."""
    _check_temperature(T, tau_max)
    return 1.0 - (T - 1) / tau_max


def temperature_schedule(tau_max: int, stage_epochs: int) -> list[int]:
    """T for every phase-1 epoch: tau_max for `stage_epochs` epochs, then tau_max - 1, ..., 1.

    The official code derives the stage length as floor(phase1_epochs / tau_max) and
    overshoots past Phi = 1 when that division is not exact; here the phase-1 length is
    tau_max * stage_epochs by construction, so the schedule always ends exactly at T = 1.
    """
    if isinstance(stage_epochs, bool) or int(stage_epochs) != stage_epochs or stage_epochs < 1:
        raise ValueError(f"stage_epochs: {stage_epochs!r} is not allowed; it must be an integer >= 1")
    _check_temperature(1, tau_max)
    return [T for T in range(tau_max, 0, -1) for _ in range(stage_epochs)]


def label_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool = False) -> torch.Tensor:
    """The supervised term: CE on class ids, or MSE of the single output against a real label."""
    if regression:
        return F.mse_loss(logits.float().squeeze(-1), labels.float())
    return F.cross_entropy(logits.float(), labels)


def annealing_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      T: int, tau_max: int) -> torch.Tensor:
    """Phase 1 of Annealing-KD: MSE(z_s, Phi(T) * z_t), mean over batch x classes, no labels."""
    target = teacher_logits.detach() * phi(T, tau_max)
    return F.mse_loss(student_logits.float(), target.float())


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau)), averaged over the batch."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def hinton_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   labels: torch.Tensor, temperature: float, alpha: float) -> torch.Tensor:
    """(1 - alpha) * CE(z_s, y) + alpha * tau^2 * KL(p_t || p_s) (Hinton et al. 2015)."""
    ce = F.cross_entropy(student_logits.float(), labels)
    return (1.0 - alpha) * ce + alpha * soft_kl(student_logits, teacher_logits, temperature)


def regression_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """Hinton KD for a regression output: (1 - alpha) * MSE(z_s, y) + alpha * MSE(z_s, z_t)."""
    teacher_term = F.mse_loss(student_logits.float(), teacher_logits.detach().float())
    return (1.0 - alpha) * label_loss(student_logits, labels, regression=True) + alpha * teacher_term


def continuation_hinge(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       T: int, tau_max: int, margin: float) -> torch.Tensor:
    """Batch mean of max{0, ||z_s - Phi(T) z_t||^2 - m Phi(T)}: squared norm and hinge per sample."""
    factor = phi(T, tau_max)
    diff = student_logits.float() - factor * teacher_logits.detach().float()
    per_sample = diff.pow(2).sum(dim=1)
    return torch.clamp(per_sample - margin * factor, min=0.0).mean()


def continuation_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                         labels: torch.Tensor, T: int, tau_max: int, psi: float,
                         margin: float, regression: bool = False) -> torch.Tensor:
    """Continuation-KD (Jafari et al. 2022): psi * CE + (1 - psi) * hinge on the annealed target
    (psi * MSE + (1 - psi) * hinge for a regression output)."""
    if not 0.0 <= psi <= 1.0:
        raise ValueError(f"psi: {psi!r} is not allowed; it must lie in [0, 1]")
    ce = label_loss(student_logits, labels, regression)
    hinge = continuation_hinge(student_logits, teacher_logits, T, tau_max, margin)
    return psi * ce + (1.0 - psi) * hinge
