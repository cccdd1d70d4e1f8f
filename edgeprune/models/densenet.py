"""DenseNet-BC (Huang et al., 2017) for 32x32 inputs: depth 40, growth 12, compression 0.5.

Each dense layer concatenates its ``growth`` new channels onto its input, so the pruning
engine sees concat dependencies: a pruned channel of one layer's output must be removed from
every later consumer's input (and its pre-activation BN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DenseLayer(nn.Module):
    """Bottleneck layer: BN-ReLU-1x1 conv (4k) - BN-ReLU-3x3 conv (k), then concat."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv (compression) then 2x2 average pool."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNetBC(nn.Module):
    """DenseNet-BC with three dense blocks.

    Args:
        depth: Network depth; (depth - 4) must be divisible by 6.
        growth: Channels added per dense layer (k).
        reduction: Channel compression of the transitions (theta).
        num_classes: Classifier outputs.
    """

    def __init__(
        self, depth: int = 40, growth: int = 12, reduction: float = 0.5, num_classes: int = 10
    ) -> None:
        super().__init__()
        n_layers = (depth - 4) // 6
        channels = 2 * growth
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        for stage in range(3):
            layers = []
            for _ in range(n_layers):
                layers.append(DenseLayer(channels, growth))
                channels += growth
            blocks.append(nn.Sequential(*layers))
            if stage < 2:
                out = int(channels * reduction)
                blocks.append(Transition(channels, out))
                channels = out
        self.features = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.features(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def densenet(num_classes: int = 10) -> nn.Module:
    """DenseNet-BC-40, growth 12 (about 0.19M parameters)."""
    return DenseNetBC(depth=40, growth=12, reduction=0.5, num_classes=num_classes)
