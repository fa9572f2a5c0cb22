"""CIFAR-10 / CIFAR-100 loading into in-memory uint8 tensors (SPEC section 4).

The images are read through torchvision's own ``CIFAR10`` / ``CIFAR100`` classes
(so the on-disk pickle format is parsed by torchvision, not by this module) and
returned as NCHW uint8 tensors plus int64 labels.  A validation split of
``val_size`` training images is held out with a fixed seed.  Normalisation uses
the dataset's *own* published per-channel statistics (the official Annealing-KD
code uses the CIFAR-100 statistics for both datasets; we do not).

Augmentation lives in :mod:`kd.data.augment`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kd.data import split_validation

__all__ = [
    "ImageArrays",
    "DatasetNotFoundError",
    "load_cifar",
    "CIFAR_NAMES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
]

# Published per-channel statistics, in [0, 1] units.
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: tuple[float, float, float] = (0.2673, 0.2564, 0.2762)


@dataclass(frozen=True)
class _CifarInfo:
    num_classes: int
    folder: str
    files: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_name: str  # attribute of torchvision.datasets


_INFO: dict[str, _CifarInfo] = {
    "cifar10": _CifarInfo(
        num_classes=10,
        folder="cifar-10-batches-py",
        files=(
            "data_batch_1",
            "data_batch_2",
            "data_batch_3",
            "data_batch_4",
            "data_batch_5",
            "test_batch",
            "batches.meta",
        ),
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        class_name="CIFAR10",
    ),
    "cifar100": _CifarInfo(
        num_classes=100,
        folder="cifar-100-python",
        files=("train", "test", "meta"),
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        class_name="CIFAR100",
    ),
}

CIFAR_NAMES: tuple[str, ...] = tuple(_INFO)


@dataclass(frozen=True)
class ImageArrays:
    """A fully materialised image-classification dataset.

    Images are uint8 ``[N, 3, 32, 32]`` (NCHW, contiguous), labels int64 ``[N]``.
    ``mean`` / ``std`` are the dataset's own per-channel statistics in [0, 1] units,
    meant for :func:`kd.data.augment.normalize`.
    """

    name: str
    num_classes: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files are missing or incomplete and downloading was not allowed
    (or failed)."""


def _not_found_message(name: str, info: _CifarInfo, folder: str, reason: str, download: bool) -> str:
    files = ", ".join(info.files)
    msg = (
        f"{name} dataset not found or incomplete at {folder} ({reason}). "
        f"Expected the files {files} in that folder (the extracted "
        f"python-version archive). "
    )
    if download:
        msg += "Downloading was requested but did not produce a usable copy (is the network reachable?)."
    else:
        msg += (
            "To allow downloading it, pass --download / download: true; "
            "otherwise point data_dir at the folder that contains "
            f"{info.folder}/."
        )
    return msg


def _to_nchw(data: Any) -> torch.Tensor:
    arr = np.asarray(data)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (32, 32, 3):
        raise ValueError(
            f"unexpected CIFAR image array: dtype {arr.dtype}, shape {arr.shape} "
            "(expected uint8 [N, 32, 32, 3] from torchvision)"
        )
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()


def _to_labels(targets: Any, num_classes: int, name: str, split: str) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(targets, dtype=np.int64), dtype=torch.int64).reshape(-1)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"{name} {split} labels out of range [0, {num_classes}): "
            f"min {int(y.min())}, max {int(y.max())}"
        )
    return y


def load_cifar(
    name: str,
    root: str | os.PathLike | None,
    *,
    download: bool = False,
    val_size: int = 5000,
    split_seed: int = 0,
    dataset_class: type | None = None,
) -> ImageArrays:
    """Load CIFAR-10 or CIFAR-100 from ``root`` into uint8 tensors.

    ``root`` is the folder containing ``cifar-10-batches-py/`` or
    ``cifar-100-python/``.  Nothing is downloaded unless ``download=True``.
    ``val_size`` training images (a ``torch.randperm`` with generator seeded by
    ``split_seed``: its first ``val_size`` entries) form the validation split;
    both splits keep the original ascending order.  ``dataset_class`` overrides
    the torchvision class (e.g. a subclass with a different integrity check).
    """
    if not isinstance(name, str) or name.strip().lower() not in _INFO:
        raise ValueError(
            f"field 'dataset': unknown CIFAR dataset {name!r}; allowed: {', '.join(CIFAR_NAMES)}"
        )
    key = name.strip().lower()
    info = _INFO[key]

    if root is None or (isinstance(root, str) and not root.strip()):
        raise ValueError(
            f"data_dir is required for {key}: the folder that contains {info.folder}/ "
            "(pass --data-dir / data_dir: PATH, and --download / download: true to fetch it)"
        )
    root_path = os.path.abspath(os.path.expanduser(os.fspath(root)))
    folder = os.path.join(root_path, info.folder)

    if isinstance(val_size, bool) or not isinstance(val_size, (int, np.integer)):
        raise ValueError(f"field 'val_size' must be an integer, got {val_size!r}")
    val_size = int(val_size)
    if val_size < 0:
        raise ValueError(f"field 'val_size' must be >= 0, got {val_size}")

    if dataset_class is None:
        import torchvision.datasets as tvd

        dataset_class = getattr(tvd, info.class_name)

    def _open(train: bool) -> Any:
        try:
            return dataset_class(root=root_path, train=train, download=bool(download))
        except RuntimeError as exc:
            # torchvision: "Dataset not found or corrupted." /
            # "Dataset metadata file not found or corrupted."
            if "not found or corrupted" in str(exc):
                raise DatasetNotFoundError(
                    _not_found_message(key, info, folder, "missing files or md5 mismatch", download)
                ) from exc
            raise
        except FileNotFoundError as exc:
            raise DatasetNotFoundError(
                _not_found_message(key, info, folder, f"cannot open {exc.filename}", download)
            ) from exc
        except OSError as exc:
            if download:  # network failures while downloading (URLError is an OSError)
                raise DatasetNotFoundError(
                    _not_found_message(key, info, folder, f"download failed: {exc}", download)
                ) from exc
            raise

    train_ds = _open(True)
    test_ds = _open(False)

    full_x = _to_nchw(train_ds.data)
    full_y = _to_labels(train_ds.targets, info.num_classes, key, "train")
    test_x = _to_nchw(test_ds.data)
    test_y = _to_labels(test_ds.targets, info.num_classes, key, "test")
    if full_x.shape[0] != full_y.shape[0] or test_x.shape[0] != test_y.shape[0]:
        raise ValueError(f"{key}: number of images and labels differ in {folder}")

    n = full_x.shape[0]
    if val_size >= n:
        raise ValueError(
            f"field 'val_size' must be smaller than the number of training images "
            f"({n}) of {key}, got {val_size}"
        )
    train_idx, val_idx = split_validation(n, val_size, int(split_seed))

    return ImageArrays(
        name=key,
        num_classes=info.num_classes,
        train_x=full_x[train_idx].contiguous(),
        train_y=full_y[train_idx].contiguous(),
        val_x=full_x[val_idx].contiguous(),
        val_y=full_y[val_idx].contiguous(),
        test_x=test_x,
        test_y=test_y,
        mean=info.mean,
        std=info.std,
    )
