"""Text (GLUE) in kd/: metrics against scikit-learn and SciPy, loaders on tiny GLUE files in
every form, tokenisation and dynamic padding, text models, every method on text (STS-B as
regression), the regression losses by hand, AdamW's linear schedule, exact resume."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn import metrics as skm

from kd import ConfigError, TeacherStore, TrainConfig, build_method, build_model, count_parameters, train
from kd.data import load_data
from kd.data.glue import GlueFilesError
from kd.losses import continuation_kd_loss, label_loss, regression_kd_loss
from kd.metrics import Task, average_ranks, f1_binary, matthews_corrcoef, pearson, spearman
from kd.runtime import FrozenTeacher
from kd.train import make_optimizer
from text_fixtures import (GLUE_PRIMARY, GLUE_TASKS, save_tiny_bert, save_tokenizer, write_glue_hf,
                           write_glue_tsv, write_mrpc_ms_release)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return str(save_tokenizer(tmp_path_factory.mktemp("tokenizer")))


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    """Every task in GLUE's TSV layout."""
    root = tmp_path_factory.mktemp("glue")
    for task in GLUE_TASKS:
        write_glue_tsv(root, task)
    return root


def glue_cfg(task, data_dir, tokenizer, **kw):
    base = dict(dataset=f"glue-{task}", data_dir=str(data_dir), tokenizer=tokenizer, model="bert_L1_H16",
                method="ce", epochs=2, batch_size=8, optimizer="adamw", lr=1e-3, weight_decay=0.01,
                lr_schedule="linear", warmup_ratio=0.1, val_size=6, max_length=32, device="cpu")
    return TrainConfig.from_dict({**base, **kw})


# ---------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("seed", range(4))
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y, pred = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    pred[:120] = y[:120]  # better than chance
    assert matthews_corrcoef(pred, y) == pytest.approx(skm.matthews_corrcoef(y, pred))
    assert f1_binary(pred, y) == pytest.approx(skm.f1_score(y, pred))
    y3, p3 = rng.integers(0, 3, 150), rng.integers(0, 3, 150)
    assert matthews_corrcoef(p3, y3) == pytest.approx(skm.matthews_corrcoef(y3, p3))


def test_degenerate_metrics_follow_sklearn():
    y = np.array([0, 1, 0, 1])
    constant = np.zeros(4, dtype=int)
    assert matthews_corrcoef(constant, y) == skm.matthews_corrcoef(y, constant) == 0.0
    assert f1_binary(constant, y) == skm.f1_score(y, constant, zero_division=0) == 0.0
    assert pearson(np.ones(4), np.arange(4.0)) == 0.0  # undefined: 0, so selection still works


@pytest.mark.parametrize("seed", range(3))
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=80)
    y = 0.6 * x + rng.normal(size=80)
    ties = np.round(y * 2) / 2  # many ties: Spearman's average ranks matter
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic)
    assert spearman(x, ties) == pytest.approx(stats.spearmanr(x, ties).statistic)
    assert average_ranks(ties) == pytest.approx(stats.rankdata(ties))


def test_task_scores_logits_x100():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5], [0.2, 0.1]])
    labels = torch.tensor([0, 1, 1, 1])
    pred = np.array([0, 1, 0, 0])
    got = Task("classification", ("mcc", "f1", "accuracy")).score(logits, labels)
    assert list(got) == ["mcc", "f1", "accuracy"]
    assert got["accuracy"] == 50.0
    assert got["f1"] == pytest.approx(100 * skm.f1_score(labels.numpy(), pred))
    assert got["mcc"] == pytest.approx(100 * skm.matthews_corrcoef(labels.numpy(), pred))
    scores = torch.tensor([[0.5], [2.0], [3.5], [1.0]])
    target = torch.tensor([1.0, 2.5, 4.0, 0.0])
    reg = Task("regression", ("pearson", "spearman")).score(scores, target)
    assert reg["pearson"] == pytest.approx(100 * stats.pearsonr(scores[:, 0], target).statistic)
    assert reg["spearman"] == pytest.approx(100 * stats.spearmanr(scores[:, 0], target).statistic)
    with pytest.raises(ValueError, match="metrics"):
        Task("classification", ("bleu",))


# ---------------------------------------------------------------------------- loaders
EXPECTED = {  # task: (num_classes, primary metric, label dtype)
    task: ({"stsb": 1, "mnli": 3}.get(task, 2), GLUE_PRIMARY[task], torch.float32 if task == "stsb" else torch.int64)
    for task in GLUE_TASKS
}


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_glue_tsv_loads_every_task(glue_dir, tokenizer, task):
    from kd.data.glue import TASKS
    from text_fixtures import rows

    data = load_data(glue_cfg(task, glue_dir, tokenizer))
    classes, primary, dtype = EXPECTED[task]
    assert (data.num_classes, data.task.primary, data.train_y.dtype) == (classes, primary, dtype)
    assert len(data.train_x) + len(data.val_x) == 40 and len(data.val_x) == 6
    assert len(data.test_x) == 12  # GLUE dev is the test split
    assert data.train_x.dtype == torch.int64 and data.train_x.shape[1] == 2
    assert data.train_x.shape[2] <= 32
    expected = [r["label"] for r in rows(task, 12, 2)]
    if task == "stsb":
        assert data.test_y.tolist() == pytest.approx(expected)
    else:
        assert data.test_y.tolist() == expected  # label names mapped to GLUE's ids
    assert (data.extra_test.keys() == {"mm"}) == (task == "mnli")
    if task == "mnli":
        assert len(data.extra_test["mm"][0]) == 15
    pairs = len(TASKS[task].text) == 2
    assert bool((data.test_x[:, 1] == 1).any()) == pairs  # segment B only for sentence pairs


def test_qqp_skips_short_lines(glue_dir, tokenizer):
    data = load_data(glue_cfg("qqp", glue_dir, tokenizer))
    assert len(data.train_x) + len(data.val_x) == 40  # the cut line was written as a 41st row


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
@pytest.mark.parametrize("task", ["rte", "stsb", "mnli"])
def test_hugging_face_files_load_like_tsv(tmp_path, tokenizer, glue_dir, fmt, task):
    write_glue_hf(tmp_path, task, fmt, label_names=(fmt == "jsonl"))
    from_hf = load_data(glue_cfg(task, tmp_path, tokenizer))
    from_tsv = load_data(glue_cfg(task, glue_dir, tokenizer))
    for name in ("train_y", "val_y", "test_y"):
        assert torch.equal(getattr(from_hf, name), getattr(from_tsv, name)), name
    assert torch.equal(from_hf.test_x, from_tsv.test_x)
    if task == "mnli":
        assert set(from_hf.extra_test) == {"mm"}


def test_mrpc_ms_release_with_glue_dev_ids(tmp_path, tokenizer):
    write_mrpc_ms_release(tmp_path)
    data = load_data(glue_cfg("mrpc", tmp_path, tokenizer))
    # GLUE's dev = the 10 pairs of dev_ids.tsv, carved out of msr_paraphrase_train.txt
    assert len(data.test_x) == 10 and len(data.train_x) + len(data.val_x) == 30
    (tmp_path / "MRPC" / "dev_ids.tsv").unlink()
    data = load_data(glue_cfg("mrpc", tmp_path, tokenizer))
    assert len(data.test_x) == 12 and len(data.train_x) + len(data.val_x) == 40  # msr_paraphrase_test.txt


def test_missing_glue_files_say_where_they_belong(tmp_path, tokenizer):
    with pytest.raises(GlueFilesError, match=r"data_dir: no SST-2 folder in .*SST-2/ \(GLUE TSV: train.tsv and dev.tsv"):
        load_data(glue_cfg("sst2", tmp_path, tokenizer))
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_text("sentence\tlabel\ngood\t1\n")
    with pytest.raises(GlueFilesError, match="lacks the test file"):
        load_data(glue_cfg("sst2", tmp_path, tokenizer))
    write_glue_tsv(tmp_path, "rte")
    bad = tmp_path / "RTE" / "dev.tsv"
    bad.write_text(bad.read_text().replace("not_entailment", "maybe"))
    with pytest.raises(GlueFilesError, match="label 'maybe' is not allowed for rte"):
        load_data(glue_cfg("rte", tmp_path, tokenizer))


def test_tokenised_tensors_are_cached(glue_dir, tokenizer):
    cfg = glue_cfg("sst2", glue_dir, tokenizer)
    load_data(cfg)
    cached = list((glue_dir / ".kd-cache").glob("glue-sst2-*.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    load_data(cfg.replace(val_size=8, data_seed=3))  # another split of the same tensors: no rebuild
    assert cached[0].stat().st_mtime_ns == stamp
    load_data(cfg.replace(max_length=16))  # other tensors: another file
    assert len(list((glue_dir / ".kd-cache").glob("glue-sst2-*.pt"))) == 2


# ---------------------------------------------------------------------------- tokens and padding
def test_dynamic_padding_and_attention_mask(glue_dir, tokenizer):
    data = load_data(glue_cfg("rte", glue_dir, tokenizer))
    lengths = (data.train_x[:, 0] != data.pad_id).sum(1)
    short = lengths.argsort()[:4]
    batch = data.inputs(data.train_x[short])
    assert batch.shape == (4, 2, int(lengths[short].max()))  # trimmed to the batch's longest
    assert batch.shape[2] < data.train_x.shape[2]
    torch.manual_seed(0)
    model = build_model("bert_L1_H16", 2, **data.model_kwargs).eval()
    with torch.no_grad():  # padding is masked: the same logits with or without extra padding
        torch.testing.assert_close(model(batch), model(data.train_x[short]), rtol=1e-5, atol=1e-5)


def test_template_text_is_generated_offline_with_its_tokenizer(tmp_path):
    cfg = TrainConfig(dataset="template-text", model="bert_L1_H16", num_samples=400, val_size=40,
                      data_dir=str(tmp_path))
    data = load_data(cfg)
    assert (len(data.train_x), len(data.val_x), len(data.test_x)) == (280, 40, 80)
    assert set(data.train_y.tolist()) == {0, 1} and data.task.metrics == ("accuracy", "f1", "mcc")
    saved = list((tmp_path / ".kd-cache").glob("template-text-tokenizer-*/tokenizer_config.json"))
    assert len(saved) == 1  # saved with save_pretrained, read back with AutoTokenizer
    assert (data.train_x[:, 0] == 1).sum() == 0  # a closed vocabulary: no [UNK]
    again = load_data(cfg)
    assert torch.equal(again.train_x, data.train_x)


# ---------------------------------------------------------------------------- models
def test_bert_family_ladder_and_errors():
    kwargs = dict(vocab_size=100, pad_token_id=0, max_length=32)
    counts = [count_parameters(build_model(f"bert_L{l}_H{h}", 2, **kwargs)) for l, h in ((1, 16), (1, 32), (2, 64))]
    assert counts == sorted(counts)
    model = build_model("bert_L2_H128", 3, **kwargs)
    config = model.model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.intermediate_size, config.vocab_size, config.max_position_embeddings) == (2, 128, 2, 512, 100, 32)
    assert build_model("bert_L1_H16", 1, **kwargs)(torch.zeros(2, 2, 5, dtype=torch.long)).shape == (2, 1)
    with pytest.raises(ValueError, match="needs vocab_size"):
        build_model("bert_L1_H16", 2)
    with pytest.raises(ConfigError, match="model: hidden size 200 is not allowed"):
        build_model("bert_L1_H200", 2, **kwargs)
    with pytest.raises(ValueError, match="unknown model 'bert_L0_H16'.*bert_L<layers>_H<hidden>"):
        build_model("bert_L0_H16", 2, **kwargs)


def test_hf_models_load_from_a_saved_folder(tmp_path):
    folder = save_tiny_bert(tmp_path / "tiny-bert")
    model = build_model(f"hf:{folder}", 3, vocab_size=10, pad_token_id=0, max_length=32)
    assert model.model.config.num_labels == 3 and count_parameters(model) > 0
    with torch.device("meta"):  # the architecture alone, no weights: what parameter counts use
        shell = build_model(f"hf:{folder}", 3, pretrained=False)
    assert count_parameters(shell) == count_parameters(model)
    with pytest.raises(ConfigError, match="tokenizer: its padding id 5 is not allowed"):
        build_model(f"hf:{folder}", 2, vocab_size=10, pad_token_id=5, max_length=32)
    with pytest.raises(FileNotFoundError, match="model: 'hf:/no/such/model' cannot be loaded"):
        build_model("hf:/no/such/model", 2)


@pytest.mark.parametrize("changes, message", [
    (dict(model="bert_L1_H16", tokenizer=None), "tokenizer: None is not allowed; dataset glue-sst2 with model bert_L1_H16"),
    (dict(model="resnet8"), "model: 'resnet8' is not allowed; dataset glue-sst2 needs a text model"),
    (dict(model="mlp1d_8", dataset="template-text"), "model: 'mlp1d_8' is not allowed; dataset template-text needs a text"),
    (dict(warmup_ratio=1.0), "warmup_ratio: 1.0 is not allowed"),
    (dict(optimizer="adam"), "optimizer: 'adam' is not allowed; allowed: sgd, adamw"),
    (dict(max_length=2), "max_length: 2 is not allowed"),
    (dict(dataset="glue-wnli"), "dataset: 'glue-wnli' is not allowed; allowed: cifar10, cifar100, glue-cola"),
])
def test_bad_text_config_names_the_field(changes, message):
    values = {"dataset": "glue-sst2", "model": "bert_L1_H16", "tokenizer": "some/tokenizer", **changes}
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict(values)
    assert str(error.value).startswith(message)


# ---------------------------------------------------------------------------- losses
def test_regression_losses_by_hand():
    zs = torch.tensor([[1.0], [3.0]])
    zt = torch.tensor([[2.0], [1.0]])
    y = torch.tensor([0.0, 5.0])
    # MSE(z_s, y) = ((1 - 0)^2 + (3 - 5)^2) / 2 = 2.5; MSE(z_s, z_t) = (1 + 4) / 2 = 2.5
    assert label_loss(zs, y, regression=True).item() == pytest.approx(2.5)
    # (1 - 0.3) * 2.5 + 0.3 * MSE([1, 3], [4, 0]) = 1.75 + 0.3 * (9 + 9) / 2 = 4.45
    assert regression_kd_loss(zs, torch.tensor([[4.0], [0.0]]), y, 0.3).item() == pytest.approx(4.45)
    assert regression_kd_loss(zs, zt, y, 0.5).item() == pytest.approx(2.5)
    # psi * MSE + (1 - psi) * hinge, T = 1, tau_max = 2: Phi = 1, hinge = mean((1-2)^2, (3-1)^2) = 2.5
    assert continuation_kd_loss(zs, zt, y, T=1, tau_max=2, psi=0.25, margin=0.0,
                                regression=True).item() == pytest.approx(0.25 * 2.5 + 0.75 * 2.5)
    # classification keeps CE
    logits, labels = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    assert label_loss(logits, labels).item() == pytest.approx(math.log(1 + math.exp(-2.0)))


# ---------------------------------------------------------------------------- methods on text
@pytest.mark.parametrize("task", ["sst2", "stsb"])
@pytest.mark.parametrize("method", ["ce", "kd", "annealing", "continuation", "takd"])
def test_every_method_forward_backward_on_text(glue_dir, tokenizer, task, method):
    cfg = glue_cfg(task, glue_dir, tokenizer, method=method, teacher="bert_L1_H32", assistant="bert_L1_H16",
                   epochs=4, tau_max=2, stage_epochs=1, psi_epochs=2)
    data = load_data(cfg)
    torch.manual_seed(0)
    student = build_model(cfg.model, data.num_classes, **data.model_kwargs)
    teacher = FrozenTeacher(build_model("bert_L1_H32", data.num_classes, **data.model_kwargs))
    m = build_method(cfg)
    x = data.inputs(data.train_x[:5])
    y = data.train_y[:5]
    label_term = "label_mse" if task == "stsb" else "ce"
    for index, phase in enumerate(m.phases(), start=1):
        ctx = m.context(index, 0)
        zs = student(x)  # once: dropout makes every call differ
        terms = m.losses(zs, teacher(x) if phase.uses_teacher else None, y, ctx)
        assert label_term in terms or phase.uses_teacher and method == "annealing"
        if task == "stsb" and method == "kd":
            assert set(terms) == {"label_mse", "teacher_mse"}
            expected = regression_kd_loss(zs, teacher(x), y, cfg.alpha)
            assert sum(terms.values()).item() == pytest.approx(expected.item(), rel=1e-5)
        student.zero_grad()
        sum(terms.values()).backward()
        grads = [p.grad for p in student.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert all(p.grad is None for p in teacher.parameters())


def test_train_reports_glue_metric_names(glue_dir, tokenizer, tmp_path):
    seen = []
    result = train(glue_cfg("mrpc", glue_dir, tokenizer, epochs=2), report=lambda m, s: seen.append(m))
    last = seen[-1]
    assert last["primary_metric"] == "f1" and last["val_acc"] == last["val_f1"]
    assert last["test_acc"] == last["test_f1"] and {"val_accuracy", "test_accuracy"} <= set(last)
    assert last["selected_test_f1"] == last["selected_test_acc"] == result["test_acc"]
    assert result["metrics"].keys() == {"test_f1", "test_accuracy"}
    mnli = []
    train(glue_cfg("mnli", glue_dir, tokenizer, epochs=1), report=lambda m, s: mnli.append(m))
    assert {"test_accuracy", "test_accuracy_mm", "selected_test_accuracy_mm"} <= set(mnli[-1])
    stsb = []
    train(glue_cfg("stsb", glue_dir, tokenizer, epochs=1), report=lambda m, s: stsb.append(m))
    assert stsb[-1]["primary_metric"] == "pearson" and "loss_label_mse" in stsb[-1]
    assert {"val_pearson", "val_spearman", "test_spearman"} <= set(stsb[-1])


# ---------------------------------------------------------------------------- optimiser
def test_adamw_linear_warmup_and_decay_per_step(glue_dir, tokenizer):
    cfg = glue_cfg("sst2", glue_dir, tokenizer, lr=2e-5, warmup_ratio=0.2)
    model = build_model("bert_L1_H16", 2, vocab_size=30, pad_token_id=0, max_length=32)
    optimizer, scheduler = make_optimizer(cfg, model, epochs=2, steps_per_epoch=5)  # 10 steps, 2 of warmup
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decayed["params"]) and all(p.ndim < 2 for p in plain["params"])
    lrs = []
    for _ in range(11):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # up over 2 steps from 0, then down to 0 at step 10: 8 steps of 1/8
    expected = [0.0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0.0]
    assert lrs == pytest.approx([2e-5 * f for f in expected])


def test_linear_schedule_restarts_per_phase_in_train(glue_dir, tokenizer, tmp_path):
    store = TeacherStore(tmp_path / "teachers")
    cfg = store.resolve(glue_cfg("sst2", glue_dir, tokenizer, method="annealing", teacher="bert_L1_H32",
                                 teacher_epochs=1, epochs=4, tau_max=2, stage_epochs=1, warmup_ratio=0.0))
    seen = []
    train(cfg, report=lambda m, s: seen.append(m))
    # 34 training examples (40 minus 6 held out) in batches of 8: 5 steps per epoch. Each
    # 2-epoch phase decays from lr to 0 over 10 steps, restarting in phase 2.
    assert [m["lr"] for m in seen] == pytest.approx([1e-3, 5e-4, 1e-3, 5e-4])


# ---------------------------------------------------------------------------- resume and teachers
class Stop(Exception):
    pass


@pytest.mark.parametrize("method", ["annealing", "kd"])
def test_exact_resume_of_a_text_run(glue_dir, tokenizer, tmp_path, method):
    store = TeacherStore(tmp_path / "teachers")
    cfg = store.resolve(glue_cfg("stsb", glue_dir, tokenizer, method=method, teacher="bert_L1_H32",
                                 teacher_epochs=2, epochs=4, tau_max=2, stage_epochs=1))
    straight = train(cfg)
    state = tmp_path / "state.pt"

    def stop(m, save):
        if m["epoch"] == 2:
            save(state)
            raise Stop

    with pytest.raises(Stop):
        train(cfg, report=stop)
    resumed = train(cfg, resume_from=state)
    for name, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][name]), name
    assert (straight["best_val_acc"], straight["metrics"]) == (resumed["best_val_acc"], resumed["metrics"])


def test_a_fine_tuned_hf_teacher_is_used_as_is(glue_dir, tokenizer, tmp_path):
    folder = save_tiny_bert(tmp_path / "finetuned", num_labels=2)
    from kd.bank import bank_key
    from kd.train import evaluate_teacher

    cfg = glue_cfg("rte", glue_dir, tokenizer, method="kd", teacher_checkpoint=f"hf:{folder}")
    assert TeacherStore(tmp_path / "teachers").resolve(cfg) == cfg  # nothing to train
    result = train(cfg)
    assert result["epochs_run"] == 2 and result["bank_bytes"] > 0  # the bank from the hf teacher
    scores = evaluate_teacher(cfg)
    assert scores["epochs_run"] == 0 and set(scores["metrics"]) == {"test_accuracy"}
    with pytest.raises(Exception, match="teacher_checkpoint: 'hf:.*' does not fit glue-mnli"):
        evaluate_teacher(glue_cfg("mnli", glue_dir, tokenizer, teacher_checkpoint=f"hf:{folder}"))
    with pytest.raises(Exception, match="teacher_checkpoint: 'hf:.*' does not fit glue-mnli"):  # the live teacher too
        train(glue_cfg("mnli", glue_dir, tokenizer, method="kd", teacher_checkpoint=f"hf:{folder}", teacher_bank=False))
    student = train(glue_cfg("rte", glue_dir, None, model=f"hf:{folder}", epochs=1))  # its own tokenizer
    assert student["student_params"] == count_parameters(build_model(f"hf:{folder}", 2))
    # a folder is named by its files, not hashed in full: the key holds while they do, and a
    # re-saved weight file (another fine-tune in the same place) gets a bank of its own
    key = bank_key(f"hf:{folder}", cfg)
    assert bank_key(f"hf:{folder}", cfg) == key
    config = Path(folder) / "config.json"
    config.write_text(config.read_text() + "\n")
    assert bank_key(f"hf:{folder}", cfg) != key


def test_takd_trains_its_assistant_on_text(glue_dir, tokenizer, tmp_path):
    store = TeacherStore(tmp_path / "teachers")
    cfg = store.resolve(glue_cfg("stsb", glue_dir, tokenizer, method="takd", teacher="bert_L1_H32",
                                 assistant="bert_L1_H16", teacher_epochs=1, epochs=1))
    assert cfg.assistant_checkpoint and cfg.teacher_checkpoint != cfg.assistant_checkpoint
    assistant = json.loads((Path(cfg.assistant_checkpoint).parent / "config.json").read_text())
    assert (assistant["method"], assistant["tokenizer"], assistant["optimizer"]) == ("kd", tokenizer, "adamw")
    result = train(cfg)
    assert result["primary_metric"] == "pearson" and result["bank_bytes"] > 0


def test_glue_study_data_dir_must_exist():
    from study.config import StudyConfig

    with pytest.raises(ConfigError, match="data_dir: '/no/glue' is not allowed; the folder does not exist "
                                          r"\(put GLUE's task folders there"):
        StudyConfig.preset("glue-sst2-bert").replace(data_dir="/no/glue")
