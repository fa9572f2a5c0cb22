"""Every registered method: its phases, its named losses, one forward/backward."""
import math
import re

import pytest
import torch

from kd import METHODS, ConfigError, FrozenTeacher, TrainConfig, build_method, build_model, hinton_kd_loss
from kd.methods import EpochContext

STUDENT, TEACHER = "mlp1d_8", "cnn1d_16"


def config(method, **kw):
    base = dict(model=STUDENT, method=method, teacher=TEACHER, assistant="cnn1d_8",
                epochs=10, tau_max=3, stage_epochs=2, psi_epochs=4)
    return TrainConfig.from_dict({**base, **kw})


def test_registry_has_the_published_methods():
    assert {"ce", "kd", "annealing", "continuation", "takd"} <= set(METHODS.names())


def test_unknown_method_is_named():
    with pytest.raises(Exception, match=r"method.*'bogus'.*allowed: " + re.escape(", ".join(METHODS.names()))):
        config("bogus")


@pytest.mark.parametrize("method", sorted(["ce", "kd", "annealing", "continuation", "takd"]))
def test_forward_backward_every_phase(method):
    torch.manual_seed(0)
    cfg = config(method)
    m = build_method(cfg)
    student = build_model(STUDENT, 10)
    teacher = FrozenTeacher(build_model(TEACHER, 10))
    teacher.train()  # asking for train mode must not put a teacher in train mode
    assert not teacher.training and not teacher.model.training
    x, y = torch.randn(6, 1, 40), torch.randint(10, (6,))
    assert sum(p.epochs for p in m.phases()) == cfg.epochs  # the budget is split, never exceeded
    for index, phase in enumerate(m.phases(), start=1):
        ctx = m.context(index, 0)
        t_logits = teacher(x) if phase.uses_teacher else None
        terms = m.losses(student(x), t_logits, y, ctx)
        loss = sum(terms.values())
        student.zero_grad()
        loss.backward()
        grads = [p.grad for p in student.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
        assert all(p.grad is None for p in teacher.parameters())


def test_kd_terms_sum_to_hinton_loss():
    cfg = config("kd", temperature=3.0, alpha=0.7)
    zs, zt, y = torch.randn(5, 10), torch.randn(5, 10), torch.randint(10, (5,))
    terms = build_method(cfg).losses(zs, zt, y, EpochContext(1, 0))
    assert set(terms) == {"ce", "kl"}
    assert sum(terms.values()).item() == pytest.approx(hinton_kd_loss(zs, zt, y, 3.0, 0.7).item(), rel=1e-6)


def test_annealing_phases_and_schedule():
    m = build_method(config("annealing", epochs=10, tau_max=3, stage_epochs=2))
    p1, p2 = m.phases()
    assert (p1.epochs, p1.uses_teacher, p2.epochs, p2.uses_teacher, p2.start_from_best) == (6, True, 4, False, True)
    assert [m.context(1, e).T for e in range(6)] == [3, 3, 2, 2, 1, 1]
    assert [round(m.context(1, e).phi, 4) for e in range(6)] == [0.3333, 0.3333, 0.6667, 0.6667, 1.0, 1.0]
    assert m.context(2, 0).T is None


def test_annealing_phase_1_regresses_onto_phi_of_the_epochs_own_T():
    """tau_max 3, 2 epochs per T: Phi = 1/3, 2/3, 1. Z_S = 0, Z_T = [3, 6]: MSE = Phi^2 (9 + 36) / 2."""
    m = build_method(config("annealing", epochs=10, tau_max=3, stage_epochs=2))
    zs, zt, y = torch.zeros(1, 2), torch.tensor([[3.0, 6.0]]), torch.tensor([0])
    mse = [m.losses(zs, zt, y, m.context(1, e))["mse"].item() for e in range(6)]
    assert mse == pytest.approx([2.5, 2.5, 10.0, 10.0, 22.5, 22.5])


def test_continuation_steps_T_over_the_whole_run_and_ramps_psi():
    # Algorithm 1: T drops every floor(10 / 3) = 3 epochs, then stays at 1; stage_epochs plays no part
    for stage_epochs in (1, 2, 5):
        m = build_method(config("continuation", epochs=10, tau_max=3, stage_epochs=stage_epochs, psi_epochs=4))
        assert [m.context(1, e).T for e in range(10)] == [3, 3, 3, 2, 2, 2, 1, 1, 1, 1]
    assert [m.context(1, e).psi for e in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    # T = tau_max runs one epoch per step
    m = build_method(config("continuation", epochs=4, tau_max=4, psi_epochs=2))
    assert [m.context(1, e).T for e in range(4)] == [4, 3, 2, 1]


@pytest.mark.parametrize("method, changes, expected", [
    # every epoch is on the final objective
    ("ce", {}, list(range(1, 11))),
    ("kd", {}, list(range(1, 11))),
    # phase 1 is tau_max x stage_epochs = 6 epochs; phase 2 counts from 1
    ("annealing", dict(tau_max=3, stage_epochs=2), [0] * 6 + [1, 2, 3, 4]),
    # psi reaches 1 at the 5th epoch (0-based epoch 4): the loss is CE alone from there
    ("continuation", dict(psi_epochs=4), [0, 0, 0, 0, 1, 2, 3, 4, 5, 6]),
])
def test_final_phase_epochs_count_epochs_on_the_final_objective(method, changes, expected):
    m = build_method(config(method, epochs=10, **changes))
    counted = [m.final_phase_epochs(index, done) for index, phase in enumerate(m.phases(), start=1)
               for done in range(1, phase.epochs + 1)]
    assert counted == expected


@pytest.mark.parametrize("changes, field", [
    (dict(method="annealing", epochs=6, tau_max=3, stage_epochs=2), "epochs"),   # no phase-2 epoch left
    (dict(method="annealing", tau_max=0), "tau_max"),
    (dict(method="annealing", stage_epochs=0), "stage_epochs"),
    (dict(method="continuation", epochs=5, tau_max=6, psi_epochs=4), "tau_max"),   # T cannot step each epoch
    (dict(method="continuation", psi_epochs=11), "psi_epochs"),
    (dict(method="kd", alpha=1.5), "alpha"),
    (dict(method="kd", temperature=0.0), "temperature"),
    (dict(method="ce", lr=0.0), "lr"),
    (dict(method="ce", lr=-0.1), "lr"),
    (dict(method="ce", model="resnet8"), "model"),             # an image model on MNIST-1D
    (dict(method="ce", dataset="cifar10", model="resnet8"), "data_dir"),
    (dict(method="ce", dataset="imagenet"), "dataset"),
    (dict(method="kd", teacher=None), "teacher"),
    (dict(method="takd", assistant=None), "assistant"),
])
def test_bad_values_name_their_field(changes, field):
    with pytest.raises(ConfigError) as error:
        config(**changes)
    assert str(error.value).startswith(f"{field}:")


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match="unknown config key.*'tau'"):
        TrainConfig.from_dict({"tau": 3})


@pytest.mark.parametrize("method, names", [("ce", ["train"]), ("kd", ["train"]), ("takd", ["train"]),
                                           ("continuation", ["train"]), ("annealing", ["anneal", "finetune"])])
def test_phases_are_named_and_contexts_say_where_they_are(method, names):
    m = build_method(config(method))
    assert [p.name for p in m.phases()] == names
    for index, phase in enumerate(m.phases(), start=1):
        for epoch in (0, phase.epochs - 1):
            ctx = m.context(index, epoch)
            assert (ctx.phase, ctx.phase_epoch) == (index, epoch)
            if ctx.T is not None:
                assert ctx.phi == pytest.approx(1.0 - (ctx.T - 1) / 3)  # tau_max 3


def test_continuation_terms_are_psi_weighted_ce_and_hinge():
    """Z_S = [[1, 2], [3, 4]], Z_T = 2 Z_S, T = 1 (Phi = 1), m = 4: hinges 1 and 21, mean 11;
    labels (0, 1): CE = (ln(1 + e) + ln(1 + e^-1)) / 2."""
    zs, zt, y = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[2.0, 4.0], [6.0, 8.0]]), torch.tensor([0, 1])
    m = build_method(config("continuation", margin=4.0))
    terms = m.losses(zs, zt, y, EpochContext(1, 0, T=1, phi=1.0, psi=0.25))
    ce = (math.log(1 + math.e) + math.log(1 + math.exp(-1))) / 2
    assert set(terms) == {"ce", "hinge"}
    assert terms["ce"].item() == pytest.approx(0.25 * ce) and terms["hinge"].item() == pytest.approx(0.75 * 11.0)


@pytest.mark.parametrize("changes, refusal", [
    ({"tau_max": 1}, None), ({"tau_max": 10}, None), ({"psi_epochs": 1}, None), ({"psi_epochs": 10}, None),
    ({"tau_max": 0}, "tau_max: 0 is not allowed; it must be an integer >= 1"),
    ({"tau_max": 11}, "tau_max: 11 is not allowed; continuation steps T down every floor(epochs / tau_max) "
                      "epochs, so tau_max must be <= epochs=10"),
    ({"psi_epochs": 0}, "psi_epochs: 0 is not allowed; it must lie in [1, epochs=10]"),
    ({"psi_epochs": 11}, "psi_epochs: 11 is not allowed; it must lie in [1, epochs=10]")])
def test_continuation_bounds(changes, refusal):
    field = next(iter(changes))
    if refusal is None:
        assert getattr(config("continuation", **changes), field) == changes[field]
    else:
        with pytest.raises(ConfigError) as refused:
            config("continuation", **changes)
        assert str(refused.value) == refusal


def test_build_method_names_the_field_of_an_unknown_method():
    import dataclasses
    cfg = dataclasses.replace(config("ce"), method="bogus")  # past TrainConfig's own check
    with pytest.raises(Exception) as refused:
        build_method(cfg)
    assert str(refused.value).startswith("method: unknown method 'bogus'; allowed: annealing, ce, continuation")


@pytest.mark.parametrize("changes, refusal", [
    ({"tau_max": 0}, "tau_max: 0 is not allowed; it must be an integer >= 1"),
    ({"stage_epochs": 0}, "stage_epochs: 0 is not allowed; it must be an integer >= 1"),
    ({"tau_max": 3, "stage_epochs": 3, "epochs": 9},
     "epochs: 9 is not allowed; annealing needs tau_max x stage_epochs = 3 x 3 = 9 phase-1 epochs plus at "
     "least 1 phase-2 epoch, i.e. epochs >= 10"),
])
def test_annealing_bounds(changes, refusal):
    with pytest.raises(ConfigError) as refused:
        config("annealing", **changes)
    assert str(refused.value) == refusal
    assert config("annealing", tau_max=3, stage_epochs=3, epochs=10).epochs == 10  # the smallest budget allowed
