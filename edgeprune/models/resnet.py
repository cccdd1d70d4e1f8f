"""CIFAR ResNets (He et al., 2016, section 4.2): 3 stages of 16/32/64 channels, BasicBlocks.

The zoo builds them with option-B shortcuts (1x1 conv + BN when the shape changes) because
Torch-Pruning treats ``F.pad`` as elementwise and builds a broken dependency group for the
zero-pad (option-A) shortcut. :func:`resnet20_option_a` keeps the canonical option-A variant
so the pruning engine can be tested on detecting and freezing that unsafe group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first conv (2 at the start of stages 2 and 3).
        option: ``"B"`` for a 1x1 conv + BN projection shortcut, ``"A"`` for a parameter-free
            subsample + zero-pad shortcut (the original CIFAR variant).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, option: str = "B") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.option = option
        self.shortcut: nn.Module = nn.Identity()
        self.pad_channels = 0
        if stride != 1 or in_planes != planes:
            if option == "A":
                # Zero-pad the extra channels evenly on both sides, as in the paper's option A.
                self.pad_channels = (planes - in_planes) // 2
                self.shortcut_stride = stride
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.pad_channels:
            s = self.shortcut_stride
            pad = self.pad_channels
            sc = F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, pad, pad))
        else:
            sc = self.shortcut(x)
        return F.relu(out + sc)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs.

    Args:
        num_blocks: BasicBlocks per stage (n); depth is 6n+2.
        num_classes: Classifier outputs.
        option: Shortcut type, see :class:`BasicBlock`.
    """

    def __init__(self, num_blocks: int, num_classes: int = 10, option: str = "B") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(num_blocks):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, option))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resnet20(num_classes: int = 10) -> nn.Module:
    """ResNet-20 (0.27M parameters) with option-B shortcuts."""
    return CifarResNet(3, num_classes, option="B")


def resnet56(num_classes: int = 10) -> nn.Module:
    """ResNet-56 (0.86M parameters) with option-B shortcuts."""
    return CifarResNet(9, num_classes, option="B")


def resnet20_option_a(num_classes: int = 10) -> nn.Module:
    """ResNet-20 with zero-pad (option-A) shortcuts; not in the public zoo.

    Torch-Pruning builds an unsafe group across its ``F.pad`` shortcuts; the pruning engine
    tests use this model to check that such groups are detected and frozen.
    """
    return CifarResNet(3, num_classes, option="A")
