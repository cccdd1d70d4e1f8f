"""Small re-implementations of the structures users ship, for the conformance suite.

torchvision and timm do not import beside every torch build, and Ultralytics is AGPL, so
the patterns that break pruning tools are written here from their papers, at CIFAR size
(32x32 inputs, a few blocks each, random weights): what matters is the graph, not the
accuracy. Each factory returns a model in eval mode; ``ARCHITECTURES`` maps a name to
``(factory, what it exercises)`` for the tests and ``bench/bench_conformance.py``.

- :class:`RegNet`: X and Y blocks (1x1, grouped 3x3 with a fixed group width, 1x1;
  squeeze-excitation on Y), so group counts 2, 3, 4 and 8 appear in one model.
- :class:`ShuffleNetV2`: channel split (``chunk``), concat, channel shuffle by
  ``view / transpose / view``, down-sampling units with two branches.
- :class:`ConvNeXt`: depthwise 7x7, LayerNorm over a channels-last ``permute``, Linear
  MLP, layer scale, drop path; LayerNorm in the stem and the down-sampling layers.
- :class:`EfficientNet`: MBConv (expand, depthwise, SE with SiLU, project), stochastic
  depth on the residual.
- :class:`YoloV8`: Conv-BN-SiLU, C2f (``chunk`` + concat of every bottleneck), SPPF, an
  FPN/PAN neck with upsample + concat, and a decoupled Detect head with DFL that returns
  the decoded predictions and the per-level maps (a tuple, like Ultralytics in eval mode).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of the residual branch while training."""
    if not training or p == 0.0:
        return x
    keep = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) >= p
    return x * keep / (1.0 - p)


class _SE(nn.Module):
    """Squeeze-excitation with 1x1 convs (RegNet-Y, EfficientNet)."""

    def __init__(self, channels: int, squeeze: int, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = act()
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


def _cbr(cin: int, cout: int, k: int, s: int = 1, g: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


# ---- RegNet X / Y ---------------------------------------------------------------------------
class _RegNetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, group_width: int, se: bool) -> None:
        super().__init__()
        self.a = _cbr(cin, cout, 1)
        self.b = _cbr(cout, cout, 3, stride, g=cout // group_width)
        self.se = _SE(cout, max(1, cin // 4)) if se else nn.Identity()
        self.c = _cbr(cout, cout, 1, act=False)
        self.proj = _cbr(cin, cout, 1, stride, act=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = x if self.proj is None else self.proj(x)
        return F.relu(short + self.c(self.se(self.b(self.a(x)))))


class RegNet(nn.Module):
    """RegNet X (``se=False``) or Y: stages of widths 32/48/64 at group widths 16/16/8
    (2, 3 and 8 groups), two blocks each."""

    def __init__(self, num_classes: int = 10, se: bool = False) -> None:
        super().__init__()
        self.stem = _cbr(3, 16, 3)
        blocks: list[nn.Module] = []
        cin = 16
        for cout, gw in ((32, 16), (48, 16), (64, 8)):
            blocks += [_RegNetBlock(cin, cout, 2, gw, se), _RegNetBlock(cout, cout, 1, gw, se)]
            cin = cout
        self.trunk = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trunk(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---- ShuffleNetV2 ---------------------------------------------------------------------------
def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle, written as torchvision writes it: view, transpose, view."""
    b, c, h, w = x.shape
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(b, c, h, w)


class _ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                _cbr(cin, cin, 3, stride, g=cin, act=False), _cbr(cin, half, 1)
            )
        b2_in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(
            _cbr(b2_in, half, 1),
            _cbr(half, half, 3, stride, g=half, act=False),
            _cbr(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 (x0.5-like widths 24/48/96): a down-sampling unit then one and two basic
    units (two basic units in a row are what Torch-Pruning's reshape mapping fails on)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _cbr(3, 24, 3)
        units: list[nn.Module] = []
        cin = 24
        for cout, basic in ((48, 1), (96, 2)):
            units += [
                _ShuffleUnit(cin, cout, 2),
                *(_ShuffleUnit(cout, cout, 1) for _ in range(basic)),
            ]
            cin = cout
        self.stages = nn.Sequential(*units)
        self.head = _cbr(cin, 128, 1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stages(F.max_pool2d(self.stem(x), 3, 2, 1)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---- ConvNeXt -------------------------------------------------------------------------------
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor, through a channels-last permute."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, drop_path: float, scale_init: float = 1e-1) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), scale_init))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # N, H, W, C
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + _drop_path(y.permute(0, 3, 1, 2), self.drop_path, self.training)


class ConvNeXt(nn.Module):
    """ConvNeXt (atto-like): patchify stem with LayerNorm, stages of widths 32/64, LayerNorm +
    2x2 stride-2 conv between stages, layer scale and drop path in every block."""

    def __init__(self, num_classes: int = 10, dims: tuple[int, ...] = (32, 64)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 2, 2), LayerNorm2d(dims[0], eps=1e-6))
        layers: list[nn.Module] = []
        for i, d in enumerate(dims):
            if i:
                layers += [LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], d, 2, 2)]
            layers += [_ConvNeXtBlock(d, 0.05), _ConvNeXtBlock(d, 0.1)]
        self.stages = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.fc = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x)).mean((2, 3))
        return self.fc(self.norm(x))


# ---- EfficientNet ---------------------------------------------------------------------------
class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, drop: float) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = (
            nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU())
            if expand != 1
            else nn.Identity()
        )
        self.dw = nn.Sequential(
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.SiLU(),
        )
        self.se = _SE(mid, max(1, cin // 4), nn.SiLU)
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout
        self.drop = drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + _drop_path(y, self.drop, self.training) if self.residual else y


class EfficientNet(nn.Module):
    """EfficientNet-B0-like: stem, MBConv1 then MBConv6 stages with SE, SiLU and stochastic
    depth, a 1x1 head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU()
        )
        cfg = ((16, 16, 1, 1), (16, 24, 2, 6), (24, 24, 1, 6), (24, 40, 2, 6), (40, 40, 1, 6))
        self.blocks = nn.Sequential(
            *(_MBConv(ci, co, s, e, 0.1 * i / len(cfg)) for i, (ci, co, s, e) in enumerate(cfg))
        )
        self.head = nn.Sequential(nn.Conv2d(40, 128, 1, bias=False), nn.BatchNorm2d(128), nn.SiLU())
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---- YOLOv8 ---------------------------------------------------------------------------------
class Conv(nn.Module):
    """Ultralytics' Conv: conv, BatchNorm, SiLU."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.bn(self.conv(x)))


class _Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, 3), Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with two convs: ``cv1`` output chunked in two, every bottleneck's
    output appended, all concatenated into ``cv2``."""

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = cout // 2
        self.cv1 = Conv(cin, 2 * self.c)
        self.cv2 = Conv((2 + n) * self.c, cout)
        self.m = nn.ModuleList(_Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max-pools concatenated."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cv1 = Conv(cin, cin // 2)
        self.cv2 = Conv(cin // 2 * 4, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(F.max_pool2d(y[-1], 5, 1, 2) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """Distribution focal loss integral: softmax over ``reg_max`` bins, expectation by a
    fixed 1x1 conv (not trained, not pruned: its input is the bins, not channels)."""

    def __init__(self, reg_max: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1)
        self.reg_max = reg_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        x = x.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)
        return self.conv(x).view(b, 4, a)


class Detect(nn.Module):
    """Decoupled head per level: a box branch (``4 * reg_max`` outputs, decoded by DFL) and
    a class branch. Returns ``(decoded (B, 4 + nc, anchors), level maps...)``."""

    def __init__(
        self, nc: int, chans: tuple[int, ...], strides: tuple[int, ...], reg_max: int = 16
    ) -> None:
        super().__init__()
        c2, c3 = max(16, chans[0] // 4, reg_max * 4), max(chans[0], min(nc, 100))
        self.nc, self.reg_max, self.strides = nc, reg_max, strides
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(c, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
            for c in chans
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(Conv(c, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for c in chans
        )
        self.dfl = DFL(reg_max)

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        maps = [torch.cat((b(x), c(x)), 1) for x, b, c in zip(xs, self.cv2, self.cv3, strict=True)]
        flat = torch.cat([m.flatten(2) for m in maps], 2)
        box, cls = flat.split((4 * self.reg_max, self.nc), 1)
        anchors, strides = [], []
        for m, s in zip(maps, self.strides, strict=True):
            h, w = m.shape[2:]
            sy, sx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            anchors.append(torch.stack((sx, sy), 0).flatten(1))
            strides.append(torch.full((1, h * w), float(s)))
        anchor, stride = torch.cat(anchors, 1), torch.cat(strides, 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        xywh = torch.cat(((anchor + (rb - lt) / 2), rb + lt), 1) * stride
        return (torch.cat((xywh, cls.sigmoid()), 1), *maps)


class YoloV8(nn.Module):
    """YOLOv8-n-like detector at 1/8 width: backbone with C2f and SPPF, FPN/PAN neck with
    upsample + concat, Detect over three levels (strides 8, 16, 32)."""

    def __init__(self, nc: int = 4, w: int = 16) -> None:
        super().__init__()
        self.b0, self.b1, self.b2 = (
            Conv(3, w, 3, 2),
            Conv(w, 2 * w, 3, 2),
            C2f(2 * w, 2 * w, 1, True),
        )
        self.b3, self.b4 = Conv(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w, 1, True)
        self.b5, self.b6 = Conv(4 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w, 1, True)
        self.sppf = SPPF(8 * w, 8 * w)
        self.n1 = C2f(12 * w, 4 * w)  # up(P5) + P4
        self.n2 = C2f(6 * w, 2 * w)  # up(N1) + P3 -> out P3
        self.d1, self.n3 = Conv(2 * w, 2 * w, 3, 2), C2f(6 * w, 4 * w)  # -> out P4
        self.d2, self.n4 = Conv(4 * w, 4 * w, 3, 2), C2f(12 * w, 8 * w)  # -> out P5
        self.detect = Detect(nc, (2 * w, 4 * w, 8 * w), (8, 16, 32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p3 = self.b2(self.b1(self.b0(x)))
        p4 = self.b4(self.b3(p3))
        p5 = self.sppf(self.b6(self.b5(p4)))
        n1 = self.n1(torch.cat((F.interpolate(p5, scale_factor=2.0), p4), 1))
        o3 = self.n2(torch.cat((F.interpolate(n1, scale_factor=2.0), p3), 1))
        o4 = self.n3(torch.cat((self.d1(o3), n1), 1))
        o5 = self.n4(torch.cat((self.d2(o4), p5), 1))
        return self.detect([o3, o4, o5])


def _eval(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        return factory().eval()

    return make


ARCHITECTURES: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "regnetx": (_eval(lambda: RegNet(se=False)), "grouped 3x3 (2, 3, 8 groups)"),
    "regnety": (_eval(lambda: RegNet(se=True)), "grouped 3x3 + squeeze-excitation"),
    "shufflenetv2": (_eval(ShuffleNetV2), "split, concat, shuffle by view/transpose/view"),
    "convnext": (_eval(ConvNeXt), "depthwise 7x7, LayerNorm over a permute, layer scale"),
    "efficientnet": (_eval(EfficientNet), "MBConv, SE, SiLU, stochastic depth"),
    "yolov8": (_eval(YoloV8), "C2f chunk + concat, SPPF, Detect with DFL, tuple output"),
}
