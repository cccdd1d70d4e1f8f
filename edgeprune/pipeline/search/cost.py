"""What a candidate costs, as a function of the channels each group keeps.

Every searcher projects its candidates onto a step's cost target, so it needs a cost it can
evaluate thousands of times without building a model: a sum over layers of a function of
the layer's (input, output) channel counts, plus a constant. A layer's channels follow from
the group widths: each group removes ``mult`` of the layer's input (or output) indices per
channel it loses (``mult`` > 1 after a flatten). The per-layer function is

- ``latency``: the LUT's per-layer prediction in microseconds (profile's channel staircase
  included), mapped to milliseconds by a calibration fitted on real measurements;
- ``macs``: the layer's multiply-accumulates (for ``flops_ratio`` goals);
- ``channels``: the channels kept (for ``sparsity`` goals).

Because a layer's cost depends on the groups on *both* sides of it, moving one group changes
the cost of its neighbours' layers too: :meth:`CostModel.delta_raw` accounts for that.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn

from edgeprune.latency.lut import LatencyLUT, LayerTable, fit_positive, layer_channels
from edgeprune.latency.lut_measure import enumerate_layers
from edgeprune.pipeline.pruning.groups import GroupSet

Keep = Mapping[int, int]


@dataclass(frozen=True)
class LayerCost:
    """One layer: which groups set its channel counts, and its cost function.

    Attributes:
        name: Layer name.
        base_in: Input channels of the unpruned layer.
        base_out: Output channels of the unpruned layer.
        in_terms: ``(group id, indices per group channel)`` that cut its inputs.
        out_terms: The same for its outputs.
        fn: ``(c_in, c_out) -> raw cost`` (cached).
    """

    name: str
    base_in: int
    base_out: int
    in_terms: tuple[tuple[int, int], ...]
    out_terms: tuple[tuple[int, int], ...]
    fn: Callable[[int, int], float]

    def channels(self, keep: Keep, base: Mapping[int, int]) -> tuple[int, int]:
        c_in = self.base_in - sum(m * (base[g] - keep.get(g, base[g])) for g, m in self.in_terms)
        c_out = self.base_out - sum(m * (base[g] - keep.get(g, base[g])) for g, m in self.out_terms)
        return max(c_in, 1), max(c_out, 1)


@dataclass
class Calibration:
    """``ms = scale * raw * unit + offset`` fitted on (raw, measured ms) pairs.

    The offset is kept >= 0 (a negative offset once predicted <= 0 ms for small models and
    crashed the run): when least squares wants a negative one, the fit goes through the
    origin instead. Predictions never drop below ``floor_fraction`` of ``scale * raw``.
    """

    unit: float = 1e-3  # raw -> ms before calibration (us -> ms for the LUT)
    scale: float = 1.0
    offset: float = 0.0
    pairs: list[tuple[float, float]] = field(default_factory=list)
    floor_fraction: float = 0.1

    def ms(self, raw: float) -> float:
        base = self.scale * raw * self.unit
        return max(base + self.offset, self.floor_fraction * base, 1e-9)

    def raw_for(self, ms: float) -> float:
        """The raw cost whose prediction is ``ms`` (inverse of :meth:`ms` above the floor)."""
        return max((ms - self.offset) / (self.scale * self.unit), 0.0)

    def add(self, raw: float, measured_ms: float) -> None:
        """Add one measurement and refit."""
        if not (math.isfinite(measured_ms) and measured_ms > 0):
            return
        self.pairs.append((float(raw), float(measured_ms)))
        self.scale, self.offset = fit_positive(
            [(r * self.unit, m) for r, m in self.pairs], self.scale
        )


class CostModel:
    """Cost of a channel plan (group id -> kept channels) without building the model.

    Args:
        layers: The cost terms.
        base_widths: Width of every group (frozen ones included) in the unpruned model.
        constant_raw: Cost that does not depend on channels (the runtime's call overhead).
        calibration: Maps raw cost to the unit targets are given in (ms for latency).
        kind: ``latency``, ``macs`` or ``channels`` (for messages and reports).
    """

    def __init__(
        self,
        layers: Sequence[LayerCost],
        base_widths: Mapping[int, int],
        constant_raw: float = 0.0,
        calibration: Calibration | None = None,
        kind: str = "latency",
    ) -> None:
        self.layers = tuple(layers)
        self.base = {int(g): int(w) for g, w in base_widths.items()}
        self.constant_raw = float(constant_raw)
        self.calibration = calibration or Calibration(unit=1.0)
        self.kind = kind
        touching: dict[int, list[int]] = defaultdict(list)
        for i, layer in enumerate(self.layers):
            for g in {g for g, _ in layer.in_terms + layer.out_terms}:
                touching[g].append(i)
        self._touching = {g: tuple(ix) for g, ix in touching.items()}

    def raw(self, keep: Keep) -> float:
        """Uncalibrated cost of the plan."""
        total = self.constant_raw
        for layer in self.layers:
            total += layer.fn(*layer.channels(keep, self.base))
        return total

    def predict(self, keep: Keep) -> float:
        """Calibrated cost (ms for latency)."""
        return self.calibration.ms(self.raw(keep))

    def delta_raw(self, keep: Keep, group: int, width: int) -> float:
        """Raw cost change when ``group`` goes from ``keep[group]`` to ``width``."""
        moved = {**keep, group: width}
        delta = 0.0
        for i in self._touching.get(group, ()):
            layer = self.layers[i]
            delta += layer.fn(*layer.channels(moved, self.base)) - layer.fn(
                *layer.channels(keep, self.base)
            )
        return delta

    def raw_target(self, target: float) -> float:
        """The raw cost a plan may have to meet ``target`` (in the calibrated unit)."""
        return self.calibration.raw_for(target)


# ------------------------------------------------------------------------------ builders


def _layer_terms(
    groups: GroupSet, layer_names: set[str]
) -> dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]]:
    """For each named layer, the groups cutting its inputs and outputs (with multiplicity)."""
    terms: dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]] = {
        n: ([], []) for n in layer_names
    }
    for g in groups:
        for op in g.ops:
            if op.is_param or op.layer not in terms:
                continue
            mult = max(1, round(len(op.idxs) / max(g.width, 1)))
            side = terms[op.layer][1 if op.is_out else 0]
            if all(gid != g.id for gid, _ in side):
                side.append((g.id, mult))
    return terms


def _scaled_table(table: LayerTable, calls: int, multiple: int) -> Callable[[int, int], float]:
    def fn(c_in: int, c_out: int) -> float:
        return calls * table.predict_us(c_in, c_out, multiple)

    return _cached(fn)


def _bilinear(per: float, calls: int, groups: int, depthwise: bool) -> Callable[[int, int], float]:
    def fn(c_in: int, c_out: int) -> float:
        return calls * per * (c_out if depthwise else c_in * c_out / groups)

    return _cached(fn)


def latency_cost_model(groups: GroupSet, lut: LatencyLUT, model: nn.Module) -> CostModel:
    """Latency in ms from a :class:`~edgeprune.latency.lut.LatencyLUT`.

    Uncalibrated, the prediction is the LUT's per-layer sum plus the runtime's call overhead
    (us -> ms); :meth:`Calibration.add` corrects it with measurements.
    """
    # A model without some of the LUT's layers (residual blocks dropped) costs only the
    # layers it still has: a dropped block's layers vanish from the sum.
    present = {n for n, _ in model.named_modules()}
    specs = {n: s for n, s in lut.layers.items() if n in present}
    multiple = lut.multiple
    base_chans = layer_channels(model)
    terms = _layer_terms(groups, set(specs))
    layers = []
    for name, spec in specs.items():
        ins, outs = terms[name]
        table = lut.tables[spec.config.key()]
        if table.config.groups_mode == "depthwise" and not ins:
            ins = list(outs)
        fn = _scaled_table(table, spec.calls, multiple)
        cin, cout = base_chans.get(name, (spec.in_channels, spec.out_channels))
        layers.append(LayerCost(name, cin, cout, tuple(ins), tuple(outs), fn))
    widths = {g.id: g.width for g in groups}
    return CostModel(layers, widths, lut.overhead_us, Calibration(unit=1e-3), "latency")


def macs_cost_model(groups: GroupSet, model: nn.Module, input_shape: Sequence[int]) -> CostModel:
    """Multiply-accumulates of the conv and linear layers (the ``flops_ratio`` goal)."""
    specs = enumerate_layers(model, input_shape)
    terms = _layer_terms(groups, {s.name for s in specs})
    layers = []
    for s in specs:
        cfg = s.config
        ins, outs = terms[s.name]
        if cfg.kind == "linear":
            per = float(cfg.batch)
        else:
            oh = _out_len(
                cfg.in_hw[0], cfg.kernel[0], cfg.stride[0], cfg.padding[0], cfg.dilation[0]
            )
            ow = _out_len(
                cfg.in_hw[1], cfg.kernel[1], cfg.stride[1], cfg.padding[1], cfg.dilation[1]
            )
            per = float(cfg.batch * cfg.kernel[0] * cfg.kernel[1] * oh * ow)
        depthwise = cfg.groups_mode == "depthwise"
        if depthwise:
            ins = ins or list(outs)
        fn = _bilinear(per, s.calls, cfg.groups, depthwise)
        layers.append(LayerCost(s.name, s.in_channels, s.out_channels, tuple(ins), tuple(outs), fn))
    widths = {g.id: g.width for g in groups}
    return CostModel(layers, widths, 0.0, Calibration(unit=1.0), "macs")


def channels_cost_model(groups: GroupSet) -> CostModel:
    """Channels kept over the prunable groups (the ``sparsity`` goal)."""
    layers = [
        LayerCost(f"group:{g.id}", 1, g.width, (), ((g.id, 1),), _kept_channels)
        for g in groups.prunable
    ]
    return CostModel(
        layers, {g.id: g.width for g in groups}, 0.0, Calibration(unit=1.0), "channels"
    )


def _kept_channels(c_in: int, c_out: int) -> float:
    return float(c_out)


def _out_len(size: int, k: int, s: int, p: int, d: int) -> int:
    return max(1, (size + 2 * p - d * (k - 1) - 1) // s + 1)


def _cached(fn: Callable[[int, int], float]) -> Callable[[int, int], float]:
    return functools.lru_cache(maxsize=65536)(fn)
