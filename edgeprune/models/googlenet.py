"""GoogLeNet (Szegedy et al., 2015) for 32x32 inputs, slimmed to a quarter of the channels.

Keeps the structure that matters to a pruner: nine inception modules whose four branches
(1x1; 1x1-3x3; 1x1-3x3-3x3 standing in for 5x5; pool-1x1) are concatenated, so one branch's
output channels are a slice of every consumer's input. The CIFAR port runs the stem at
stride 1; at full width that is ~1.5 GFLOPs per image, too slow for CPU search and tests, so
all widths are divided by 4.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class Inception(nn.Module):
    """Four parallel branches concatenated along channels.

    Args:
        cin: Input channels.
        n1x1: Output of the 1x1 branch.
        n3x3red: Bottleneck of the 3x3 branch.
        n3x3: Output of the 3x3 branch.
        n5x5red: Bottleneck of the double-3x3 ("5x5") branch.
        n5x5: Output of the double-3x3 branch.
        pool_planes: Output of the pool branch.
    """

    def __init__(
        self, cin: int, n1x1: int, n3x3red: int, n3x3: int, n5x5red: int, n5x5: int,
        pool_planes: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.b1 = nn.Sequential(*_conv_bn_relu(cin, n1x1, 1))
        self.b2 = nn.Sequential(*_conv_bn_relu(cin, n3x3red, 1), *_conv_bn_relu(n3x3red, n3x3, 3))
        self.b3 = nn.Sequential(
            *_conv_bn_relu(cin, n5x5red, 1),
            *_conv_bn_relu(n5x5red, n5x5, 3),
            *_conv_bn_relu(n5x5, n5x5, 3),
        )
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), *_conv_bn_relu(cin, pool_planes, 1))
        self.out_channels = n1x1 + n3x3 + n5x5 + pool_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


# Full-width (n1x1, n3x3red, n3x3, n5x5red, n5x5, pool) per module; "M" is a stride-2 max-pool.
_CFG: tuple[tuple[int, ...] | str, ...] = (
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M",
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
)  # fmt: skip


class GoogLeNet(nn.Module):
    """Inception-v1 body for 32x32 inputs with all widths divided by ``1 / width``.

    Args:
        num_classes: Classifier outputs.
        width: Channel multiplier of the full-size CIFAR GoogLeNet (0.25 by default).
    """

    def __init__(self, num_classes: int = 10, width: float = 0.25) -> None:
        super().__init__()
        cin = max(8, int(192 * width))
        layers: list[nn.Module] = _conv_bn_relu(3, cin, 3)
        for item in _CFG:
            if isinstance(item, str):  # "M"
                layers.append(nn.MaxPool2d(3, 2, 1))
                continue
            widths = [max(4, int(c * width)) for c in item]
            module = Inception(cin, *widths)
            layers.append(module)
            cin = module.out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def googlenet(num_classes: int = 10) -> nn.Module:
    """Quarter-width CIFAR GoogLeNet (about 0.4M parameters)."""
    return GoogLeNet(num_classes, width=0.25)
