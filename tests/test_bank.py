"""Teacher logit bank (kd/bank.py): exact against the live teacher, same training, storage.

Tolerances. A float16 entry is the live logit rounded to 11 significant bits: relative
error <= 2**-11 ~ 4.9e-4, so bank-vs-teacher checks use rtol 1e-3 (plus atol 1e-5 for
logits near zero and the ~1e-6 float32 noise of different batch compositions in the
convolution kernels). The "same losses" check uses a float32 bank, where the only
difference from the live teacher is that kernel noise (~1e-6 relative), so per-epoch
losses agree to rtol 1e-5; with the default float16 bank they agree to the rounding
above carried through a few SGD steps (rtol 1e-2, checked as well).
"""
import importlib
import time
from pathlib import Path

import pytest
import torch

from kd import ConfigError, TrainConfig, train
from kd.bank import (CorruptBankError, TeacherBank, bank_key, build_bank, estimate_bank_bytes,
                     get_or_build_bank, load_bank, save_bank)
from kd.checkpoints import save_model
from kd.data import Data, load_data
from kd.data.augment import IDENTITY_VIEW, NUM_CIFAR_VIEWS, view_id
from kd.models import build_model
from kd.runtime import FrozenTeacher, load_teacher

bank_module = importlib.import_module("kd.bank")

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
N_TRAIN = 24


def cifar_like(seed=0, n_train=N_TRAIN, n_eval=8) -> Data:
    g = torch.Generator().manual_seed(seed)
    img = lambda n: torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    lab = lambda n: torch.randint(0, 10, (n,), generator=g)
    return Data("cifar10", 10, img(n_train), lab(n_train), img(n_eval), lab(n_eval), img(n_eval),
                lab(n_eval), num_views=NUM_CIFAR_VIEWS, mean=MEAN, std=STD)


@pytest.fixture(scope="module")
def image_teacher(tmp_path_factory):
    """A small real CIFAR model with non-trivial BN statistics, stored like a teacher."""
    torch.manual_seed(1)
    model = build_model("plain2", 10)
    for m in model.modules():  # eval-mode BN with random running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    path = save_model(tmp_path_factory.mktemp("img") / "teacher.pt", "plain2", 10, model.state_dict())
    return path


@pytest.fixture(scope="module")
def image_bank(image_teacher):
    data = cifar_like()
    teacher = load_teacher(str(image_teacher), torch.device("cpu"))
    return data, teacher, build_bank(teacher, data, batch_size=1000)


def image_cfg(teacher_path, **kw):
    return TrainConfig.from_dict({"dataset": "cifar10", "data_dir": "/unused", "model": "plain2",
                                  "method": "annealing", "teacher": "plain2",
                                  "teacher_checkpoint": str(teacher_path), "epochs": 3, "tau_max": 2,
                                  "stage_epochs": 1, "batch_size": 8, "lr": 0.05, "device": "cpu",
                                  "val_size": 8, **kw})


def test_bank_matches_teacher_on_random_example_view_pairs(image_bank):
    data, teacher, bank = image_bank
    assert bank.logits.shape == (N_TRAIN, 162, 10) and bank.dtype == torch.float16
    assert bank.nbytes == estimate_bank_bytes(N_TRAIN, 162, 10) == N_TRAIN * 162 * 10 * 2
    assert bank.build_seconds > 0
    g = torch.Generator().manual_seed(7)
    idx = torch.randint(N_TRAIN, (64,), generator=g)
    views = torch.randint(NUM_CIFAR_VIEWS, (64,), generator=g)
    live = teacher(data.inputs(data.train_x[idx], views))
    got = bank.lookup(idx, views)
    assert got.dtype == torch.float32 and got.shape == (64, 10)
    torch.testing.assert_close(got, live, rtol=1e-3, atol=1e-5)
    # the views matter: a bank that ignored them would fail the check above
    spread = (bank.logits[:, 0].float() - bank.logits[:, 161].float()).abs().max()
    assert spread > 100 * 1e-3 * live.abs().max()


def test_bank_views_are_the_crops_and_flips(image_bank):
    """Independent of apply_views: view (dy, dx, flip) is a crop of the 4-pixel zero-padded image."""
    data, teacher, bank = image_bank
    x = data.train_x[5:6]
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for dy, dx, flip in [(4, 4, 0), (0, 8, 1), (8, 0, 0), (3, 6, 1)]:
        crop = padded[:, :, dy:dy + 32, dx:dx + 32]
        crop = crop.flip(-1) if flip else crop
        live = teacher(data.inputs(crop))
        got = bank.lookup(torch.tensor([5]), torch.tensor([view_id(dy, dx, flip)]))
        torch.testing.assert_close(got, live, rtol=1e-3, atol=1e-5)
    unaugmented = teacher(data.inputs(x))
    torch.testing.assert_close(bank.lookup(torch.tensor([5]), torch.tensor([IDENTITY_VIEW])), unaugmented,
                               rtol=1e-3, atol=1e-5)


def test_build_refuses_a_teacher_in_train_mode(image_bank):
    data, _, _ = image_bank
    with pytest.raises(ValueError, match="eval mode"):
        build_bank(build_model("plain2", 10).train(), data)


def _epoch_losses(cfg, data, bank=None, record=None):
    seen = []
    result = train(cfg, report=lambda m, s: seen.append(m), data=data, bank=bank)
    return [m["train_loss"] for m in seen], seen, result


def test_training_with_bank_gives_the_live_losses(image_bank, image_teacher):
    data, teacher, bank16 = image_bank
    cfg = image_cfg(image_teacher)
    live, _, live_result = _epoch_losses(cfg.replace(teacher_bank=False), cifar_like())
    assert live_result["bank_bytes"] == 0
    # float32 bank: only kernel noise separates it from the live teacher
    bank32 = build_bank(teacher, cifar_like(), dtype=torch.float32)
    banked, seen, result = _epoch_losses(cfg, cifar_like(), bank=bank32)
    assert len(live) == 3 and seen[0]["loss_mse"] > 0  # 2 annealing epochs + 1 fine-tuning epoch
    torch.testing.assert_close(torch.tensor(banked, dtype=torch.float64),
                               torch.tensor(live, dtype=torch.float64), rtol=1e-5, atol=0)
    assert result["bank_bytes"] == bank32.nbytes and result["bank_build_seconds"] == 0.0
    assert seen[0]["bank_bytes"] == bank32.nbytes and "bank_bytes" not in seen[1]
    # float16 bank passed in, and the bank train() builds itself (float16): within fp16 rounding
    passed, _, _ = _epoch_losses(cfg, cifar_like(), bank=bank16)
    called = time.perf_counter()
    built, seen_built, built_result = _epoch_losses(cfg, cifar_like())
    whole_call = time.perf_counter() - called
    torch.testing.assert_close(torch.tensor(passed), torch.tensor(live), rtol=1e-2, atol=0)
    assert built == passed  # the same float16 bank, built in train()
    assert built_result["bank_bytes"] == bank16.nbytes and 0 < built_result["bank_build_seconds"] < whole_call
    assert seen_built[0]["bank_build_seconds"] == built_result["bank_build_seconds"]


def test_memory_cap_falls_back_to_live_teacher(image_teacher):
    cfg = image_cfg(image_teacher, epochs=2, tau_max=1)
    live, _, _ = _epoch_losses(cfg.replace(teacher_bank=False), cifar_like())
    with pytest.warns(UserWarning, match=r"bank_memory_gb=1e-05.*live"):
        capped, seen, result = _epoch_losses(cfg.replace(bank_memory_gb=1e-5), cifar_like())
    assert capped == live and result["bank_bytes"] == 0 and seen[0]["bank_bytes"] == 0
    assert result["bank_build_seconds"] == 0.0  # no bank came of it


def test_a_resume_in_the_label_phase_builds_no_bank(image_teacher, tmp_path):
    """Phase 2 trains on labels alone: resuming inside it must not build a bank."""
    cfg = image_cfg(image_teacher, epochs=4)  # 2 annealing epochs, then 2 on labels
    state = tmp_path / "state.pt"

    def stop_in_phase2(m, save):
        if m["epoch"] == 3:
            save(state)
            raise StopTraining

    with pytest.raises(StopTraining):
        train(cfg, report=stop_in_phase2, data=cifar_like())
    seen = []
    resumed = train(cfg, report=lambda m, s: seen.append(m), resume_from=state, data=cifar_like())
    assert [m["epoch"] for m in seen] == [4] and seen[0]["phase"] == 2
    assert (resumed["bank_bytes"], resumed["bank_build_seconds"]) == (0, 0.0)


class StopTraining(Exception):
    pass


def test_a_bank_of_other_data_is_refused(image_bank, image_teacher):
    _, _, bank = image_bank
    with pytest.raises(ConfigError, match="bank: a bank of shape"):
        train(image_cfg(image_teacher), data=cifar_like(n_train=N_TRAIN - 1), bank=bank)
    keyed = TeacherBank(bank.logits, key="0" * 64)
    with pytest.raises(ConfigError, match="bank: key"):
        train(image_cfg(image_teacher), data=cifar_like(), bank=keyed)


def test_mnist1d_bank_has_one_view_and_trains_like_live(tiny_teacher):
    store, base, path = tiny_teacher
    cfg = TrainConfig.from_dict({"model": "mlp1d_8", "num_samples": 1200, "val_size": 200,
                                 "batch_size": 64, "method": "annealing", "teacher": "cnn1d_16",
                                 "teacher_checkpoint": str(path), "epochs": 3, "tau_max": 2,
                                 "stage_epochs": 1})
    data = load_data(cfg)
    teacher = load_teacher(str(path), torch.device("cpu"))
    bank = build_bank(teacher, data, key=bank_key(path, cfg))
    assert bank.logits.shape == (len(data.train_x), 1, 10)
    idx = torch.tensor([0, 17, len(data.train_x) - 1])
    torch.testing.assert_close(bank.lookup(idx), teacher(data.train_x[idx]), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(bank.lookup(idx, torch.zeros(3, dtype=torch.long)), bank.lookup(idx))
    live, _, _ = _epoch_losses(cfg.replace(teacher_bank=False), None)
    built, _, result = _epoch_losses(cfg, None)
    keyed, _, _ = _epoch_losses(cfg, None, bank=bank)  # key matches this teacher file and data
    assert result["bank_bytes"] == len(data.train_x) * 10 * 2
    assert built == keyed
    torch.testing.assert_close(torch.tensor(built), torch.tensor(live), rtol=1e-2, atol=0)


def test_save_load_roundtrip_is_memory_mapped(image_bank, tmp_path):
    _, _, bank = image_bank
    bank = TeacherBank(bank.logits, bank.build_seconds, key="k" * 64)
    path = save_bank(bank, tmp_path / "bank.pt")
    loaded = load_bank(path, mmap=True, expected_key="k" * 64)
    assert torch.equal(loaded.logits, bank.logits) and loaded.dtype == torch.float16
    assert loaded.build_seconds == bank.build_seconds and loaded.key == bank.key
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(path.resolve()) in maps.read_text()  # pages come from the file
    idx, views = torch.tensor([3, 1]), torch.tensor([0, 161])
    assert torch.equal(loaded.lookup(idx, views), bank.lookup(idx, views))
    with pytest.raises(ValueError, match="belongs to key"):
        load_bank(path, expected_key="other")
    bf16 = TeacherBank(bank.logits.to(torch.bfloat16))
    assert torch.equal(load_bank(save_bank(bf16, tmp_path / "bf16.pt"), mmap=False).logits, bf16.logits)


def test_corrupt_bank_file_is_a_clear_error(image_bank, tmp_path):
    _, _, bank = image_bank
    path = save_bank(bank, tmp_path / "bank.pt")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptBankError, match="checksum"):
        load_bank(path)
    path.write_bytes(bytes(raw[:-100]))
    with pytest.raises(CorruptBankError, match="truncated"):
        load_bank(path, verify=False)
    sidecar = tmp_path / "bank.pt.json"
    path.write_bytes(b"x" * len(raw))
    with pytest.raises(CorruptBankError, match="cannot be loaded"):
        load_bank(path, verify=False)
    sidecar.unlink()
    with pytest.raises(CorruptBankError, match="no sidecar"):
        load_bank(path)


def test_bank_key_and_get_or_build(tiny_teacher, tmp_path, monkeypatch):
    store, base, path = tiny_teacher
    cfg = TrainConfig.from_dict({"model": "mlp1d_8", "num_samples": 1200, "val_size": 200,
                                 "method": "kd", "teacher": "cnn1d_16", "teacher_checkpoint": str(path)})
    key = bank_key(path, cfg)
    copy = tmp_path / "copy.pt"
    copy.write_bytes(path.read_bytes())
    assert bank_key(copy, cfg) == key  # content, not path
    assert bank_key(path, cfg.replace(lr=0.3, seed=4)) == key  # student settings do not matter
    assert bank_key(path, cfg.replace(data_seed=1)) != key
    assert bank_key(path, cfg.replace(val_size=100)) != key
    first = get_or_build_bank(tmp_path / "banks", path, cfg)
    assert first.key == key and first.logits.shape == (760, 1, 10)  # 80% of 1200, minus 200

    def no_build(*args, **kwargs):
        raise AssertionError("built twice")

    monkeypatch.setattr(bank_module, "build_bank", no_build)
    again = get_or_build_bank(tmp_path / "banks", path, cfg)
    assert torch.equal(again.logits, first.logits) and again.build_seconds == first.build_seconds
    # a damaged stored bank is rebuilt, with a warning
    monkeypatch.undo()
    stored = bank_module.bank_path(tmp_path / "banks", key)
    stored.write_bytes(stored.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="truncated"):
        rebuilt = get_or_build_bank(tmp_path / "banks", path, cfg)
    assert torch.equal(rebuilt.logits, first.logits)


def test_frozen_teacher_bank_is_built_without_gradients(image_bank):
    _, teacher, bank = image_bank
    assert isinstance(teacher, FrozenTeacher) and not bank.logits.requires_grad
