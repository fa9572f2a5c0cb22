"""Datasets as tensors on the training device, augmented by batched indexing.

Augmentation is a finite set of numbered views (CIFAR: 9 x 9 crops x 2 flips; MNIST-1D and
text: one), drawn per sample per epoch from a seeded generator, so an epoch's inputs are
fully determined by (seed, epoch) and a resumed run sees exactly the batches it would have
seen.

Text (kd/data/glue.py, kd/data/template_text.py) fits the same mould: ``train_x`` is an
int64 tensor ``[N, 2, L]`` (token ids and token type ids, right-padded with ``pad_id``),
and ``inputs()`` trims each batch to its longest sequence (dynamic padding); the text
model derives the attention mask from the ids. ``task`` says whether labels are classes
or numbers and which metrics score them (kd/metrics.py).

Every dataset registers a `DatasetInfo` in ``DATASETS``, so adding one touches one file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from kd.metrics import CLASSIFICATION, Task
from kd.registry import Registry


@dataclass
class Data:
    name: str
    num_classes: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_views: int = 1
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    task: Task = CLASSIFICATION
    # text: the padding token id; inputs() trims every batch to its longest sequence
    pad_id: int | None = None
    # further test sets scored like test, keyed by a suffix of the metric names (MNLI: "mm")
    extra_test: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    # what building a model for this data needs besides num_classes (text: vocabulary size,
    # padding id, maximum length); stored with a trained teacher so it can be rebuilt
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def inputs(self, x: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        """Model-ready inputs: the chosen views of x (None: unaugmented), normalised; text
        batches cut to the longest sequence in the batch."""
        if self.pad_id is not None:
            length = int((x[:, 0] != self.pad_id).sum(1).max())  # right padding: a prefix holds every token
            return x[:, :, :max(length, 1)]
        if self.mean is None:
            return x
        from kd.data.augment import apply_views, normalize

        if views is not None:
            x = apply_views(x, views)
        return normalize(x, self.mean, self.std)

    def to(self, device: torch.device) -> "Data":
        for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
            setattr(self, name, getattr(self, name).to(device))
        self.extra_test = {k: (x.to(device), y.to(device)) for k, (x, y) in self.extra_test.items()}
        return self


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_kind: str                 # the model input kind (kd.models.INPUT_SHAPES)
    num_classes: int                # 1: a regression target
    task: Task
    load: Callable[[Any], Data]     # load(cfg) -> Data
    default_val_size: int | None    # None: the loader's own rule (GLUE: 10% of train, <= 5,000)
    needs_data_dir: bool = False    # CIFAR: a data_dir is required; GLUE: optional (else the Hub)
    tokenizer: Callable[[Any], str] | None = None  # text: tokenizer(cfg) -> the name or folder to load
    # generated offline (MNIST-1D, template-text): num_samples sets the size, no files to read
    generated: bool = False
    # text from a corpus (GLUE): a tokenizer must be named; template-text builds its own
    needs_tokenizer: bool = False


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register(info: DatasetInfo) -> DatasetInfo:
    return DATASETS.register(info.name)(info)


def dataset_info(name: str) -> DatasetInfo:
    return DATASETS.get(name, field="dataset")


def load_data(cfg) -> Data:
    return dataset_info(cfg.dataset).load(cfg)


def split_validation(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices), both ascending: the first val_size entries of a
    permutation seeded with seed are held out. Every dataset splits this way, and the teacher
    banks' keys rely on these exact indices. val_size 0 holds nothing out (CIFAR allows it)."""
    if not 0 <= val_size < n:
        raise ValueError(f"val_size: {val_size} is not allowed; it must lie in [0, {n - 1}] "
                         f"for {n} training examples")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[val_size:].sort().values, order[:val_size].sort().values


def _load_mnist1d(cfg) -> Data:
    from kd.data.mnist1d import load_mnist1d

    arrays = load_mnist1d(cfg.num_samples, cfg.resolved_val_size, cfg.data_seed)
    return Data("mnist1d", 10, *arrays)


def _load_cifar(cfg) -> Data:
    from kd.data.augment import NUM_CIFAR_VIEWS
    from kd.data.cifar import load_cifar

    a = load_cifar(cfg.dataset, cfg.data_dir, download=cfg.download,
                   val_size=cfg.resolved_val_size, split_seed=cfg.data_seed)
    return Data(a.name, a.num_classes, a.train_x, a.train_y, a.val_x, a.val_y, a.test_x, a.test_y,
                num_views=NUM_CIFAR_VIEWS, mean=a.mean, std=a.std)


register(DatasetInfo("mnist1d", "signal", 10, CLASSIFICATION, _load_mnist1d, 500, generated=True))
for _name, _classes in (("cifar10", 10), ("cifar100", 100)):
    register(DatasetInfo(_name, "image", _classes, CLASSIFICATION, _load_cifar, 5000, needs_data_dir=True))

# The text datasets register themselves (after DATASETS exists).
from kd.data import glue, template_text  # noqa: E402,F401
