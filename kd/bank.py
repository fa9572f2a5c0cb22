"""Teacher logit bank: the teacher is evaluated once per study, not once per trial-epoch.

The training augmentation is a finite set of numbered views (CIFAR: 9 x 9 crop offsets x
2 flips = 162; MNIST-1D and text: 1), and the teacher is frozen. So its logits for every
(training example, view) pair can be computed once -- without gradients, in large
batches -- and stored as a tensor ``[num_examples, num_views, num_classes]`` in fp16
(bf16 optional). A training step then reads the rows of the (example, view) pairs it
drew, and the student sees exactly the augmented input the bank was computed on: both
go through ``data.inputs(data.train_x[idx], views)``.

Exactness: a bank entry equals the live teacher's output up to the rounding of the
storage dtype (fp16: relative error <= 2**-11; a float32 bank is exact up to the
batch-size dependence of the convolution kernels, ~1e-6).

Sharing: ``save_bank`` writes a file that ``load_bank(mmap=True)`` maps into memory
(``torch.load(mmap=True, weights_only=True)``), so every trial on a node reads the same
pages. A JSON sidecar holds the size, sha256, shape, dtype and key; a file that does not
match it raises :class:`CorruptBankError`. ``bank_key`` names a bank by the sha256 of the
teacher file and the data settings that fix the order of ``train_x``; ``get_or_build_bank``
keeps one bank per key in a folder (e.g. next to the stored teacher), built once under a
file lock.

Cost model: building costs ``num_examples x num_views`` teacher forward passes (CIFAR:
162 forward "epochs"), paid once and shared by every trial and epoch that uses the same
teacher and data; running the teacher live costs one forward pass per training example
per teacher-using epoch of every trial.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from kd.checkpoints import HF_PREFIX, CorruptCheckpointError, _sha256, is_hf_reference
from kd.config import ConfigError, TrainConfig
from kd.data import Data, dataset_info, load_data
from kd.runtime import autocast_for, load_teacher

BANK_FORMAT = 1  # part of the key: a change of layout or semantics gets new files
DTYPES: dict[str, torch.dtype] = {"float16": torch.float16, "bfloat16": torch.bfloat16,
                                  "float32": torch.float32}


class CorruptBankError(CorruptCheckpointError):
    """A stored bank that does not match its sidecar or cannot be read."""


def _dtype_name(dtype: torch.dtype) -> str:
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"dtype: {dtype} is not allowed; allowed: {', '.join(DTYPES)}")


def estimate_bank_bytes(num_examples: int, num_views: int, num_classes: int,
                        dtype: torch.dtype = torch.float16) -> int:
    """Bytes of a bank's logits (the file adds a few kB of container)."""
    return int(num_examples) * int(num_views) * int(num_classes) * torch.empty((), dtype=dtype).element_size()


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"  # unreachable; keeps type checkers quiet


@dataclass
class TeacherBank:
    """Teacher logits for every (training example, view): ``logits[example, view, class]``."""

    logits: torch.Tensor
    build_seconds: float = 0.0
    key: str | None = None

    def __post_init__(self) -> None:
        if self.logits.dim() != 3:
            raise ValueError(f"logits must have shape [num_examples, num_views, num_classes], "
                             f"got {tuple(self.logits.shape)}")
        _dtype_name(self.logits.dtype)

    @property
    def num_examples(self) -> int:
        return self.logits.shape[0]

    @property
    def num_views(self) -> int:
        return self.logits.shape[1]

    @property
    def num_classes(self) -> int:
        return self.logits.shape[2]

    @property
    def dtype(self) -> torch.dtype:
        return self.logits.dtype

    @property
    def nbytes(self) -> int:
        return self.logits.numel() * self.logits.element_size()

    def lookup(self, example_indices: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        """float32 ``[B, C]`` logits of ``(example_indices[i], views[i])``, on the indices' device.

        ``views=None`` means view 0 (the only view of MNIST-1D and text). The indices are
        positions in ``data.train_x``, i.e. the batch indices the trainer draws.
        """
        index = torch.as_tensor(example_indices)
        if views is None:
            if self.num_views != 1:
                raise ValueError(f"views: None is not allowed; this bank holds {self.num_views} views "
                                 f"per example, pass the view of every sample")
            views = torch.zeros_like(index)
        source = self.logits.device
        rows = self.logits[index.to(source), torch.as_tensor(views).to(source)]
        return rows.to(device=index.device, dtype=torch.float32, non_blocking=True)

    def to(self, device: torch.device | str) -> "TeacherBank":
        """The bank with its logits on ``device`` (a memory-mapped bank is copied)."""
        return TeacherBank(self.logits.to(device), self.build_seconds, self.key)

    def save(self, path: str | Path) -> Path:
        return save_bank(self, path)

    def describe(self) -> str:
        return (f"teacher bank {self.num_examples} examples x {self.num_views} "
                f"view{'s' if self.num_views != 1 else ''} x "
                f"{self.num_classes} classes, {_dtype_name(self.dtype)}, {format_bytes(self.nbytes)}, "
                f"built in {self.build_seconds:.1f} s")


# ---------------------------------------------------------------------------- building
@torch.no_grad()
def build_bank(teacher: nn.Module, data: Data, batch_size: int = 1024,
               dtype: torch.dtype = torch.float16, amp: bool = False,
               key: str | None = None) -> TeacherBank:
    """Evaluate ``teacher`` on every view of every training example of ``data``.

    ``teacher`` must be in eval mode (e.g. ``kd.runtime.FrozenTeacher``): in train mode its
    BatchNorm would make a logit depend on the rest of the batch. The inputs are built
    exactly as the trainer builds the student's, ``data.inputs(data.train_x[idx], views)``,
    on ``data.train_x``'s device; on CUDA they are channels-last and, with ``amp``, the
    teacher runs under bf16 autocast as it would live. ``batch_size`` counts
    (example, view) pairs; the bank is allocated on the same device as the data.
    """
    if teacher.training:
        raise ValueError("teacher: a module in train mode is not allowed; BatchNorm would mix the "
                         "batch into every logit. Pass it in eval mode (kd.runtime.FrozenTeacher)")
    if batch_size < 1:
        raise ValueError(f"batch_size: {batch_size} is not allowed; it must be >= 1")
    _dtype_name(dtype)
    train_x = data.train_x
    device = train_x.device
    n, v, c = len(train_x), data.num_views, data.num_classes
    use_cuda = device.type == "cuda"
    autocast = autocast_for(device, amp)

    started = time.perf_counter()
    flat = torch.empty(n * v, c, dtype=dtype, device=device)
    # Pairs in example-major order: pair p is (example p // v, view p % v), so one batch
    # holds a few examples in many views and the rows are written contiguously.
    for start in range(0, n * v, batch_size):
        pairs = torch.arange(start, min(start + batch_size, n * v), device=device)
        index, views = pairs // v, pairs % v
        x = data.inputs(train_x[index], views if v > 1 else None)
        if use_cuda and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            out = teacher(x)
        if out.shape != (len(pairs), c):
            raise ValueError(f"teacher: output shape {tuple(out.shape)} is not allowed; "
                             f"the data has {c} classes (expected [{len(pairs)}, {c}])")
        flat[start:start + len(pairs)] = out.to(dtype)
    if use_cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    if not bool(torch.isfinite(flat).all()):
        raise ValueError(f"teacher bank: non-finite logits in {_dtype_name(dtype)} (a teacher logit "
                         f"beyond the dtype's range, or a diverged teacher); try dtype=torch.bfloat16")
    return TeacherBank(flat.view(n, v, c), seconds, key)


def teacher_fingerprint(teacher_path: str | Path) -> str:
    """What identifies a teacher's weights: a stored file's sha256; for a Hugging Face
    checkpoint (``hf:``) its name, and for a local folder also every file's name, size and
    modification time (hashing gigabytes of weights in every trial would cost seconds)."""
    if not is_hf_reference(teacher_path):
        return _sha256(Path(teacher_path))
    source = Path(str(teacher_path).removeprefix(HF_PREFIX)).expanduser()
    files = sorted((str(p.relative_to(source)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in source.rglob("*") if p.is_file()) if source.is_dir() else []
    return hashlib.sha256(json.dumps([str(teacher_path), files]).encode()).hexdigest()


def bank_key(teacher_path: str | Path, cfg: TrainConfig) -> str:
    """Name of the bank of this teacher file on this run's training examples, in order.

    It hashes the teacher's fingerprint (a stored file's sha256, not its path: copies of a
    file share a bank) and the settings that fix ``train_x`` and its order: dataset, the
    validation split (val_size, data_seed), for generated datasets (MNIST-1D, template-text)
    num_samples, and for text the data folder, the tokenizer the run reads with and max_length.
    """
    info = dataset_info(cfg.dataset)
    payload = {"format": BANK_FORMAT, "teacher_sha256": teacher_fingerprint(teacher_path),
               "dataset": cfg.dataset, "val_size": cfg.resolved_val_size, "data_seed": cfg.data_seed,
               "num_samples": cfg.num_samples if info.generated else None}
    if info.input_kind == "text":  # only then: the keys of existing image and MNIST-1D banks stay as they were
        # the tokenizer the run reads its text with (template-text may build its own)
        payload.update(data_dir=cfg.data_dir, tokenizer=info.tokenizer(cfg), max_length=cfg.max_length)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------- storage
def _sidecar(path: Path) -> Path:
    return path.parent / (path.name + ".json")


def save_bank(bank: TeacherBank, path: str | Path) -> Path:
    """Write ``bank`` to ``path`` (+ ``path.json`` sidecar) atomically, memory-mappable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save({"logits": bank.logits.detach().cpu().contiguous()}, tmp)
    meta = {"format": BANK_FORMAT, "bytes": tmp.stat().st_size, "sha256": _sha256(tmp),
            "shape": list(bank.logits.shape), "dtype": _dtype_name(bank.dtype), "key": bank.key,
            "build_seconds": bank.build_seconds}
    side_tmp = _sidecar(tmp)
    side_tmp.write_text(json.dumps(meta, indent=2) + "\n")
    # Sidecar first, then the data: a crash in between leaves a pair that fails the check.
    side_tmp.replace(_sidecar(path))
    tmp.replace(path)
    return path


def load_bank(path: str | Path, mmap: bool = True, verify: bool = True,
              expected_key: str | None = None) -> TeacherBank:
    """Read a bank written by :func:`save_bank`, memory-mapped by default (on CPU).

    Always checks the file size against the sidecar; ``verify`` also checks its sha256
    (reads the whole file once: about a second per GB). ``expected_key`` rejects a bank
    of another teacher or data split.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher bank {path} does not exist")
    hint = f"delete {path} and its sidecar to have it built again"
    side = _sidecar(path)
    try:
        meta = json.loads(side.read_text())
        expected_bytes, expected_sha = int(meta["bytes"]), meta["sha256"]
    except FileNotFoundError:
        raise CorruptBankError(f"teacher bank {path} has no sidecar {side.name}: it was not written "
                               f"completely; {hint}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptBankError(f"teacher bank sidecar {side} cannot be read ({error}); {hint}") from None
    size = path.stat().st_size
    if size != expected_bytes:
        raise CorruptBankError(f"teacher bank {path} has {size} bytes but its sidecar says "
                               f"{expected_bytes}: the file is truncated or was changed; {hint}")
    if verify and _sha256(path) != expected_sha:
        raise CorruptBankError(f"teacher bank {path} does not match its checksum in {side.name}: "
                               f"the file is corrupt or was changed; {hint}")
    try:
        payload = torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
        logits = payload["logits"]
    except Exception as error:  # unpickling errors and missing entries alike
        raise CorruptBankError(f"teacher bank {path} cannot be loaded ({error}); {hint}") from error
    if list(logits.shape) != meta.get("shape") or _dtype_name(logits.dtype) != meta.get("dtype"):
        raise CorruptBankError(f"teacher bank {path} holds {tuple(logits.shape)} {logits.dtype} but its "
                               f"sidecar says {meta.get('shape')} {meta.get('dtype')}; {hint}")
    if expected_key is not None and meta.get("key") != expected_key:
        raise ValueError(f"teacher bank {path} belongs to key {meta.get('key')!r}, not {expected_key!r} "
                         f"(another teacher file or data split)")
    return TeacherBank(logits, float(meta.get("build_seconds", 0.0)), meta.get("key"))


def bank_path(root: str | Path, key: str, dtype: torch.dtype = torch.float16) -> Path:
    return Path(root) / f"bank-{key[:24]}-{_dtype_name(dtype)}.pt"


def get_or_build_bank(root: str | Path, teacher_path: str | Path, cfg: TrainConfig,
                      data: Data | None = None, dtype: torch.dtype = torch.float16,
                      batch_size: int = 1024, mmap: bool = True, verify: bool = True,
                      device: torch.device | str | None = None) -> TeacherBank:
    """The bank of (teacher file, cfg's training data) stored under ``root``, built once.

    Concurrent callers (trials on one node, or nodes sharing ``root`` over NFS) wait on a
    file lock while the first one builds. A stored bank that fails its check is rebuilt
    with a warning. ``data`` defaults to ``kd.data.load_data(cfg)``; the teacher runs on
    ``device`` (default: the data's device). The returned bank is the loaded file
    (memory-mapped on CPU with ``mmap``).
    """
    key = bank_key(teacher_path, cfg)
    path = bank_path(root, key, dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            try:
                return load_bank(path, mmap=mmap, verify=verify, expected_key=key)
            except CorruptBankError as error:
                warnings.warn(f"{error}; building it again", stacklevel=2)
        data = data if data is not None else load_data(cfg)
        if device is not None:
            data = data.to(torch.device(device))
        teacher = load_teacher(str(teacher_path), data.train_x.device, data)
        bank = build_bank(teacher, data, batch_size=batch_size, dtype=dtype, amp=cfg.amp, key=key)
        save_bank(bank, path)
    return load_bank(path, mmap=mmap, verify=False, expected_key=key)


# ---------------------------------------------------------------------------- trainer glue
def check_bank(bank: TeacherBank, data: Data, teacher_path: str | Path | None = None,
               cfg: TrainConfig | None = None) -> None:
    """Refuse a bank that does not belong to this run's training data (and teacher)."""
    expected = (len(data.train_x), data.num_views, data.num_classes)
    if tuple(bank.logits.shape) != expected:
        raise ConfigError(f"bank: a bank of shape {tuple(bank.logits.shape)} is not allowed; this run "
                          f"has {expected[0]} training examples x {expected[1]} views x {expected[2]} classes")
    if bank.key is not None and teacher_path is not None and cfg is not None:
        key = bank_key(teacher_path, cfg)
        if bank.key != key:
            raise ConfigError(f"bank: key {bank.key[:16]}... is not allowed; this run's teacher file and "
                              f"data split give {key[:16]}... (build the bank from the same teacher file)")


def bank_for_training(cfg: TrainConfig, teacher_path: str, data: Data,
                      device: torch.device) -> TeacherBank | None:
    """What ``train()`` does when ``cfg.teacher_bank`` is on and no bank was passed: build
    the bank in memory, or return None (live teacher) with a warning when it would not fit
    under ``cfg.bank_memory_gb``."""
    need = estimate_bank_bytes(len(data.train_x), data.num_views, data.num_classes, torch.float16)
    cap = cfg.bank_memory_gb * 2**30
    if need > cap:
        warnings.warn(f"teacher bank: {len(data.train_x)} examples x {data.num_views} views x "
                      f"{data.num_classes} classes in float16 need {format_bytes(need)}, above "
                      f"bank_memory_gb={cfg.bank_memory_gb:g} ({format_bytes(cap)}); running the "
                      f"teacher live instead", stacklevel=3)
        return None
    teacher = load_teacher(teacher_path, device, data)
    return build_bank(teacher, data, dtype=torch.float16, amp=cfg.amp, key=None)


__all__ = ["BANK_FORMAT", "CorruptBankError", "TeacherBank", "bank_for_training", "bank_key", "bank_path",
           "build_bank", "check_bank", "estimate_bank_bytes", "format_bytes", "get_or_build_bank",
           "load_bank", "save_bank"]
