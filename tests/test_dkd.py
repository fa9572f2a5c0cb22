"""Decoupled KD: its loss against values worked out by hand, its method, its place in studies,
reports and the published numbers."""
import math
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from analysis import figures, published, tables
from kd import METHODS, ConfigError, FrozenTeacher, TrainConfig, build_method, build_model, train
from kd.losses import soft_kl
from kd.methods import EpochContext
from kd.methods.dkd import dkd_loss
from kd.methods.kd import TEMPERATURE
from study.config import SHARED_SEARCH, StudyConfig
from study.space import MethodSpace
from study.summary import PARAM_COLUMNS, param_columns

# Two examples, three classes; the student is uniform, the teacher gives class 0 twice the
# weight of the others (softmax of [ln 2, 0, 0] = 1/2, 1/4, 1/4).
Z_S = torch.zeros(2, 3)
Z_T = torch.tensor([[math.log(2.0), 0.0, 0.0]] * 2)
Y = torch.tensor([0, 1])
# TCKD, binary (target, others): example 1 teacher (1/2, 1/2) vs student (1/3, 2/3),
# example 2 teacher (1/4, 3/4) vs student (1/3, 2/3).
TCKD = ((0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3)))
        + (0.25 * math.log(0.25 / (1 / 3)) + 0.75 * math.log(0.75 / (2 / 3)))) / 2
# NCKD, over the other classes: example 1 teacher (1/2, 1/2) = student, KL 0; example 2
# (classes 0, 2) teacher (2/3, 1/3) vs student (1/2, 1/2).
NCKD = (0.0 + (2 / 3 * math.log((2 / 3) / 0.5) + 1 / 3 * math.log((1 / 3) / 0.5))) / 2


def test_dkd_loss_by_hand():
    assert TCKD == pytest.approx(0.0376541, abs=1e-7) and NCKD == pytest.approx(0.0283165, abs=1e-7)
    assert dkd_loss(Z_S, Z_T, Y, 1.0, 0.0, 1.0).item() == pytest.approx(TCKD, rel=1e-5)
    assert dkd_loss(Z_S, Z_T, Y, 0.0, 1.0, 1.0).item() == pytest.approx(NCKD, rel=1e-5)
    assert dkd_loss(Z_S, Z_T, Y, 1.0, 8.0, 1.0).item() == pytest.approx(TCKD + 8 * NCKD, rel=1e-5)
    # logits twice as large at T = 2: the same distributions, times T^2 = 4
    assert dkd_loss(2 * Z_S, 2 * Z_T, Y, 0.5, 2.0, 2.0).item() == pytest.approx(4 * (0.5 * TCKD + 2 * NCKD), rel=1e-5)


def test_tckd_and_nckd_recompose_hinton_kd():
    """Zhao et al. Eq. 4: KD = TCKD + (1 - p_t of the target) NCKD, per example (one here)."""
    torch.manual_seed(0)
    zs, zt, y = torch.randn(1, 7) * 3, torch.randn(1, 7) * 3, torch.tensor([4])
    others = 1 - torch.softmax(zt / 3.0, dim=1)[0, 4].item()
    recomposed = dkd_loss(zs, zt, y, 1.0, others, 3.0)
    assert recomposed.item() == pytest.approx(soft_kl(zs, zt, 3.0).item(), rel=1e-5)


def test_nckd_ignores_the_target_logit_and_tckd_the_spread_among_the_others():
    torch.manual_seed(1)
    zs, zt, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    moved = zs.clone()
    moved[torch.arange(4), y] += 3.0
    assert dkd_loss(moved, zt, y, 0.0, 1.0, 2.0).item() == pytest.approx(dkd_loss(zs, zt, y, 0.0, 1.0, 2.0).item())
    assert dkd_loss(moved, zt, y, 1.0, 0.0, 2.0).item() != pytest.approx(dkd_loss(zs, zt, y, 1.0, 0.0, 2.0).item())


def config(**changes) -> TrainConfig:
    return TrainConfig.from_dict({"model": "mlp1d_8", "teacher": "cnn1d_16", "method": "dkd", "epochs": 40,
                                  **changes})


def test_the_method_warms_its_distillation_term_up_and_weights_ce():
    m = build_method(config(dkd_warmup_epochs=4, dkd_ce_weight=0.5, tckd_weight=1.0, nckd_weight=8.0,
                            temperature=1.0))
    ce = torch.nn.functional.cross_entropy(Z_S, Y).item()  # ln 3
    for epoch, factor in [(0, 0.25), (1, 0.5), (3, 1.0), (10, 1.0)]:
        terms = m.losses(Z_S, Z_T, Y, EpochContext(1, epoch))
        assert set(terms) == {"ce", "dkd"}
        assert terms["ce"].item() == pytest.approx(0.5 * ce)
        assert terms["dkd"].item() == pytest.approx(factor * (TCKD + 8 * NCKD), rel=1e-5)


def test_one_forward_backward_reaches_the_student_only():
    torch.manual_seed(0)
    m = build_method(config())
    student, teacher = build_model("mlp1d_8", 10), FrozenTeacher(build_model("cnn1d_16", 10))
    x, y = torch.randn(6, 1, 40), torch.randint(10, (6,))
    sum(m.losses(student(x), teacher(x), y, m.context(1, 25)).values()).backward()
    grads = [p.grad for p in student.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in teacher.parameters())
    # the loss itself never sends a gradient into the teacher's logits
    zs, zt = torch.randn(3, 5, requires_grad=True), torch.randn(3, 5, requires_grad=True)
    dkd_loss(zs, zt, torch.tensor([0, 2, 4]), 1.0, 8.0, 4.0).backward()
    assert zt.grad is None and zs.grad is not None and zs.grad.abs().sum() > 0


def test_its_declaration():
    dkd = METHODS.get("dkd")
    assert (dkd.label, dkd.needs_teacher, dkd.needs_assistant) == ("DKD", True, False)
    assert TEMPERATURE in dkd.params and TEMPERATURE in METHODS.get("kd").params  # one shared parameter
    cfg = config()
    assert (cfg.tckd_weight, cfg.nckd_weight, cfg.temperature, cfg.dkd_ce_weight, cfg.dkd_warmup_epochs) == \
        (1.0, 8.0, 4.0, 1.0, 20)
    # at their defaults its parameters stay out of the record (and the key); changed, they enter it
    assert not {"tckd_weight", "nckd_weight", "dkd_ce_weight", "dkd_warmup_epochs"} & set(cfg.to_dict())
    assert cfg.replace(nckd_weight=2.0).to_dict()["nckd_weight"] == 2.0
    assert figures.style("dkd") == ("#56B4E9", "X", "DKD")
    assert tables.method_key("kd") < tables.method_key("dkd") < tables.method_key("takd")


@pytest.mark.parametrize("changes, message", [
    (dict(epochs=10), "dkd_warmup_epochs: 20 is not allowed; it must be <= epochs=10"),
    (dict(dkd_warmup_epochs=0), "dkd_warmup_epochs: 0 is not allowed; it must be an integer >= 1"),
    (dict(nckd_weight=-1.0), "nckd_weight: -1.0 is not allowed; it must be >= 0"),
    (dict(temperature=0.0), "temperature: 0.0 is not allowed; it must be > 0"),
    (dict(teacher=None), "teacher: None is not allowed; method dkd needs a teacher"),
    (dict(dataset="glue-stsb", model="bert_L2_H128", teacher="bert_L2_H128", tokenizer="bert-base-uncased"),
     "method: 'dkd' is not allowed; dkd splits class probabilities; dataset glue-stsb is a regression task"),
])
def test_impossible_configurations_are_refused(changes, message):
    with pytest.raises(ConfigError) as refused:
        config(**changes)
    assert str(refused.value).startswith(message)


def test_a_warm_up_as_long_as_the_run_is_allowed():
    assert config(epochs=20, dkd_warmup_epochs=20).dkd_warmup_epochs == 20


def test_it_trains(tiny_teacher):
    _, base, teacher_path = tiny_teacher
    cfg = TrainConfig.from_dict({**base.to_dict(), "method": "dkd", "epochs": 3, "dkd_warmup_epochs": 2,
                                 "nckd_weight": 2.0, "teacher_checkpoint": str(teacher_path)})
    reported = []
    result = train(cfg, report=lambda metrics, save_state: reported.append(metrics))
    assert [r["epoch"] for r in reported] == [1, 2, 3]
    assert all(r["loss_dkd"] > 0 and math.isfinite(r["loss_dkd"]) and r["loss_ce"] > 0 for r in reported)
    assert 0 <= result["test_acc"] <= 100 and result["selected_epoch"] in (1, 2, 3)


def test_any_study_can_run_it_searched_like_the_others():
    study = StudyConfig.preset("smoke").replace(methods=["ce", "kd", "dkd"], epochs=24)
    spaces = {m: study.search_space(m) for m in study.methods}
    for space in spaces.values():  # lr and weight decay over the same ranges for every method
        assert {k: space[k] for k in SHARED_SEARCH} == {k: spaces["ce"][k] for k in SHARED_SEARCH}
    assert {k: v for k, v in spaces["dkd"].items() if k not in SHARED_SEARCH} == METHODS.get("dkd").search
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    betas = []
    for _ in range(10):
        trial = sampler.ask()
        params = MethodSpace(study, "dkd")(trial)
        run = study.train_config("mlp1d_8", "dkd", **params)  # validates every sampled configuration
        assert run.dkd_warmup_epochs == 2 == round(20 / 240 * 24)  # 20 of 240 epochs, as the authors
        assert (run.tckd_weight, run.temperature, run.dkd_ce_weight) == (1.0, 4.0, 1.0)
        betas.append(run.nckd_weight)
        sampler.tell(trial, 0.0)
    assert all(1.0 <= b <= 8.0 for b in betas) and len(set(betas)) == 10
    assert param_columns(study.methods) == [*PARAM_COLUMNS, "tckd_weight", "nckd_weight", "dkd_ce_weight",
                                            "dkd_warmup_epochs"]
    with pytest.raises(ConfigError, match="nckd_weight: -1.0 is not allowed"):
        study.replace(search={"dkd": {"nckd_weight": [-1.0, 2.0]}})


@pytest.mark.parametrize("name, teacher, student, dkd, kd", [
    ("cifar100-modern", "resnet56", "resnet20", 71.97, 70.66),
    ("cifar100-modern-r110", "resnet110", "resnet32", 74.11, 73.08),
])
def test_modern_presets_and_their_published_rows(tmp_path, name, teacher, student, dkd, kd):
    with pytest.raises(ConfigError, match="data_dir"):
        StudyConfig.preset(name)  # no data folder given: refused, naming the field
    values = yaml.safe_load((Path("study/presets") / f"{name}.yaml").read_text())
    cfg = StudyConfig.from_dict({**values, "data_dir": str(tmp_path)})
    assert (cfg.dataset, cfg.teacher, cfg.students) == ("cifar100", teacher, [student])
    assert cfg.methods == ["ce", "kd", "annealing", "continuation", "dkd"] and cfg.epochs == 240
    run = cfg.train_config(student, "dkd", **MethodSpace(cfg, "dkd")(optuna.create_study().ask()))
    assert run.dkd_warmup_epochs == 20 and run.num_classes == 100
    reference = published.load_reference()
    reference = reference[reference["dataset"] == "cifar100"]
    for method, value in (("dkd", dkd), ("kd", kd)):
        hits = published._hits(reference, method, student, teacher)
        assert list(hits["value"]) == [value], method
    assert "best test epoch, mean of 5 runs" in published._hits(reference, "dkd", student, teacher)["source"].iloc[0]
    assert len(published._hits(reference, "teacher", teacher, teacher)) >= 1
