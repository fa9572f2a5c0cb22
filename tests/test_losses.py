"""The pure losses and the schedule against values worked out by hand."""
import math

import pytest
import torch

from kd import (annealing_kd_loss, continuation_kd_loss, hinton_kd_loss, phi,
                temperature_schedule)

Z_S = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
Z_T = torch.tensor([[2.0, 4.0], [6.0, 8.0]])


def test_phi_at_the_ends_and_between():
    assert phi(10, 10) == pytest.approx(0.1)   # T = tau_max: the softest target, 1/tau_max
    assert phi(1, 10) == 1.0                   # T = 1: teacher logits unscaled
    assert phi(5, 10) == pytest.approx(0.6)    # 1 - 4/10
    assert phi(1, 1) == 1.0


@pytest.mark.parametrize("T, tau_max", [(0, 10), (11, 10), (1, 0), (2.5, 10), (True, 10), (1, 1.5), (1, True)])
def test_phi_rejects_out_of_range(T, tau_max):
    with pytest.raises(ValueError, match="tau_max|T"):
        phi(T, tau_max)


def test_schedule_steps_down_to_exactly_one():
    assert temperature_schedule(3, 2) == [3, 3, 2, 2, 1, 1]
    assert temperature_schedule(1, 4) == [1, 1, 1, 1]
    schedule = temperature_schedule(7, 28)
    assert len(schedule) == 196 and schedule[-1] == 1 and schedule[0] == 7
    # the official code's overshoot (200 epochs, tau_max 7 -> factor 8/7) cannot happen
    assert max(phi(T, 7) for T in schedule) == 1.0


@pytest.mark.parametrize("tau_max, stage", [(0, 3), (-1, 3), (3, 0), (3, -2), (3, 1.5)])
def test_schedule_rejects_impossible(tau_max, stage):
    with pytest.raises(ValueError, match="tau_max|stage_epochs"):
        temperature_schedule(tau_max, stage)


def test_annealing_loss_hand_values():
    # T = tau_max = 2: Phi = 1/2, target = Z_T / 2 = Z_S exactly -> 0
    assert annealing_kd_loss(Z_S, Z_T, T=2, tau_max=2).item() == 0.0
    # T = 1: target = Z_T, differences -1 -2 -3 -4, mean of squares (1+4+9+16)/4 = 7.5
    assert annealing_kd_loss(Z_S, Z_T, T=1, tau_max=2).item() == pytest.approx(7.5)


def test_annealing_loss_gradient_reaches_student_only():
    student = Z_S.clone().requires_grad_()
    teacher = Z_T.clone().requires_grad_()
    annealing_kd_loss(student, teacher, T=1, tau_max=2).backward()
    # d/dz_s mean((z_s - z_t)^2) = 2 (z_s - z_t) / 4
    assert torch.allclose(student.grad, torch.tensor([[-0.5, -1.0], [-1.5, -2.0]]))
    assert teacher.grad is None


def test_hinton_kd_hand_values():
    zs = torch.tensor([[0.0, 0.0]])
    zt = torch.tensor([[math.log(3.0), 0.0]])  # softmax = (3/4, 1/4)
    y = torch.tensor([0])
    ce = math.log(2.0)
    # tau = 1: KL = 3/4 ln(3/2) + 1/4 ln(1/2)
    kl1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert hinton_kd_loss(zs, zt, y, temperature=1.0, alpha=0.5).item() == pytest.approx(0.5 * ce + 0.5 * kl1, abs=1e-6)
    # tau = 2: p_t = (sqrt3, 1) / (sqrt3 + 1); the KL term is scaled by tau^2 = 4
    s3 = math.sqrt(3.0)
    p = (s3 / (s3 + 1), 1 / (s3 + 1))
    kl2 = p[0] * math.log(2 * p[0]) + p[1] * math.log(2 * p[1])
    value = hinton_kd_loss(zs, zt, y, temperature=2.0, alpha=0.25).item()
    assert value == pytest.approx(0.75 * ce + 0.25 * 4 * kl2, abs=1e-6)
    assert value == pytest.approx(0.556208, abs=1e-5)
    # tau = 2 with student logits (ln 4, 0): z_s / tau = (ln 2, 0), p_s = (2/3, 1/3)
    zs4 = torch.tensor([[math.log(4.0), 0.0]])
    kl_s = p[0] * math.log(p[0] * 1.5) + p[1] * math.log(p[1] * 3)
    ce4 = math.log(1.25)  # -ln(4/5)
    assert hinton_kd_loss(zs4, zt, y, temperature=2.0, alpha=0.5).item() == pytest.approx(
        0.5 * ce4 + 0.5 * 4 * kl_s, abs=1e-6)
    # alpha = 0 is plain cross-entropy
    assert hinton_kd_loss(zs, zt, y, 4.0, 0.0).item() == pytest.approx(ce)


def test_hinton_kd_batch_mean():
    zs = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    zt = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # second sample: identical -> KL 0
    kl1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert hinton_kd_loss(zs, zt, torch.tensor([0, 1]), 1.0, 1.0).item() == pytest.approx(kl1 / 2, abs=1e-6)


def test_continuation_hand_values():
    y = torch.tensor([0, 1])
    # T = 1, Phi = 1: per-sample ||z_s - z_t||^2 = 5 and 25; margin 4 -> hinges 1 and 21 -> mean 11
    assert continuation_kd_loss(Z_S, Z_T, y, T=1, tau_max=2, psi=0.0, margin=4.0).item() == pytest.approx(11.0)
    # T = 2, Phi = 1/2: target equals z_s, 0 - 4 * 1/2 < 0 -> hinge 0
    assert continuation_kd_loss(Z_S, Z_T, y, T=2, tau_max=2, psi=0.0, margin=4.0).item() == 0.0
    # T = 2, Phi = 1/2, a zero teacher: ||z_s||^2 = 5 and 25, less m Phi = 2 -> 3 and 23 -> mean 13
    zero = torch.zeros_like(Z_T)
    assert continuation_kd_loss(Z_S, zero, y, T=2, tau_max=2, psi=0.0, margin=4.0).item() == pytest.approx(13.0)
    # psi = 1: cross-entropy only; both rows have logit gap 1 -> CE = ln(1 + e^1) for label 0, ln(1 + e^-1) for 1
    ce = (math.log(1 + math.e) + math.log(1 + math.exp(-1))) / 2
    assert continuation_kd_loss(Z_S, Z_T, y, T=1, tau_max=2, psi=1.0, margin=4.0).item() == pytest.approx(ce)
    # psi = 1/4 mixes them linearly
    assert continuation_kd_loss(Z_S, Z_T, y, T=1, tau_max=2, psi=0.25, margin=4.0).item() == pytest.approx(0.25 * ce + 0.75 * 11.0)


@pytest.mark.parametrize("T", [1, 2, 3, 5])
def test_continuation_reduces_to_annealing(T):
    """m = 0 and a 0/1 psi: phase 1 (psi = 0) is Annealing-KD's MSE, up to the reductions the
    two papers specify (per-sample sum over classes vs mean over classes): a factor C."""
    torch.manual_seed(T)
    zs, zt = torch.randn(8, 10), torch.randn(8, 10)
    y = torch.randint(10, (8,))
    cont = continuation_kd_loss(zs, zt, y, T=T, tau_max=5, psi=0.0, margin=0.0)
    ann = annealing_kd_loss(zs, zt, T=T, tau_max=5)
    assert cont.item() == pytest.approx(10 * ann.item(), rel=1e-6)
    # psi = 1 (phase 2): plain cross-entropy, as in Annealing-KD's phase 2
    cont2 = continuation_kd_loss(zs, zt, y, T=T, tau_max=5, psi=1.0, margin=0.0)
    assert cont2.item() == pytest.approx(torch.nn.functional.cross_entropy(zs, y).item(), rel=1e-6)


def test_continuation_rejects_psi_outside_unit_interval():
    with pytest.raises(ValueError, match="psi"):
        continuation_kd_loss(Z_S, Z_T, torch.tensor([0, 1]), 1, 2, psi=1.5, margin=0.0)
