"""VGG-16 with BatchNorm for 32x32 inputs (the CIFAR variant: five pools, a 512-d classifier)."""

from __future__ import annotations

import torch
from torch import nn

# Output channels per 3x3 conv; "M" is a 2x2 max-pool. Five pools take 32x32 to 1x1.
_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


class CifarVGG(nn.Module):
    """Plain conv-BN-ReLU stack followed by one linear classifier on the 512-d feature.

    Args:
        cfg: Channel plan, see ``_VGG16_CFG``.
        num_classes: Classifier outputs.
    """

    def __init__(self, cfg: tuple[int | str, ...], num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                cout = int(item)
                layers += [
                    nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                ]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg16_bn(num_classes: int = 10) -> nn.Module:
    """VGG-16 with BN (about 14.7M parameters, 0.31 GFLOPs at 32x32)."""
    return CifarVGG(_VGG16_CFG, num_classes)
