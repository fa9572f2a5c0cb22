"""CIFAR ResNets (He et al. 2016, CIFAR variant): depth 6n + 2.

3x3 conv 16 + BN + ReLU, three stages of BasicBlocks with 16/32/64 channels (stride 2 at
the start of stages 2 and 3), n blocks per stage, global average pool, linear.  When a
block changes shape the shortcut is a 1x1 conv (no bias) + BN ("option B"); otherwise it
is the identity.  Convolutions have no bias (each is followed by BN).
"""
from __future__ import annotations

import torch
from torch import nn

from kd.models import MODELS, takes

DEPTHS = (8, 14, 20, 26, 32, 44, 56, 110)
STAGE_CHANNELS = (16, 32, 64)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_ch != out_ch:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.stem = nn.Sequential(
            _conv3x3(3, STAGE_CHANNELS[0]), nn.BatchNorm2d(STAGE_CHANNELS[0]), nn.ReLU(inplace=True)
        )
        stages = []
        in_ch = STAGE_CHANNELS[0]
        for i, out_ch in enumerate(STAGE_CHANNELS):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_ch, out_ch, stride))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def _register(depth: int) -> None:
    @MODELS.register(f"resnet{depth}")
    @takes("image")
    def factory(num_classes: int) -> nn.Module:
        return CifarResNet(depth, num_classes)

    factory.__name__ = factory.__qualname__ = f"resnet{depth}"


for _depth in DEPTHS:
    _register(_depth)
