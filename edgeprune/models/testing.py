"""Tiny models for tests across the project (fast on CPU at 32x32).

Import them as ``edgeprune.models.testing:TinyConvNet`` etc.; every factory accepts
``num_classes``. :func:`make_shapes`, :func:`train_detector` and :func:`detection_score`
are a synthetic detection task for :class:`TinyDetector`: the README's library example and
its test.
"""

from __future__ import annotations

import math
from typing import NamedTuple

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


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv_a = _conv_bn(width, width)
        self.conv_b = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn_b(self.conv_b(self.conv_a(x))))


class TinyDetector(nn.Module):
    """A detector-like model: a residual backbone and two conv heads, returning a tuple.

    ``forward`` returns ``(class_logits, boxes)``: per cell of the stride-4 feature map,
    ``anchors * num_classes`` class logits and ``anchors * 4`` box offsets. The heads'
    output channels are the model's outputs and must never be pruned.

    Args:
        num_classes: Object classes per anchor.
        anchors: Anchors per cell.
        width: Channels of the first stage.
    """

    def __init__(self, num_classes: int = 4, anchors: int = 1, width: int = 16) -> None:
        super().__init__()
        self.num_classes, self.anchors = num_classes, anchors
        self.stem = _conv_bn(3, width)
        self.block = _Residual(width)
        self.down1 = _conv_bn(width, 2 * width, stride=2)
        self.down2 = _conv_bn(2 * width, 4 * width, stride=2)
        self.neck = _conv_bn(4 * width, 2 * width)
        self.cls_head = nn.Conv2d(2 * width, anchors * num_classes, 1)
        self.box_head = nn.Conv2d(2 * width, anchors * 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.neck(self.down2(self.down1(self.block(self.stem(x)))))
        return self.cls_head(x), self.box_head(x)


class TinySegNet(nn.Module):
    """A segmentation-like model: encoder, upsampling decoder with a skip, dict output.

    ``forward`` returns ``{"out": per-pixel class logits at the input resolution}``.

    Args:
        num_classes: Classes per pixel.
        width: Channels of the first stage.
    """

    def __init__(self, num_classes: int = 4, width: int = 16) -> None:
        super().__init__()
        self.enc1 = _conv_bn(3, width)
        self.enc2 = _conv_bn(width, 2 * width, stride=2)
        self.mid = _conv_bn(2 * width, 2 * width)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec = _conv_bn(2 * width + width, width)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        skip = self.enc1(x)
        y = self.up(self.mid(self.enc2(skip)))
        y = self.dec(torch.cat([y, skip], dim=1))
        return {"out": self.classifier(y)}


# --------------------------------------------------------------- synthetic detection task

STRIDE = 4  # TinyDetector's output stride


class Shapes(NamedTuple):
    """Synthetic detection data: each image holds one filled square; its colour is its class.

    Attributes:
        images: ``(N, 3, S, S)`` float inputs, normalised (mean 0, std about 1).
        cells: ``(N, S/4, S/4)`` per-cell targets: 0 background, ``1 + class`` where the
            cell's centre lies in the square (TinyDetector's class head).
        boxes: ``(N, 4)`` the square as ``x0, y0, x1, y1`` in [0, 1] (the box head).
        masks: ``(N, S, S)`` per-pixel targets like ``cells`` (TinySegNet).
    """

    images: torch.Tensor
    cells: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor

    def __getitem__(self, idx):  # type: ignore[no-untyped-def,override]
        if isinstance(idx, int):
            return tuple.__getitem__(self, idx)
        return Shapes(*(t[idx] for t in self))


def make_shapes(n: int, *, size: int = 32, classes: int = 3, seed: int = 0) -> Shapes:
    """``n`` noisy images with one square each (side 1/4 to 1/2 of the image), seeded."""
    if not 1 <= classes <= 3:
        raise ValueError("classes must be 1..3 (one colour channel per class)")
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 0.4
    label = torch.randint(0, classes, (n,), generator=g)
    side = torch.randint(size // 4, size // 2 + 1, (n,), generator=g)
    x0 = (torch.rand(n, generator=g) * (size - side + 1)).long()
    y0 = (torch.rand(n, generator=g) * (size - side + 1)).long()
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        a, b, s = int(y0[i]), int(x0[i]), int(side[i])
        x[i, :, a : a + s, b : b + s] *= 0.5
        x[i, int(label[i]), a : a + s, b : b + s] = 0.6 + 0.4 * x[i, 0, a, b]
        masks[i, a : a + s, b : b + s] = 1 + label[i]
    centre = STRIDE // 2
    cells = masks[:, centre::STRIDE, centre::STRIDE].clone()
    boxes = torch.stack([x0, y0, x0 + side, y0 + side], 1).float() / size
    return Shapes((x - 0.35) / 0.25, cells, boxes, masks)


def detection_loss(model: nn.Module, data: Shapes) -> torch.Tensor:
    """Cross-entropy of the class head per cell plus L1 of the box head on object cells."""
    logits, box = model(data.images)
    loss = F.cross_entropy(logits, data.cells)
    obj = (data.cells > 0).unsqueeze(1).float()
    target = data.boxes.view(-1, 4, 1, 1).expand_as(box)
    return loss + ((box - target).abs() * obj).sum() / obj.sum().clamp(min=1) / 4


def train_detector(
    model: nn.Module, data: Shapes, epochs: float, *, lr: float = 0.05, seed: int = 0
) -> nn.Module:
    """SGD on :func:`detection_loss`, batch 64, cosine learning rate; fractional epochs ok."""
    n = data.images.shape[0]
    steps = max(1, round(epochs * math.ceil(n / 64)))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    model.train()
    order = torch.randperm(n, generator=g)
    for step in range(steps):
        start = (step * 64) % n
        if start + 64 > n:
            order = torch.randperm(n, generator=g)
        batch = order[start : start + 64]
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.zero_grad()
        detection_loss(model, data[batch]).backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def detection_score(model: nn.Module, data: Shapes) -> float:
    """Balanced cell accuracy of the class head: the mean of object-cell and background-cell
    accuracy (a stand-in for mAP: higher is better, in [0, 1])."""
    model.eval()
    logits, _ = model(data.images)
    pred = logits.argmax(1)
    obj = data.cells > 0
    hit = pred == data.cells
    return 0.5 * float(hit[obj].float().mean()) + 0.5 * float(hit[~obj].float().mean())
