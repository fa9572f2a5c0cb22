"""train(): reports, phases, checkpoint selection, exact resume, divergence, teacher store."""
import json
import math
import time

import pytest
import torch

import importlib
from kd import ConfigError, CorruptCheckpointError, DivergedError, TrainConfig, train
from kd.checkpoints import load_model
from kd.store import teacher_config

train_module = importlib.import_module("kd.train")  # the package exports the function `train` under the same name

SMALL = dict(model="mlp1d_8", num_samples=1200, val_size=200, batch_size=64, teacher_epochs=8)


class Stop(Exception):
    pass


def annealing_cfg(teacher_path, **kw):
    return TrainConfig.from_dict({**SMALL, "method": "annealing", "teacher": "cnn1d_16",
                                  "teacher_checkpoint": str(teacher_path), "epochs": 4,
                                  "tau_max": 2, "stage_epochs": 1, **kw})


def test_reports_every_epoch_with_schedule(tiny_teacher):
    _, _, path = tiny_teacher
    seen = []
    result = train(annealing_cfg(path), report=lambda m, save: seen.append(m))
    assert [m["epoch"] for m in seen] == [1, 2, 3, 4]
    assert [m["phase"] for m in seen] == [1, 1, 2, 2]
    assert [m["T"] for m in seen] == [2, 1, None, None]
    assert [m["phi"] for m in seen] == [0.5, 1.0, None, None]
    # the step schedule restarts in each phase; in a 2-epoch phase the 50% and 75% marks
    # (int(2/2) = int(2*3/4) = 1) coincide, so epoch 2 is already at lr x 0.01
    assert [m["lr"] for m in seen] == pytest.approx([0.1, 0.001, 0.1, 0.001])
    assert [m["stage_end"] for m in seen] == [True, True, False, True]
    assert set(seen[0]) >= {"loss_mse", "val_acc", "test_acc", "epoch_seconds", "samples_per_s"}
    assert "loss_ce" in seen[2] and "loss_mse" not in seen[2]
    assert [(m["phase_name"], m["phase_epoch"]) for m in seen] == [("anneal", 1), ("anneal", 2), ("finetune", 1),
                                                                  ("finetune", 2)]
    assert [m["final_phase_epoch"] for m in seen] == [0, 0, 1, 2]  # the pruner's clock runs in phase 2 only
    assert [m["psi"] for m in seen] == [None] * 4 and [m["finished"] for m in seen] == [False, False, False, True]
    # each report carries the checkpoint selected so far in its phase
    for i, m in enumerate(seen):
        phase = [p for p in seen[:i + 1] if p["phase"] == m["phase"]]
        chosen = max(phase, key=lambda p: p["val_acc"])  # the first of equal scores
        assert (m["best_val_acc"], m["selected_test_acc"], m["selected_epoch"]) == \
            (chosen["val_acc"], chosen["test_acc"], chosen["epoch"])
    # the selected checkpoint is the best validation epoch of the final phase
    phase2 = seen[2:]
    best = max(phase2, key=lambda m: m["val_acc"])
    assert result["best_val_acc"] == best["val_acc"] and result["test_acc"] == best["test_acc"]
    assert result["epochs_run"] == 4


def test_phase2_starts_from_best_phase1_student(tiny_teacher, monkeypatch):
    _, _, path = tiny_teacher
    cfg = annealing_cfg(path, epochs=7, tau_max=2, stage_epochs=2)  # phase 1: 4 epochs, phase 2: 3
    real = train_module.make_optimizer

    def frozen_phase2(cfg_, model, epochs, *steps):  # lr 0 in phase 2: parameters stay where it starts
        optimizer, scheduler = real(cfg_, model, epochs, *steps)
        if epochs == 3:
            for group in optimizer.param_groups:
                group["lr"] = 0.0
            scheduler.base_lrs = [0.0]
        return optimizer, scheduler

    monkeypatch.setattr(train_module, "make_optimizer", frozen_phase2)
    states = {}

    def report(m, save):
        if m["epoch"] in (4, 7):
            save(states.setdefault(m["epoch"], str(path.parent / f"state{m['epoch']}.pt")))

    train(cfg, report=report)
    end1 = torch.load(states[4], weights_only=False)
    end2 = torch.load(states[7], weights_only=False)
    best1 = end1["best"]["state_dict"]
    assert end1["best"]["epoch"] in (1, 2, 3, 4)
    for name, value in end2["student"].items():
        if "running" not in name and "num_batches" not in name:  # BN statistics still move
            assert torch.equal(value, best1[name]), name


@pytest.mark.parametrize("method, stop_at", [("annealing", 2), ("annealing", 3), ("continuation", 2), ("takd", 2)])
def test_exact_resume(tiny_teacher, tmp_path, method, stop_at):
    store, _, path = tiny_teacher
    # The hinge sums squared logit errors over classes: it needs a smaller lr than the MSE.
    lr = 0.01 if method == "continuation" else 0.1
    cfg = annealing_cfg(path, method=method, psi_epochs=3, assistant="cnn1d_8", lr=lr)
    cfg = store.resolve(cfg)
    straight = train(cfg)
    state_file = tmp_path / "state.pt"

    def stop(m, save):
        if m["epoch"] == stop_at:
            save(state_file)
            raise Stop

    with pytest.raises(Stop):
        train(cfg, report=stop)
    resumed_epochs = []
    resumed = train(cfg, report=lambda m, s: resumed_epochs.append(m["epoch"]), resume_from=state_file)
    assert resumed_epochs == list(range(stop_at + 1, 5))
    for name, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][name]), name
    assert (straight["best_val_acc"], straight["test_acc"]) == (resumed["best_val_acc"], resumed["test_acc"])


def test_resume_refuses_another_config(tiny_teacher, tmp_path):
    _, _, path = tiny_teacher
    cfg = annealing_cfg(path)
    state = tmp_path / "s.pt"

    def stop(m, save):
        save(state)
        raise Stop

    with pytest.raises(Stop):
        train(cfg, report=stop)
    with pytest.raises(ConfigError) as refused:
        train(cfg.replace(seed=5), resume_from=state)
    assert str(refused.value) == "resume_from: the saved state belongs to a different configuration"


def test_compile_wraps_the_student_and_trains_through_the_compiled_module(monkeypatch):
    """torch.compile is a boundary here (inductor needs minutes and a compiler on CPU): a
    stand-in records what it was given and counts the forward passes made through it."""
    from kd.data import load_data
    from kd.models.mnist1d import MLP1d

    compiled = []

    class Compiled(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module, self.calls = module, 0

        def forward(self, x):
            self.calls += 1
            return self.module(x)

    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(Compiled(module)) or compiled[-1])
    cfg = TrainConfig.from_dict({**SMALL, "method": "ce", "epochs": 1})
    train(cfg)
    assert compiled == []  # compile off by default
    train(cfg.replace(compile=True))
    (wrapper,) = compiled
    steps = math.ceil(len(load_data(cfg).train_x) / cfg.batch_size)
    assert isinstance(wrapper.module, MLP1d) and wrapper.calls == steps  # one forward per batch


def test_evaluate_teacher_scores_the_given_checkpoint_as_train_would(tiny_teacher):
    from kd.models import count_parameters
    from kd.train import evaluate_teacher

    store, cfg, path = tiny_teacher
    given = teacher_config(cfg).replace(teacher_checkpoint=str(path))
    called = time.perf_counter()
    scores = evaluate_teacher(given)
    whole_call = time.perf_counter() - called
    stored = store.metrics(teacher_config(cfg))
    assert (scores["best_val_acc"], scores["test_acc"]) == (stored["best_val_acc"], stored["test_acc"])
    assert scores["primary_metric"] == "accuracy" and scores["epochs_run"] == 0
    assert scores["student_params"] == count_parameters(load_model(path)) > 0
    assert 0 < scores["seconds"] < whole_call and set(scores["metrics"]) == {"test_accuracy"}


def test_divergence_raises(tiny_teacher):
    cfg = TrainConfig.from_dict({**SMALL, "method": "ce", "epochs": 3, "lr": 1e12})
    with pytest.raises(DivergedError, match=r"^loss became (nan|inf) at epoch 1 \(phase train, lr 1e\+12\)$"):
        train(cfg)


def test_epoch_losses_are_the_example_weighted_mean_of_the_batch_losses(tiny_teacher, monkeypatch):
    """What train() reports per epoch, against every batch's loss terms recorded as they happen
    (760 training examples in batches of 64: the last batch holds 56, so the weights matter)."""
    from kd.data import load_data

    _, _, path = tiny_teacher
    real_build = train_module.build_method
    batches = []

    def recording(cfg):
        method = real_build(cfg)
        losses = method.losses

        def record(student_logits, teacher_logits, labels, ctx):
            terms = losses(student_logits, teacher_logits, labels, ctx)
            batches.append((len(labels), {k: v.item() for k, v in terms.items()}))
            return terms

        method.losses = record
        return method

    monkeypatch.setattr(train_module, "build_method", recording)
    reported = []
    called = time.perf_counter()
    result = train(annealing_cfg(path, epochs=3, lr=0.05), report=lambda m, save: reported.append(m))
    whole_call = time.perf_counter() - called
    n_train = len(load_data(annealing_cfg(path)).train_x)
    per_epoch = math.ceil(n_train / 64)
    assert len(batches) == 3 * per_epoch and {n for n, _ in batches} == {64, n_train - 64 * (per_epoch - 1)}
    for epoch, m in enumerate(reported):
        seen = batches[epoch * per_epoch:(epoch + 1) * per_epoch]
        for name in seen[0][1]:
            expected = sum(n * terms[name] for n, terms in seen) / sum(n for n, _ in seen)
            assert m[f"loss_{name}"] == pytest.approx(expected, rel=1e-9), (epoch, name)
        assert m["train_loss"] == pytest.approx(sum(m[f"loss_{k}"] for k in seen[0][1]), rel=1e-12)
        # the epoch's time is part of the call's, and the throughput follows from it
        assert 0 < m["epoch_seconds"] < whole_call and m["samples_per_s"] > n_train / whole_call
        assert m["samples_per_s"] * m["epoch_seconds"] >= n_train  # training is part of the epoch
    assert 0 < result["seconds"] < whole_call


@pytest.mark.parametrize("method", ["annealing", "kd"])
def test_teacher_is_not_changed_by_student_training(tiny_teacher, monkeypatch, method):
    """The teacher the run holds in memory (live, no bank), BN statistics included, ends as
    stored: a teacher left in train mode or with gradients would drift during the run."""
    _, _, path = tiny_teacher
    stored = {k: v.clone() for k, v in load_model(path).state_dict().items()}
    held = []

    def keep(*args, **kwargs):
        held.append(real_load_teacher(*args, **kwargs))
        return held[-1]

    real_load_teacher = train_module.load_teacher
    monkeypatch.setattr(train_module, "load_teacher", keep)
    extra = {"epochs": 3} if method == "annealing" else {"method": "kd", "epochs": 2, "tau_max": 10}
    train(annealing_cfg(path, teacher_bank=False, **extra))
    (teacher,) = held
    assert any("running_mean" in k for k in stored)  # the teacher has BN statistics to lose
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    after = teacher.model.state_dict()
    assert all(torch.equal(stored[k], after[k]) for k in stored)
    teacher.train()  # frozen whatever callers do
    assert not teacher.training and not teacher.model.training


def test_checkpoint_is_selected_on_validation_where_the_best_test_epoch_is_another(monkeypatch):
    """Scores scripted per epoch: validation peaks at epoch 2, test at epoch 3. The run reports
    epoch 2's test score and returns epoch 2's weights; the paper protocol picks epoch 3."""
    val, test = [50.0, 70.0, 60.0, 65.0], [80.0, 55.0, 90.0, 60.0]

    def run(**kw):
        calls, weights = iter(range(4)), []

        def scripted(model, data, autocast):
            i = next(calls)
            weights.append({k: v.clone() for k, v in model.state_dict().items()})
            return {"val_accuracy": val[i], "test_accuracy": test[i]}

        monkeypatch.setattr(train_module, "scores", scripted)
        return train(TrainConfig.from_dict({**SMALL, "method": "ce", "epochs": 4, **kw})), weights

    result, weights = run()
    assert (result["best_val_acc"], result["test_acc"], result["selected_epoch"]) == (70.0, 55.0, 2)
    assert result["metrics"] == {"test_accuracy": 55.0} and result["selection"] == "validation"
    assert all(torch.equal(result["state_dict"][k], weights[1][k]) for k in weights[1])
    assert not all(torch.equal(result["state_dict"][k], weights[3][k]) for k in weights[3])
    paper, _ = run(paper_protocol=True)
    assert (paper["test_acc"], paper["selected_epoch"], paper["selection"]) == (90.0, 3, "test (paper protocol)")
    val[3] = 70.0  # a tie with epoch 2: the earlier checkpoint stays selected
    tied, _ = run()
    assert (tied["selected_epoch"], tied["test_acc"]) == (2, 55.0)


def test_store_trains_once_and_detects_corruption(tiny_teacher):
    store, cfg, path = tiny_teacher
    mtime = path.stat().st_mtime_ns
    assert store.get_or_train(teacher_config(cfg)) == path and path.stat().st_mtime_ns == mtime
    assert json.loads((path.parent / "config.json").read_text())["model"] == "cnn1d_16"
    # a different teacher config has a different key
    assert store.path_for(teacher_config(cfg.replace(teacher_seed=1))) != path
    corrupt = path.parent.parent / "copy" / "model.pt"
    corrupt.parent.mkdir()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    (corrupt.parent / "model.pt.sha256").write_text((path.parent / "model.pt.sha256").read_text())
    with pytest.raises(CorruptCheckpointError, match="checksum"):
        load_model(corrupt)
    corrupt.write_bytes(b"not a checkpoint")
    (corrupt.parent / "model.pt.sha256").unlink()
    with pytest.raises(CorruptCheckpointError, match="cannot be loaded"):
        load_model(corrupt)


def test_missing_teacher_checkpoint_is_named():
    cfg = TrainConfig.from_dict({**SMALL, "method": "kd", "teacher": "cnn1d_16", "epochs": 2})
    with pytest.raises(ValueError, match="teacher_checkpoint"):
        train(cfg)


def test_grad_clip_bounds_every_step():
    """A clip of 1e-9 leaves the student where it started (as an lr of 1e-12 does); the same
    lr unclipped moves it. Every method trains through the same step, CE stands for all."""
    base = TrainConfig.from_dict({**SMALL, "method": "ce", "epochs": 2, "lr": 0.5, "weight_decay": 0.0})

    def val_curve(cfg):
        seen = []
        train(cfg, report=lambda m, save: seen.append(m["val_acc"]))
        return seen

    frozen = val_curve(base.replace(lr=1e-12))
    assert val_curve(base.replace(grad_clip=1e-9)) == frozen
    assert max(val_curve(base)) > max(frozen) + 5
    with pytest.raises(Exception, match="grad_clip: 0.0 is not allowed"):
        base.replace(grad_clip=0.0).validate()


def lrs(cfg, epochs, steps_per_epoch=None, model=None):
    """The lr of every step of a phase under make_optimizer's schedule (steps_per_epoch None:
    make_optimizer's default)."""
    model = model or torch.nn.Linear(2, 2)
    steps = () if steps_per_epoch is None else (steps_per_epoch,)
    optimizer, scheduler = train_module.make_optimizer(cfg, model, epochs, *steps)
    seen = []
    for _ in range(epochs * (steps_per_epoch or 1)):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_step_schedule_is_x01_at_half_and_x001_at_three_quarters_of_the_phase():
    cfg = TrainConfig(lr=0.5, lr_schedule="step")
    assert lrs(cfg, 8) == pytest.approx([0.5] * 4 + [0.05] * 2 + [0.005] * 2)
    assert lrs(cfg, 10) == pytest.approx([0.5] * 5 + [0.05] * 2 + [0.005] * 3)  # int(7.5) = 7


def test_cosine_schedule_runs_half_a_cosine_over_the_phase():
    cfg = TrainConfig(lr=0.4, lr_schedule="cosine")
    assert lrs(cfg, 4) == pytest.approx([0.4 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)])


def test_linear_schedule_warms_up_then_decays_to_zero():
    factor = train_module.linear_warmup_decay(total_steps=10, warmup_steps=2)
    assert [factor(s) for s in range(11)] == pytest.approx([0, 0.5, 1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0])
    assert train_module.linear_warmup_decay(total_steps=2, warmup_steps=1)(1) == 1.0
    assert train_module.linear_warmup_decay(total_steps=3, warmup_steps=0)(0) == 1.0
    # without steps_per_epoch the linear schedule spans one step per epoch
    cfg = TrainConfig(optimizer="adamw", lr=1.0, lr_schedule="linear", warmup_ratio=0.0)
    assert lrs(cfg, 4) == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_optimisers_and_where_weight_decay_applies():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    # 0.05, not AdamW's own default of 0.01: a group that lost its setting would still pass
    adamw = TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.05, lr_schedule="linear")
    optimizer, _ = train_module.make_optimizer(adamw, model, 2, 3)
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, plain = optimizer.param_groups
    # decay on the matrix only; biases and the LayerNorm's weight and bias go without
    assert [p.shape for p in decayed["params"]] == [torch.Size([4, 3])] and decayed["weight_decay"] == 0.05
    assert len(plain["params"]) == 3 and plain["weight_decay"] == 0.0
    sgd = TrainConfig(lr=0.1, momentum=0.8, weight_decay=5e-4)
    optimizer, _ = train_module.make_optimizer(sgd, model, 2)
    (group,) = optimizer.param_groups
    assert isinstance(optimizer, torch.optim.SGD) and len(group["params"]) == 4
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.8, 5e-4)


def test_takd_distils_from_its_assistant_not_the_teacher(tiny_teacher, tmp_path, monkeypatch):
    _, _, path = tiny_teacher
    assistant = tmp_path / "assistant.pt"
    assistant.write_bytes(path.read_bytes())  # same weights, another file: which one is loaded
    loaded = []
    real = train_module.load_teacher
    monkeypatch.setattr(train_module, "load_teacher", lambda p, *a, **k: loaded.append(p) or real(p, *a, **k))
    cfg = TrainConfig.from_dict({**SMALL, "method": "takd", "teacher": "cnn1d_16", "assistant": "cnn1d_16",
                                 "teacher_checkpoint": str(path), "assistant_checkpoint": str(assistant),
                                 "epochs": 1, "teacher_bank": False})
    train(cfg)
    assert loaded == [str(assistant)]
    with pytest.raises(ConfigError, match=r"^assistant_checkpoint: None is not allowed; method takd"):
        train(cfg.replace(assistant_checkpoint=None))
    with pytest.raises(ConfigError, match=r"^teacher_checkpoint: None is not allowed; method kd"):
        train(cfg.replace(method="kd", teacher_checkpoint=None))
