"""MNIST-1D (Greydanus & Kobak), generated offline from a seed by the `mnist1d` package."""
from __future__ import annotations

from functools import lru_cache

import torch

from kd.data import split_validation


@lru_cache(maxsize=4)
def _generate(num_samples: int, seed: int):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    data = make_dataset(args)
    as_signal = lambda a: torch.tensor(a, dtype=torch.float32).unsqueeze(1)  # [N, 1, 40]
    return (as_signal(data["x"]), torch.tensor(data["y"], dtype=torch.long),
            as_signal(data["x_test"]), torch.tensor(data["y_test"], dtype=torch.long))


def load_mnist1d(num_samples: int = 5000, val_size: int = 500, split_seed: int = 0,
                 generator_seed: int = 42):
    """Train/validation/test tensors; validation is carved from the generator's train split."""
    train_x, train_y, test_x, test_y = _generate(num_samples, generator_seed)
    if not 1 <= val_size < len(train_x):
        raise ValueError(f"val_size: {val_size} is not allowed; it must lie in [1, {len(train_x) - 1}] "
                         f"for num_samples={num_samples}")
    train_idx, val_idx = split_validation(len(train_x), val_size, split_seed)
    return (train_x[train_idx], train_y[train_idx], train_x[val_idx], train_y[val_idx],
            test_x, test_y)
