"""Tiny models for tests across the project (fast on CPU at 32x32).

Import them as ``edgeprune.models.testing:TinyConvNet`` etc.; every factory accepts
``num_classes``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyConvNet(nn.Module):
    """Three conv-BN-ReLU layers and one residual add: the smallest model with a coupled group.

    Args:
        num_classes: Classifier outputs.
        width: Channels of the first stage (the second stage has twice as many).
    """

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.stem = _conv_bn(3, width)
        self.conv_a = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(width)
        self.down = _conv_bn(width, 2 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        # Residual add couples stem's output channels with conv_a's output channels.
        x = F.relu(x + self.bn_a(self.conv_a(x)))
        x = self.down(x)
        return self.fc(torch.flatten(self.pool(x), 1))


class GroupedConvNet(nn.Module):
    """A user-style model with a grouped (not depthwise) 3x3 conv.

    Args:
        num_classes: Classifier outputs.
        groups: Groups of the middle conv (2 or 4); its channels must stay divisible by it.
    """

    def __init__(self, num_classes: int = 10, groups: int = 4) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 32)
        self.grouped = _conv_bn(32, 64, stride=2, groups=groups)
        self.head = _conv_bn(64, 64, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.grouped(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class DataDependentNet(nn.Module):
    """A forward with data-dependent Python control flow; tracing-based pruning must refuse it.

    Which branch runs depends on the sign of the input's sum, so a traced graph captures only
    one branch and silently mis-prunes the other.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16)
        self.branch_pos = _conv_bn(16, 16)
        self.branch_neg = _conv_bn(16, 16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.branch_pos(x) if x.sum() > 0 else self.branch_neg(x)
        return self.fc(torch.flatten(self.pool(x), 1))
