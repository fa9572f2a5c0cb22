"""MNIST-1D capacity ladder: 1-D models on float signals [B, 1, 40].

Names carry the width w:

* ``cnn1d_<w>``: three Conv1d layers of width w (kernels 5, 3, 3; stride 1; "same"
  padding, so the length stays 40), each followed by BN + ReLU, then flatten
  (w x 40 features) and one linear layer.  Keeping the full length makes the linear head
  hold most of the parameters, which keeps even ``cnn1d_4`` above the MLPs in size.
* ``mlp1d_<w>``: flatten 40 -> Linear(40, w) -> ReLU -> Linear(w, num_classes).

Ordered by parameter count (10 classes; larger first):
cnn1d_64 > cnn1d_32 > cnn1d_16 > cnn1d_8 > mlp1d_64 > cnn1d_4 > mlp1d_32 > mlp1d_16 > mlp1d_8
(see LADDER).
"""
from __future__ import annotations

import torch
from torch import nn

from kd.models import MODELS, takes

SIGNAL_LENGTH = 40
CONV_KERNELS = (5, 3, 3)

#: The ladder from largest to smallest parameter count.
LADDER = ("cnn1d_64", "cnn1d_32", "cnn1d_16", "cnn1d_8", "mlp1d_64", "cnn1d_4", "mlp1d_32", "mlp1d_16",
          "mlp1d_8")


class CNN1d(nn.Module):
    def __init__(self, width: int, num_classes: int, length: int = SIGNAL_LENGTH):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for k in CONV_KERNELS:
            layers += [nn.Conv1d(in_ch, width, kernel_size=k, padding=k // 2, bias=False),
                       nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width * length, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


class MLP1d(nn.Module):
    def __init__(self, width: int, num_classes: int, length: int = SIGNAL_LENGTH):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(length, width), nn.ReLU(inplace=True), nn.Linear(width, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _register(name: str) -> None:
    kind, width = name.split("_")
    cls = {"cnn1d": CNN1d, "mlp1d": MLP1d}[kind]

    @MODELS.register(name)
    @takes("signal")
    def factory(num_classes: int) -> nn.Module:
        return cls(int(width), num_classes)

    factory.__name__ = factory.__qualname__ = name


for _name in LADDER:
    _register(_name)
