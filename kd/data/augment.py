"""Batched CIFAR augmentation as a finite set of indexed views (SPEC section 4).

Standard CIFAR augmentation -- random 32x32 crop of the 4-pixel zero-padded image
plus random horizontal flip -- has exactly 9 * 9 * 2 = 162 outcomes.  Each outcome
is a *view id*::

    view = (dy * 9 + dx) * 2 + flip      dy, dx in 0..8, flip in {0, 1}

where (dy, dx) is the top-left corner of the crop in the padded image.  Because
the set is finite, a teacher's logits can be precomputed for every view and a
training step only has to draw view ids.  ``IDENTITY_VIEW`` (offset (4, 4), no
flip) reproduces the unaugmented image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "NUM_OFFSETS",
    "NUM_CIFAR_VIEWS",
    "IDENTITY_VIEW",
    "view_params",
    "view_id",
    "apply_views",
    "random_views",
    "normalize",
]

NUM_OFFSETS = 9  # crop offsets 0..8 per axis (2 * 4 + 1)
NUM_CIFAR_VIEWS = NUM_OFFSETS * NUM_OFFSETS * 2  # 162
IDENTITY_VIEW = (4 * NUM_OFFSETS + 4) * 2 + 0  # 80


def view_params(views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode view ids into ``(dy, dx, flip)`` int64 tensors of the same shape."""
    views = torch.as_tensor(views)
    if views.dtype.is_floating_point or views.dtype.is_complex or views.dtype == torch.bool:
        raise TypeError(f"view ids must be an integer tensor, got {views.dtype}")
    views = views.long()
    if views.numel() and (int(views.min()) < 0 or int(views.max()) >= NUM_CIFAR_VIEWS):
        raise ValueError(
            f"view ids must be in [0, {NUM_CIFAR_VIEWS}), got range "
            f"[{int(views.min())}, {int(views.max())}]"
        )
    flip = views % 2
    offset = views // 2
    return offset // NUM_OFFSETS, offset % NUM_OFFSETS, flip


def view_id(dy: int | torch.Tensor, dx: int | torch.Tensor, flip: int | torch.Tensor) -> int | torch.Tensor:
    """Inverse of :func:`view_params`."""
    return (dy * NUM_OFFSETS + dx) * 2 + flip


def random_views(n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """``n`` uniformly random view ids (int64), drawn on CPU with ``generator``."""
    v = torch.randint(0, NUM_CIFAR_VIEWS, (int(n),), generator=generator, dtype=torch.long)
    return v if device is None else v.to(device)


def apply_views(x: torch.Tensor, views: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Apply one view per sample to a batch ``x`` of shape ``[B, C, H, W]``.

    Each sample is zero-padded by ``pad`` on every side, cropped back to ``H x W``
    at offset ``(dy, dx)`` of the padded image and flipped horizontally if
    ``flip == 1``.  Works for any dtype (uint8 or float) on ``x``'s device with
    batched indexing only.  Offsets must satisfy ``dy, dx <= 2 * pad``.
    """
    if x.dim() != 4:
        raise ValueError(f"apply_views expects x of shape [B, C, H, W], got {tuple(x.shape)}")
    b, c, h, w = x.shape
    views = torch.as_tensor(views)
    if views.dim() != 1 or views.shape[0] != b:
        raise ValueError(f"views must have shape [{b}], got {tuple(views.shape)}")
    pad = int(pad)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    dy, dx, flip = view_params(views)
    if b and (int(dy.max()) > 2 * pad or int(dx.max()) > 2 * pad):
        raise ValueError(f"view offsets up to {NUM_OFFSETS - 1} need pad >= 4, got pad={pad}")
    dev = x.device
    dy, dx, flip = dy.to(dev), dx.to(dev), flip.to(dev)

    padded = x.new_zeros((b, c, h + 2 * pad, w + 2 * pad))
    padded[:, :, pad : pad + h, pad : pad + w] = x

    rows = dy[:, None] + torch.arange(h, device=dev)[None, :]  # [B, H]
    cols = dx[:, None] + torch.arange(w, device=dev)[None, :]  # [B, W]
    cols = torch.where(flip[:, None].bool(), cols.flip(1), cols)

    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def normalize(
    x_uint8: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel, as float32.

    ``x_uint8`` is uint8 ``[..., C, H, W]`` (values 0..255); ``mean``/``std`` have
    ``C`` entries in [0, 1] units.  Non-uint8 input is rejected so that images
    already scaled to [0, 1] are not silently divided by 255 again.
    """
    if x_uint8.dtype != torch.uint8:
        raise TypeError(f"normalize expects a uint8 image tensor (0..255), got {x_uint8.dtype}")
    if x_uint8.dim() < 3:
        raise ValueError(f"normalize expects [..., C, H, W], got shape {tuple(x_uint8.shape)}")
    c = x_uint8.shape[-3]
    m = torch.as_tensor(mean, dtype=torch.float32, device=x_uint8.device).reshape(-1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x_uint8.device).reshape(-1)
    if m.numel() != c or s.numel() != c:
        raise ValueError(f"mean/std need {c} entries (one per channel), got {m.numel()} and {s.numel()}")
    if bool((s <= 0).any()):
        raise ValueError(f"std must be positive, got {s.tolist()}")
    # (x / 255 - m) / s  ==  x * (1 / (255 s)) - m / s, done in place on the float copy
    scale = (1.0 / (255.0 * s))[:, None, None]
    shift = (m / s)[:, None, None]
    return x_uint8.to(torch.float32).mul_(scale).sub_(shift)
