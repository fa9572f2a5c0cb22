"""Datasets as tensors on the training device, augmented by batched indexing.

Augmentation is a finite set of numbered views (CIFAR: 9 x 9 crops x 2 flips; MNIST-1D:
one), drawn per sample per epoch from a seeded generator, so an epoch's inputs are fully
determined by (seed, epoch) and a resumed run sees exactly the batches it would have seen.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kd.data.mnist1d import load_mnist1d


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

    def inputs(self, x: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        """Model-ready float inputs: the chosen views of x (None: unaugmented), normalised."""
        if self.mean is None:
            return x
        from kd.data.augment import apply_views, normalize

        if views is not None:
            x = apply_views(x, views)
        return normalize(x, self.mean, self.std)

    def to(self, device: torch.device) -> "Data":
        for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
            setattr(self, name, getattr(self, name).to(device))
        return self


def load_data(cfg) -> Data:
    if cfg.dataset == "mnist1d":
        arrays = load_mnist1d(cfg.num_samples, cfg.resolved_val_size, cfg.data_seed)
        return Data("mnist1d", 10, *arrays)
    from kd.data.augment import NUM_CIFAR_VIEWS
    from kd.data.cifar import load_cifar

    a = load_cifar(cfg.dataset, cfg.data_dir, download=cfg.download,
                   val_size=cfg.resolved_val_size, split_seed=cfg.data_seed)
    return Data(a.name, a.num_classes, a.train_x, a.train_y, a.val_x, a.val_y, a.test_x, a.test_y,
                num_views=NUM_CIFAR_VIEWS, mean=a.mean, std=a.std)
