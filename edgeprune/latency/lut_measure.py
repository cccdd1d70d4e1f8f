"""Measuring single layers on a profile's target, for the latency lookup table.

Three parts: the layer configurations of a model (found with forward hooks), a one-layer
ONNX graph per (configuration, c_in, c_out) built directly with ``onnx.helper`` (no torch
export: a LUT needs hundreds of them), and the channel-multiple discovery: a probe conv timed
for c = 1..c_max, whose staircase period tells which channel counts the runtime runs fastest.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.calibration.int8 import needs_int8, quantize_for_latency
from edgeprune.errors import ModelError
from edgeprune.profiles.schema import DeviceProfile, MeasurementSettings
from edgeprune.targets.base import Target, require_available, target_for

# Single convs take microseconds: a few dozen iterations give a stable median, and the
# minimum over two passes (run far apart in time) drops the ones hit by a neighbour's load.
POINT_SETTINGS = MeasurementSettings(
    warmup_iters=3, warmup_ms=2.0, min_iters=15, min_duration_ms=8.0, max_iters=400
)
MULTIPLE_CANDIDATES = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class LayerConfig:
    """Everything about a layer's latency except its channel counts.

    Attributes:
        kind: ``"conv"`` or ``"linear"``.
        kernel: (kh, kw); (1, 1) for linear.
        stride: (sh, sw).
        padding: (ph, pw).
        dilation: (dh, dw).
        groups_mode: ``"dense"`` (groups 1), ``"depthwise"`` (groups == c_in, c_out =
            depth_mult * c_in) or ``"grouped"`` (a fixed number of groups).
        groups: The fixed group count of ``"grouped"``; 1 otherwise.
        depth_mult: c_out / c_in of a depthwise conv; 1 otherwise.
        in_hw: Input (H, W); (1, 1) for linear.
        batch: Batch size of the profile; for linear, the rows the layer is applied to.
    """

    kind: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups_mode: str
    groups: int
    depth_mult: int
    in_hw: tuple[int, int]
    batch: int

    def key(self) -> str:
        """16 hex characters naming this configuration (the cache file name)."""
        blob = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerConfig:
        pairs = ("kernel", "stride", "padding", "dilation", "in_hw")
        kw: dict[str, Any] = {k: tuple(v) if k in pairs else v for k, v in d.items()}
        return cls(**kw)

    def describe(self) -> str:
        """What a user reads in the build's progress: ``conv 3x3 s2 grouped(4) @32x32``."""
        if self.kind == "linear":
            return f"linear x{self.batch}"
        mode = {"dense": "", "depthwise": " depthwise", "grouped": f" grouped({self.groups})"}
        kh, kw = self.kernel
        h, w = self.in_hw
        return f"conv {kh}x{kw} s{self.stride[0]}{mode[self.groups_mode]} @{h}x{w}"

    @property
    def channel_step(self) -> int:
        """Channel counts must stay multiples of this (the group count of a grouped conv)."""
        return self.groups if self.groups_mode == "grouped" else 1


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a model: name, configuration, base channel counts, calls per forward."""

    name: str
    config: LayerConfig
    in_channels: int
    out_channels: int
    calls: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerSpec:
        return cls(**{**d, "config": LayerConfig.from_dict(d["config"])})


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _conv_padding(mod: nn.Conv2d) -> tuple[int, int]:
    if isinstance(mod.padding, str):  # "same" / "valid"
        if mod.padding == "valid":
            return (0, 0)
        kh, kw = mod.kernel_size
        dh, dw = mod.dilation
        return ((kh - 1) * dh // 2, (kw - 1) * dw // 2)
    return _pair(mod.padding)


def _conv_config(mod: nn.Conv2d, x: torch.Tensor) -> LayerConfig:
    g, cin, cout = mod.groups, mod.in_channels, mod.out_channels
    if g == 1:
        mode, groups, mult = "dense", 1, 1
    elif g == cin and cout % cin == 0:
        mode, groups, mult = "depthwise", 1, cout // cin
    else:
        mode, groups, mult = "grouped", g, 1
    return LayerConfig(
        kind="conv",
        kernel=_pair(mod.kernel_size),
        stride=_pair(mod.stride),
        padding=_conv_padding(mod),
        dilation=_pair(mod.dilation),
        groups_mode=mode,
        groups=groups,
        depth_mult=mult,
        in_hw=(int(x.shape[-2]), int(x.shape[-1])),
        batch=int(x.shape[0]),
    )


def _linear_config(mod: nn.Linear, x: torch.Tensor) -> LayerConfig:
    # A linear layer is a Gemm over all rows it is applied to (batch x any leading dims).
    rows = x.numel() // mod.in_features
    return LayerConfig("linear", (1, 1), (1, 1), (0, 0), (1, 1), "dense", 1, 1, (1, 1), rows)


def enumerate_layers(model: nn.Module, input_shape: Sequence[int]) -> list[LayerSpec]:
    """The conv and linear layers a forward pass runs, in call order, with their configurations.

    Args:
        model: The model (run once in eval mode on zeros; its mode is restored).
        input_shape: (batch, C, H, W), e.g. ``profile.full_input_shape``.

    Raises:
        ModelError: The model rejects the input, or has 1-D/3-D convs (not in the LUT).
    """
    specs: dict[str, LayerSpec] = {}
    order: list[str] = []

    def hook(name: str, mod: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0]
        if name in specs:
            specs[name] = LayerSpec(**{**specs[name].__dict__, "calls": specs[name].calls + 1})
            return
        if isinstance(mod, nn.Conv2d):
            cfg, cin, cout = _conv_config(mod, x), mod.in_channels, mod.out_channels
        else:
            assert isinstance(mod, nn.Linear)
            cfg, cin, cout = _linear_config(mod, x), mod.in_features, mod.out_features
        specs[name] = LayerSpec(name, cfg, cin, cout)
        order.append(name)

    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv1d, nn.Conv3d)):
            raise ModelError(
                f"layer '{name}' is a {type(mod).__name__}; the latency LUT models Conv2d and "
                "Linear layers only — measure this model with the latency oracle instead"
            )
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            handles.append(mod.register_forward_pre_hook(lambda m, a, n=name: hook(n, m, a)))
    was_training, threads = model.training, torch.get_num_threads()
    try:
        model.eval()
        # One small forward for shapes: extra threads only add contention on a busy host.
        torch.set_num_threads(1)
        with torch.no_grad():
            model(torch.zeros(tuple(input_shape)))
    except Exception as exc:
        raise ModelError(
            f"model rejects input shape {list(input_shape)}: {str(exc).splitlines()[0]}; "
            "pick a profile whose input_shape fits the model"
        ) from exc
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
        for h in handles:
            h.remove()
    return [specs[n] for n in order]


def _out_shape(config: LayerConfig, c_out: int) -> list[int]:
    if config.kind == "linear":
        return [config.batch, c_out]
    hw = [
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, p, d, k, s in zip(
            config.in_hw, config.padding, config.dilation, config.kernel, config.stride, strict=True
        )
    ]
    return [config.batch, c_out, *hw]


def layer_onnx(config: LayerConfig, c_in: int, c_out: int, seed: int = 0) -> bytes:
    """A one-layer ONNX graph: Conv(+bias, BN folded)+Relu, or Flatten+Gemm for linear.

    Its input has shape (batch, c_in, H, W) with (H, W) = ``config.in_hw``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    n, (h, w) = config.batch, config.in_hw
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c_in, h, w])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, _out_shape(config, c_out))
    bias = numpy_helper.from_array(np.zeros(c_out, np.float32), "B")
    if config.kind == "linear":
        weight = rng.standard_normal((c_out, c_in)).astype(np.float32) * 0.1
        nodes = [
            helper.make_node("Flatten", ["x"], ["f"], axis=1),
            helper.make_node("Gemm", ["f", "W", "B"], ["y"], transB=1),
        ]
    else:
        groups = {"dense": 1, "depthwise": c_in, "grouped": config.groups}[config.groups_mode]
        kh, kw = config.kernel
        weight = rng.standard_normal((c_out, c_in // groups, kh, kw)).astype(np.float32) * 0.1
        ph, pw = config.padding
        nodes = [
            helper.make_node(
                "Conv",
                ["x", "W", "B"],
                ["c"],
                kernel_shape=list(config.kernel),
                strides=list(config.stride),
                pads=[ph, pw, ph, pw],
                dilations=list(config.dilation),
                group=groups,
            ),
            helper.make_node("Relu", ["c"], ["y"]),
        ]
    graph = helper.make_graph(
        nodes, "layer", [x], [y], [numpy_helper.from_array(weight, "W"), bias]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    onnx.checker.check_model(model)
    return model.SerializeToString()


def point_shape(config: LayerConfig, c_in: int) -> tuple[int, int, int, int]:
    """Input shape (batch, C, H, W) of :func:`layer_onnx`'s graph."""
    return (config.batch, c_in, *config.in_hw)


def overhead_onnx(batch: int) -> bytes:
    """A graph with one Relu on a (batch, 1, 1, 1) tensor: the runtime's per-call cost."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 1, 1, 1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "overhead", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@dataclass
class PointMeasurer:
    """Times small ONNX graphs on a profile's target through the target contract.

    Each graph is written to a scratch file, prepared with a copy of the profile whose
    ``input_shape`` is the graph's, timed with ``settings`` and closed again.
    """

    profile: DeviceProfile
    settings: MeasurementSettings = POINT_SETTINGS
    points_measured: int = 0
    _target: Target | None = field(default=None, repr=False)
    _tmp: Any = field(default=None, repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._target = target_for(self.profile)
        require_available(self._target, self.profile)
        self._tmp = tempfile.TemporaryDirectory(prefix="edgeprune-lut-")

    @property
    def devices(self) -> int:
        """Devices that measure at once: the agents of a remote profile's pool (each takes
        one request at a time), else 1 (a local CPU is timed one graph at a time)."""
        remote = self.profile.remote
        return len(remote.urls) if remote is not None else 1

    def median_us(self, onnx_bytes: bytes, shape: tuple[int, int, int, int]) -> float:
        """Median time of one call of a graph whose input is (batch, C, H, W), in microseconds."""
        assert self._target is not None
        scratch = Path(tempfile.mkdtemp(dir=self._tmp.name))  # one per call: thread-safe
        path = scratch / "layer.onnx"
        path.write_bytes(onnx_bytes)
        if needs_int8(self.profile):  # time the layer as the INT8 model will run it
            path = quantize_for_latency(path, scratch / "layer.int8.onnx", self.profile)
        variant = self.profile.model_copy(update={"batch": shape[0], "input_shape": shape[1:]})
        prepared = self._target.prepare(path, variant)
        try:
            stats = self._target.measure(prepared, None, self.settings)
        finally:
            prepared.close()
            shutil.rmtree(scratch, ignore_errors=True)
        with self._lock:
            self.points_measured += 1
        return stats.median_ms * 1000.0

    def min_of_passes(
        self, items: Sequence[tuple[bytes, tuple[int, int, int, int]]], passes: int = 2
    ) -> list[float]:
        """Time every graph ``passes`` times (forward, then backward, ...) and keep the minimum.

        Alternating the order spreads each point's passes apart in time, so a burst of load
        from another process rarely hits all of them. With an agent pool the graphs of a
        pass go to every agent at once (one in flight per device); the result is the same
        table, measured ``devices`` times faster.
        """
        best = [math.inf] * len(items)
        for p in range(passes):
            order = list(range(len(items)) if p % 2 == 0 else reversed(range(len(items))))
            if self.devices > 1 and len(order) > 1:
                with ThreadPoolExecutor(self.devices, thread_name_prefix="lut-point") as pool:
                    times = list(pool.map(lambda i: self.median_us(*items[i]), order))
            else:
                times = [self.median_us(*items[i]) for i in order]
            for i, us in zip(order, times, strict=True):
                best[i] = min(best[i], us)
        return best


@dataclass(frozen=True)
class StaircaseCurve:
    """Latency of a probe conv over channel counts (c_in = c_out = c) and what it implies.

    Attributes:
        channels: 1..c_max.
        latency_us: Median time per channel count (minimum over passes), microseconds.
        probe: (kernel, spatial size) of the probe conv.
        scores: Per candidate multiple, the cost of rounding up by half a multiple as a
            fraction of a whole step (~0 on a stair, ~0.5 on a slope); see
            :func:`infer_channel_multiple`.
        multiple: The chosen channel multiple.
    """

    channels: tuple[int, ...]
    latency_us: tuple[float, ...]
    probe: tuple[int, int]
    scores: dict[int, float]
    multiple: int

    @property
    def align(self) -> int | None:
        """The fast-path alignment the curve shows (:func:`infer_align`)."""
        return infer_align(self.channels, self.latency_us, self.multiple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": list(self.channels),
            "latency_us": list(self.latency_us),
            "probe": {"kernel": self.probe[0], "spatial": self.probe[1]},
            "scores": {str(k): v for k, v in self.scores.items()},
            "multiple": self.multiple,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StaircaseCurve:
        return cls(
            tuple(d["channels"]),
            tuple(d["latency_us"]),
            (d["probe"]["kernel"], d["probe"]["spatial"]),
            {int(k): float(v) for k, v in d["scores"].items()},
            int(d["multiple"]),
        )


#: Candidate fast-path alignments (channel counts divisible by one run the fast kernels).
ALIGN_CANDIDATES = (1, 2, 4, 8, 16)


def infer_align(
    channels: Sequence[int],
    latency_us: Sequence[float],
    multiple: int,
    *,
    tolerance: float = 0.1,
    share: float = 0.7,
) -> int | None:
    """The runtime's fast-path alignment, read off a discovery curve of period ``multiple``.

    A count on the fast path costs what the top of its stair costs (the kernel pads it up to
    the multiple); a count off it takes another path whose cost grows with the channels
    (ONNX Runtime on the AMD EPYC dev host: 17 channels 27.9 us, 20 and 32 channels 45.5 us,
    31 channels 67.3 us). The alignment is the smallest ``a`` dividing ``multiple`` for which
    at least ``share`` of the counts divisible by ``a`` (past the first stair, which often
    runs another kernel; the multiples themselves left out) cost within ``tolerance`` of
    their stair's top. 1: every count is on the staircase (no slow path). None: the curve
    has no staircase to read it from (``multiple`` 1, or too short a curve).
    """
    if multiple <= 1:
        return None
    lat = dict(zip((int(c) for c in channels), (float(v) for v in latency_us), strict=True))
    for a in ALIGN_CANDIDATES:
        if multiple % a:
            continue
        on, n = 0, 0
        for c in range(multiple + a, max(lat) + 1, a):
            top = -(-c // multiple) * multiple
            if c % multiple == 0 or top not in lat or c not in lat:
                continue
            n += 1
            on += abs(lat[c] / lat[top] - 1) <= tolerance
        if n and on >= share * n:
            return a
    return None


def infer_channel_multiple(
    channels: Sequence[int],
    latency_us: Sequence[float],
    candidates: Sequence[int] = MULTIPLE_CANDIDATES,
    *,
    max_cost: float = 0.25,
    flat_spread: float = 0.15,
) -> tuple[int, dict[int, float]]:
    """The staircase period of a latency-over-channels curve.

    Rule: for a candidate multiple m, the score is the mean cost of rounding a count in the
    lower half of a block up to the block's multiple, as a fraction of the mean step between
    multiples, over blocks k = 2..K (the first block is left out: tiny channel counts often
    run on another kernel)::

        score(m) = mean_{k, c in ((k-1) m, k m - m/2]} [L(k m) - L(c)] / mean_step(m)
        mean_step(m) = [L(K m) - L(m)] / (K - 1)

    A staircase of period P scores ~0 for every divisor of P (the lower half of a block sits
    on the same stair as its multiple) and ~0.5 for 2P (the lower half is a whole stair
    below); a linear curve scores >= 0.5 for every m. The multiple is the largest m scoring
    at most ``max_cost``. Counts off the multiple may even be slower than the next multiple
    (ORT's blocked kernels want multiples of 4): that lowers the score, as it should. A flat
    curve (fitted rise below ``flat_spread`` of its median) gives 1: channel counts then do
    not matter.

    Args:
        channels: Consecutive channel counts, e.g. 1..64.
        latency_us: Latency at each count.
        candidates: Multiples to consider; even ones with at least two blocks in the range
            (and 1, which always qualifies). The first 2 x max(candidates) counts are needed.
        max_cost: Highest score that still counts as a stair.
        flat_spread: Fitted rise over the range, as a fraction of the median latency, below
            which the curve counts as flat.

    Returns:
        (multiple, score per candidate considered).
    """
    lat = dict(zip((int(c) for c in channels), (float(v) for v in latency_us), strict=True))
    cs = np.array(list(lat), dtype=float)
    values = np.array(list(lat.values()))
    scores: dict[int, float] = {}
    # Flat means the fitted rise over the range is small: robust to single noisy points.
    rise_fit = float(np.polyfit(cs, values, 1)[0]) * float(np.ptp(cs)) if len(lat) >= 4 else 0.0
    if rise_fit <= flat_spread * float(np.median(values)):
        return 1, {1: 0.0}
    for m in sorted(candidates):
        if m == 1:
            scores[1] = 0.0
            continue
        blocks = max(lat) // m
        if m % 2 or blocks < 2 or any(c not in lat for c in range(1, blocks * m + 1)):
            continue
        step = (lat[blocks * m] - lat[m]) / (blocks - 1)
        if step <= 0:
            continue  # no rise across the multiples: this m says nothing about the curve
        costs = [
            lat[k * m] - lat[c]
            for k in range(2, blocks + 1)
            for c in range((k - 1) * m + 1, k * m - m // 2 + 1)
        ]
        scores[m] = float(np.mean(costs)) / step
    passing = [m for m, sc in scores.items() if sc <= max_cost]
    return (max(passing) if passing else 1), scores


def measure_staircase(
    profile: DeviceProfile,
    *,
    probe: tuple[int, int] = (3, 16),
    c_max: int = 64,
    passes: int = 2,
    measurer: PointMeasurer | None = None,
) -> tuple[list[int], list[float]]:
    """Time a k x k, stride-1 conv at spatial size s (``probe = (k, s)``) for c = 1..c_max."""
    k, s = probe
    cfg = LayerConfig(
        "conv", (k, k), (1, 1), (k // 2, k // 2), (1, 1), "dense", 1, 1, (s, s), profile.batch
    )
    meas = measurer or PointMeasurer(profile)
    channels = list(range(1, c_max + 1))
    items = [(layer_onnx(cfg, c, c), (profile.batch, c, s, s)) for c in channels]
    return channels, meas.min_of_passes(items, passes)


def discover_channel_multiple(
    profile: DeviceProfile,
    *,
    probe: tuple[int, int] = (3, 16),
    c_max: int = 64,
    passes: int = 2,
    measurer: PointMeasurer | None = None,
) -> tuple[int, StaircaseCurve]:
    """Measure the probe conv's latency staircase and infer the device's channel multiple.

    Args:
        profile: Where to measure.
        probe: (kernel, spatial size) of the probe conv (c_in = c_out = c, stride 1).
        c_max: Largest channel count probed (at least twice the largest multiple wanted).
        passes: Passes over the curve; the minimum per point is kept.
        measurer: Reuse a measurer (and its settings).

    Returns:
        (multiple, the curve with its per-candidate scores).
    """
    channels, lat = measure_staircase(
        profile, probe=probe, c_max=c_max, passes=passes, measurer=measurer
    )
    multiple, scores = infer_channel_multiple(channels, lat)
    return multiple, StaircaseCurve(tuple(channels), tuple(lat), probe, scores, multiple)
