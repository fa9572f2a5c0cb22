"""Tests for kd.data.cifar (loading through torchvision) and kd.data.augment.

The tiny CIFAR datasets below are written in the real on-disk format of the
"python version" archives: Python-2 pickles (protocol 2) of dicts whose keys and
byte strings are Python-2 ``str`` objects -- they load as ``b'data'`` etc. with
``encoding='bytes'`` (the recipe on the CIFAR web page) and as ``'data'`` with
``encoding='latin1'`` (what torchvision uses).  The image array is a numpy uint8
``[N, 3072]`` array (1024 red, then 1024 green, then 1024 blue values, each plane
row-major).  Only torchvision's md5 verification is stepped around (see
``_NoMd5CIFAR10``); the parsing is torchvision's own.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.datasets as tvd

from kd.data.augment import (
    IDENTITY_VIEW,
    NUM_CIFAR_VIEWS,
    apply_views,
    normalize,
    view_id,
    view_params,
)
from kd.data.cifar import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DatasetNotFoundError,
    ImageArrays,
    load_cifar,
)

# --------------------------------------------------------------------------------------
# Writing CIFAR files in the original (Python 2 pickle) format
# --------------------------------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler that stores ``bytes`` as Python-2 ``str`` (STRING opcodes),
    as the original CIFAR files (written by Python 2's cPickle) do."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str

    def save_global(self, obj, name=None):
        # Python-2 numpy pickles reference numpy.core.multiarray._reconstruct.
        if getattr(obj, "__name__", None) == "_reconstruct" and "numpy" in getattr(obj, "__module__", ""):
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _write_py2_pickle(path: os.PathLike, obj: dict) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def _chw_to_rows(images_nchw: np.ndarray) -> np.ndarray:
    """[N,3,32,32] uint8 -> [N,3072] rows (R plane, G plane, B plane, row-major)."""
    return np.ascontiguousarray(images_nchw.reshape(images_nchw.shape[0], 3 * 32 * 32))


N_PER_BATCH10 = 20
N_TRAIN10 = 5 * N_PER_BATCH10
N_TEST10 = 10
# A marked pixel: image 7 of data_batch_3, blue channel, row 5, column 11.
MARK_IMAGE, MARK_CH, MARK_ROW, MARK_COL, MARK_VALUE = 2 * N_PER_BATCH10 + 7, 2, 5, 11, 201


def _make_images(rng: np.random.RandomState, n: int, id_offset: int = 0) -> np.ndarray:
    x = rng.randint(0, 256, size=(n, 3, 32, 32)).astype(np.uint8)
    x[:, 0, 0, 0] = (np.arange(n) + id_offset) % 256  # unique id per image (n <= 256)
    return x


@pytest.fixture(scope="module")
def cifar10_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("c10")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.RandomState(1234)
    train_x = _make_images(rng, N_TRAIN10)
    train_x[MARK_IMAGE, MARK_CH, MARK_ROW, MARK_COL] = MARK_VALUE
    train_y = rng.randint(0, 10, size=N_TRAIN10)
    test_x = _make_images(rng, N_TEST10, id_offset=200)
    test_y = rng.randint(0, 10, size=N_TEST10)
    for b in range(5):
        sl = slice(b * N_PER_BATCH10, (b + 1) * N_PER_BATCH10)
        _write_py2_pickle(
            folder / f"data_batch_{b + 1}",
            {
                b"batch_label": f"training batch {b + 1} of 5".encode(),
                b"labels": [int(v) for v in train_y[sl]],
                b"data": _chw_to_rows(train_x[sl]),
                b"filenames": [f"img_{i:05d}.png".encode() for i in range(sl.start, sl.stop)],
            },
        )
    _write_py2_pickle(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [int(v) for v in test_y],
            b"data": _chw_to_rows(test_x),
            b"filenames": [f"test_{i:05d}.png".encode() for i in range(N_TEST10)],
        },
    )
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    _write_py2_pickle(
        folder / "batches.meta",
        {b"num_cases_per_batch": N_PER_BATCH10, b"label_names": names, b"num_vis": 3072},
    )
    return root, train_x, train_y, test_x, test_y


N_TRAIN100 = 60
N_TEST100 = 12


@pytest.fixture(scope="module")
def cifar100_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("c100")
    folder = root / "cifar-100-python"
    folder.mkdir()
    rng = np.random.RandomState(99)
    train_x = _make_images(rng, N_TRAIN100)
    test_x = _make_images(rng, N_TEST100, id_offset=100)
    train_fine = rng.randint(20, 100, size=N_TRAIN100)  # >= 20: never a valid coarse label
    test_fine = rng.randint(20, 100, size=N_TEST100)
    for fname, x, fine in (("train", train_x, train_fine), ("test", test_x, test_fine)):
        _write_py2_pickle(
            folder / fname,
            {
                b"filenames": [f"{fname}_{i}.png".encode() for i in range(len(x))],
                b"batch_label": f"{fname}ing batch 1 of 1".encode(),
                b"fine_labels": [int(v) for v in fine],
                b"coarse_labels": [int(v) // 5 for v in fine],
                b"data": _chw_to_rows(x),
            },
        )
    _write_py2_pickle(
        folder / "meta",
        {
            b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)],
        },
    )
    return root, train_x, train_fine, test_x, test_fine


# --- stepping around the md5 check only ------------------------------------------------


def _files_present(ds) -> bool:
    return all(
        os.path.isfile(os.path.join(ds.root, ds.base_folder, fname)) for fname, _ in ds.train_list + ds.test_list
    )


class _NoMd5CIFAR10(tvd.CIFAR10):
    """torchvision's CIFAR10 with the md5 comparison removed: files must exist, and
    are parsed by torchvision as usual.  (``_load_meta`` checks the meta file via
    ``check_integrity(path, md5)``, which with ``md5=None`` checks existence only.)"""

    meta = {**tvd.CIFAR10.meta, "md5": None}

    def _check_integrity(self) -> bool:
        return _files_present(self)


class _NoMd5CIFAR100(tvd.CIFAR100):
    meta = {**tvd.CIFAR100.meta, "md5": None}

    def _check_integrity(self) -> bool:
        return _files_present(self)


class _AlwaysOkCIFAR10(tvd.CIFAR10):
    """Integrity check that always passes (even for missing files)."""

    meta = {**tvd.CIFAR10.meta, "md5": None}

    def _check_integrity(self) -> bool:
        return True


# --------------------------------------------------------------------------------------
# File-format sanity: the written files really look like the originals
# --------------------------------------------------------------------------------------


def test_written_files_have_original_pickle_layout(cifar10_root, cifar100_root):
    root10 = cifar10_root[0]
    with open(root10 / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        d = pickle.load(f, encoding="bytes")  # the recipe on the CIFAR web page
    assert set(d) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert d[b"data"].dtype == np.uint8 and d[b"data"].shape == (N_PER_BATCH10, 3072)
    assert isinstance(d[b"filenames"][0], bytes)
    root100 = cifar100_root[0]
    with open(root100 / "cifar-100-python" / "train", "rb") as f:
        d = pickle.load(f, encoding="latin1")  # what torchvision does
    assert {"fine_labels", "coarse_labels", "data", "filenames", "batch_label"} == set(d)
    assert d["data"].shape == (N_TRAIN100, 3072)
    # Plain torchvision parses them (only md5 disabled) and yields HWC arrays.
    ds = _NoMd5CIFAR10(root=str(root10), train=True, download=False)
    assert ds.data.shape == (N_TRAIN10, 32, 32, 3) and len(ds.classes) == 10


# --------------------------------------------------------------------------------------
# load_cifar
# --------------------------------------------------------------------------------------


def test_cifar10_shapes_dtypes_and_pixels(cifar10_root):
    root, train_x, train_y, test_x, test_y = cifar10_root
    data = load_cifar("cifar10", root, val_size=0, dataset_class=_NoMd5CIFAR10)
    assert isinstance(data, ImageArrays)
    assert data.name == "cifar10" and data.num_classes == 10
    assert data.train_x.shape == (N_TRAIN10, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.train_x.is_contiguous() and data.test_x.is_contiguous()
    assert data.test_x.shape == (N_TEST10, 3, 32, 32) and data.test_x.dtype == torch.uint8
    assert data.train_y.dtype == torch.int64 and data.test_y.dtype == torch.int64
    assert data.val_x.shape == (0, 3, 32, 32) and data.val_y.shape == (0,)
    # the marked pixel is exactly where it was written (image, channel, row, col)
    assert int(data.train_x[MARK_IMAGE, MARK_CH, MARK_ROW, MARK_COL]) == MARK_VALUE
    assert int(data.train_x[MARK_IMAGE, MARK_CH, MARK_COL, MARK_ROW]) == int(
        train_x[MARK_IMAGE, MARK_CH, MARK_COL, MARK_ROW]
    )
    # and every other pixel and label too
    assert torch.equal(data.train_x, torch.from_numpy(train_x))
    assert torch.equal(data.test_x, torch.from_numpy(test_x))
    assert data.train_y.tolist() == train_y.tolist()
    assert data.test_y.tolist() == test_y.tolist()
    assert data.mean == CIFAR10_MEAN == (0.4914, 0.4822, 0.4465)
    assert data.std == CIFAR10_STD == (0.2470, 0.2435, 0.2616)


def test_cifar10_validation_split(cifar10_root):
    root, train_x, train_y, _, _ = cifar10_root
    data = load_cifar("cifar10", str(root), val_size=30, split_seed=0, dataset_class=_NoMd5CIFAR10)
    assert data.train_x.shape[0] == 70 and data.val_x.shape[0] == 30
    assert data.train_y.shape == (70,) and data.val_y.shape == (30,)
    train_ids = data.train_x[:, 0, 0, 0].tolist()
    val_ids = data.val_x[:, 0, 0, 0].tolist()
    assert set(train_ids).isdisjoint(val_ids)
    assert sorted(train_ids + val_ids) == list(range(N_TRAIN10))
    assert train_ids == sorted(train_ids) and val_ids == sorted(val_ids)
    # the documented rule: first val_size entries of a seeded randperm
    perm = torch.randperm(N_TRAIN10, generator=torch.Generator().manual_seed(0))
    assert val_ids == sorted(perm[:30].tolist())
    # images and labels stay paired
    for row, i in enumerate(val_ids):
        assert torch.equal(data.val_x[row], torch.from_numpy(train_x[i]))
        assert int(data.val_y[row]) == int(train_y[i])
    # deterministic for a seed, different for another
    again = load_cifar("cifar10", root, val_size=30, split_seed=0, dataset_class=_NoMd5CIFAR10)
    assert torch.equal(again.val_x, data.val_x) and torch.equal(again.train_y, data.train_y)
    other = load_cifar("cifar10", root, val_size=30, split_seed=1, dataset_class=_NoMd5CIFAR10)
    assert other.val_x[:, 0, 0, 0].tolist() != val_ids


@pytest.mark.parametrize("bad", [-1, N_TRAIN10, N_TRAIN10 + 1])
def test_bad_val_size(cifar10_root, bad):
    with pytest.raises(ValueError, match="val_size"):
        load_cifar("cifar10", cifar10_root[0], val_size=bad, dataset_class=_NoMd5CIFAR10)


def test_cifar100_uses_fine_labels(cifar100_root):
    root, train_x, train_fine, test_x, test_fine = cifar100_root
    data = load_cifar("cifar100", root, val_size=10, dataset_class=_NoMd5CIFAR100)
    assert data.name == "cifar100" and data.num_classes == 100
    assert data.train_x.shape == (50, 3, 32, 32) and data.val_x.shape == (10, 3, 32, 32)
    assert data.test_x.shape == (N_TEST100, 3, 32, 32) and data.test_x.dtype == torch.uint8
    assert torch.equal(data.test_x, torch.from_numpy(test_x))
    assert data.test_y.tolist() == test_fine.tolist()
    ids = data.train_x[:, 0, 0, 0].tolist()
    assert data.train_y.tolist() == [int(train_fine[i]) for i in ids]
    assert int(data.train_y.min()) >= 20  # coarse labels are all < 20
    assert data.mean == CIFAR100_MEAN == (0.5071, 0.4865, 0.4409)
    assert data.std == CIFAR100_STD == (0.2673, 0.2564, 0.2762)


def test_default_class_is_torchvision_and_checks_md5(cifar10_root):
    # Without the override, torchvision's real CIFAR10 is used: its md5 check rejects
    # the tiny files, which surfaces as DatasetNotFoundError.
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        load_cifar("cifar10", cifar10_root[0], val_size=0)


def test_missing_directory(tmp_path):
    with pytest.raises(DatasetNotFoundError) as ei:
        load_cifar("cifar10", tmp_path, dataset_class=_NoMd5CIFAR10)
    msg = str(ei.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg
    assert "download" in msg
    for fname in ("data_batch_1", "data_batch_5", "test_batch", "batches.meta"):
        assert fname in msg
    assert isinstance(ei.value, FileNotFoundError)

    with pytest.raises(DatasetNotFoundError) as ei:
        load_cifar("cifar100", tmp_path)  # real torchvision class
    msg = str(ei.value)
    assert str(tmp_path / "cifar-100-python") in msg and "download" in msg
    for fname in ("train", "test", "meta"):
        assert fname in msg


def test_relative_root_reported_as_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError) as ei:
        load_cifar("cifar10", "rel/data")
    assert os.path.join(str(tmp_path), "rel", "data", "cifar-10-batches-py") in str(ei.value)


@pytest.mark.parametrize("missing", ["data_batch_3", "test_batch", "batches.meta"])
@pytest.mark.parametrize("cls", [_NoMd5CIFAR10, _AlwaysOkCIFAR10])
def test_incomplete_directory(cifar10_root, tmp_path, missing, cls):
    root = tmp_path / "copy"
    shutil.copytree(cifar10_root[0], root)
    os.remove(root / "cifar-10-batches-py" / missing)
    with pytest.raises(DatasetNotFoundError) as ei:
        load_cifar("cifar10", root, val_size=0, dataset_class=cls)
    msg = str(ei.value)
    assert str(root / "cifar-10-batches-py") in msg and "download" in msg


def test_download_flag_is_passed_through(cifar10_root, tmp_path):
    calls = []

    class Recording(_NoMd5CIFAR10):
        def download(self):  # never touch the network in tests
            calls.append(self.root)

    with pytest.raises(DatasetNotFoundError):
        load_cifar("cifar10", tmp_path, dataset_class=Recording)
    assert calls == []
    data = load_cifar("cifar10", cifar10_root[0], val_size=0, download=True, dataset_class=Recording)
    assert data.train_x.shape[0] == N_TRAIN10
    assert len(calls) == 2  # train and test instances


def test_bad_name_and_root(cifar10_root):
    with pytest.raises(ValueError, match="dataset") as ei:
        load_cifar("cifar1000", cifar10_root[0])
    assert "cifar1000" in str(ei.value) and "cifar10" in str(ei.value) and "cifar100" in str(ei.value)
    for root in (None, ""):
        with pytest.raises(ValueError, match="data_dir is required for cifar10"):
            load_cifar("cifar10", root)


# --------------------------------------------------------------------------------------
# augment
# --------------------------------------------------------------------------------------


def _reference_view(img: torch.Tensor, view: int, pad: int = 4) -> torch.Tensor:
    off, flip = divmod(view, 2)
    dy, dx = divmod(off, 9)
    h, w = img.shape[-2:]
    p = F.pad(img, (pad, pad, pad, pad))
    out = p[:, dy : dy + h, dx : dx + w]
    return torch.flip(out, dims=[-1]) if flip else out


def test_view_encoding():
    assert NUM_CIFAR_VIEWS == 162 and IDENTITY_VIEW == 80
    dy, dx, flip = view_params(torch.arange(NUM_CIFAR_VIEWS))
    triples = set(zip(dy.tolist(), dx.tolist(), flip.tolist()))
    assert triples == {(a, b, c) for a in range(9) for b in range(9) for c in range(2)}
    assert torch.equal(view_id(dy, dx, flip), torch.arange(NUM_CIFAR_VIEWS))
    assert [int(t) for t in view_params(torch.tensor([IDENTITY_VIEW]))] == [4, 4, 0]
    with pytest.raises(ValueError):
        view_params(torch.tensor([NUM_CIFAR_VIEWS]))
    with pytest.raises(ValueError):
        view_params(torch.tensor([-1]))


def test_identity_view_is_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 32, 32), generator=g, dtype=torch.uint8)
    out = apply_views(x, torch.full((5,), IDENTITY_VIEW, dtype=torch.long))
    assert out.dtype == torch.uint8 and torch.equal(out, x)
    xf = torch.randn(5, 3, 32, 32, generator=g)
    assert torch.equal(apply_views(xf, torch.full((5,), IDENTITY_VIEW)), xf)


def test_zero_offset_shifts_down_right_with_zero_fill():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)  # no zeros inside
    out = apply_views(x, torch.tensor([view_id(0, 0, 0), view_id(0, 0, 0)]))
    assert int(out[0, 1, 14, 24]) == int(x[0, 1, 10, 20])
    assert int(out[1, 2, 4, 4]) == int(x[1, 2, 0, 0])
    assert int(out[0, 0, 31, 31]) == int(x[0, 0, 27, 27])
    assert torch.equal(out[:, :, 4:, 4:], x[:, :, :28, :28])
    assert (out[:, :, :4, :] == 0).all() and (out[:, :, :, :4] == 0).all()
    # opposite corner: content shifts up/left, zeros at the bottom/right
    out8 = apply_views(x, torch.tensor([view_id(8, 8, 0)] * 2))
    assert torch.equal(out8[:, :, :28, :28], x[:, :, 4:, 4:])
    assert (out8[:, :, 28:, :] == 0).all() and (out8[:, :, :, 28:] == 0).all()


def test_flip_view_equals_torch_flip():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    out = apply_views(x, torch.full((4,), view_id(4, 4, 1)))
    assert torch.equal(out, torch.flip(x, dims=[-1]))
    assert int(out[0, 0, 3, 0]) == int(x[0, 0, 3, 31])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_all_views_match_reference_loop(dtype):
    g = torch.Generator().manual_seed(2)
    b = NUM_CIFAR_VIEWS + 40
    x = torch.randint(0, 256, (b, 3, 32, 32), generator=g, dtype=torch.uint8).to(dtype)
    views = torch.cat([torch.arange(NUM_CIFAR_VIEWS), torch.randint(0, NUM_CIFAR_VIEWS, (40,), generator=g)])
    views = views[torch.randperm(b, generator=g)]
    out = apply_views(x, views)
    assert out.shape == x.shape and out.dtype == dtype
    ref = torch.stack([_reference_view(x[i], int(views[i])) for i in range(b)])
    assert torch.equal(out, ref)
    # non-contiguous (channels_last) input gives the same result
    assert torch.equal(apply_views(x.contiguous(memory_format=torch.channels_last), views), ref)


def test_other_shapes_and_pad():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 2, 7, 5, generator=g)
    views = torch.randint(0, NUM_CIFAR_VIEWS, (6,), generator=g)
    ref = torch.stack([_reference_view(x[i], int(views[i])) for i in range(6)])
    assert torch.equal(apply_views(x, views), ref)
    ref6 = torch.stack([_reference_view(x[i], int(views[i]), pad=6) for i in range(6)])
    assert torch.equal(apply_views(x, views, pad=6), ref6)
    with pytest.raises(ValueError):
        apply_views(x, torch.full((6,), view_id(8, 0, 0)), pad=2)
    with pytest.raises(ValueError):
        apply_views(x, views[:3])


def test_views_of_different_samples_are_independent():
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 256, (8, 3, 32, 32), generator=g, dtype=torch.uint8)
    views = torch.randint(0, NUM_CIFAR_VIEWS, (8,), generator=g)
    out = apply_views(x, views)
    for i in range(8):
        assert torch.equal(out[i : i + 1], apply_views(x[i : i + 1], views[i : i + 1]))
    changed = views.clone()
    changed[3] = (changed[3] + 37) % NUM_CIFAR_VIEWS
    out2 = apply_views(x, changed)
    keep = [i for i in range(8) if i != 3]
    assert torch.equal(out2[keep], out[keep])
    assert not torch.equal(out2[3], out[3])


def test_normalize_hand_checked():
    x = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    x[0, 0, 0, 0] = 255
    x[0, 1, 1, 0] = 128
    y = normalize(x, CIFAR10_MEAN, CIFAR10_STD)
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert float(y[0, 0, 0, 0]) == pytest.approx((1.0 - 0.4914) / 0.2470, abs=1e-5)  # 2.059109
    assert float(y[0, 0, 0, 0]) == pytest.approx(2.0591093, abs=1e-5)
    assert float(y[0, 1, 1, 0]) == pytest.approx((128 / 255 - 0.4822) / 0.2435, abs=1e-5)  # 0.081153
    assert float(y[0, 1, 1, 0]) == pytest.approx(0.0811531, abs=1e-5)
    assert float(y[0, 2, 0, 1]) == pytest.approx(-0.4465 / 0.2616, abs=1e-5)  # -1.706804
    assert float(y[0, 2, 0, 1]) == pytest.approx(-1.7068043, abs=1e-5)
    # unbatched [C,H,W] broadcasts the same way
    assert torch.equal(normalize(x[0], CIFAR10_MEAN, CIFAR10_STD), y[0])
    with pytest.raises(TypeError):
        normalize(x.float(), CIFAR10_MEAN, CIFAR10_STD)
    with pytest.raises(ValueError):
        normalize(x, (0.5, 0.5), (0.2, 0.2))
