"""TAKD's plain CNNs (Mirzadeh et al. 2020) for 32x32x3 input: plain2 ... plain10.

The layer book is data: ``"C<k>"`` = 3x3 conv (padding 1, with bias as in TAKD's code)
+ BN + ReLU with k filters, ``"M"`` = 2x2 max pool stride 2, ``"F<k>"`` = linear layer
with k outputs (ReLU between linear layers, none after the last).  Books exist for 10
and 100 classes; any other class count uses the 10-class book with the last layer resized.
"""
from __future__ import annotations

import torch
from torch import nn

from kd.models import MODELS, takes

_C16, _C32, _C64, _C128, _C256 = "C16", "C32", "C64", "C128", "C256"

PLAIN_BOOK: dict[int, dict[str, list[str]]] = {
    10: {
        "plain2": [_C16, "M", _C16, "M", "F10"],
        "plain4": [_C16, _C16, "M", _C32, _C32, "M", "F10"],
        "plain6": [_C16, _C16, "M", _C32, _C32, "M", _C64, _C64, "M", "F10"],
        "plain8": [_C16, _C16, "M", _C32, _C32, "M", _C64, _C64, "M", _C128, _C128, "M",
                   "F64", "F10"],
        "plain10": [_C32, _C32, "M", _C64, _C64, "M", _C128, _C128, "M",
                    _C256, _C256, _C256, _C256, "M", "F128", "F10"],
    },
    100: {
        "plain2": [_C32, "M", _C32, "M", "F100"],
        "plain4": [_C32, _C32, "M", _C64, _C64, "M", "F100"],
        "plain6": [_C32, _C32, "M", _C64, _C64, "M", _C128, _C128, "F100"],
        "plain8": [_C32, _C32, "M", _C64, _C64, "M", _C128, _C128, "M", _C256, _C256, "M",
                   "F64", "F100"],
        "plain10": [_C32, _C32, "M", _C64, _C64, "M", _C128, _C128, "M",
                    _C256, _C256, _C256, _C256, "M", "F512", "F100"],
    },
}

INPUT_CHANNELS, INPUT_SIZE = 3, 32


def layer_spec(name: str, num_classes: int) -> list[str]:
    """The layer list for ``name``; the last linear layer always has ``num_classes`` outputs."""
    book = PLAIN_BOOK.get(num_classes, PLAIN_BOOK[10])
    spec = list(book[name])
    spec[-1] = f"F{num_classes}"
    return spec


class PlainCNN(nn.Module):
    def __init__(self, spec: list[str]):
        super().__init__()
        if not spec or not spec[-1].startswith("F"):
            raise ValueError(f"a plain CNN spec must end with a linear layer, got {spec}")
        channels, size = INPUT_CHANNELS, INPUT_SIZE
        features: list[nn.Module] = []
        classifier: list[nn.Module] = []
        in_features = None
        for layer in spec:
            if layer == "M":
                features.append(nn.MaxPool2d(kernel_size=2, stride=2))
                size //= 2
            elif layer.startswith("C"):
                if in_features is not None:
                    raise ValueError("conv layer after a linear layer in plain CNN spec")
                out = int(layer[1:])
                features += [nn.Conv2d(channels, out, kernel_size=3, padding=1),
                             nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
            elif layer.startswith("F"):
                if in_features is None:
                    in_features = channels * size * size
                else:
                    classifier.append(nn.ReLU(inplace=True))
                out = int(layer[1:])
                classifier.append(nn.Linear(in_features, out))
                in_features = out
            else:
                raise ValueError(f"unknown layer {layer!r} in plain CNN spec")
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(*classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _register(name: str) -> None:
    @MODELS.register(name)
    @takes("image")
    def factory(num_classes: int) -> nn.Module:
        return PlainCNN(layer_spec(name, num_classes))

    factory.__name__ = factory.__qualname__ = name


for _name in PLAIN_BOOK[10]:
    _register(_name)
