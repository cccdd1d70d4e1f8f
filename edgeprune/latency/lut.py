"""Per-layer latency lookup table: predicts a candidate's latency in microseconds, no export.

For each distinct layer configuration of a model (kernel, stride, padding, groups, input
size; see :class:`~edgeprune.latency.lut_measure.LayerConfig`) a grid of (c_in, c_out)
is measured once per profile as one-layer ONNX graphs on the profile's target, and cached on
disk (``$EDGEPRUNE_CACHE/lut/<profile fingerprint>/<config key>.json``, default
``~/.cache/edgeprune``) where later runs and other models with the same configurations reuse
it. The grid holds multiples of the device's channel multiple (discovered from a probe
conv's staircase, cached as ``profile.json`` next to the tables) up to the base width, plus
the base widths themselves.

A prediction rounds each channel count above the first multiple up to the multiple (the
staircase: on ORT's AVX-512 CPU kernels, 40 channels cost what 48 do; below 16 cost is
linear in C, so m/4 and m/2 are on the grid too), interpolates bilinearly on the grid and
sums over layers, plus the runtime's per-call overhead. Everything that is not a conv or
linear layer (pooling, adds, reorders) is left to :meth:`LatencyLUT.calibrate`, which fits
``measured = scale * sum + offset`` on real measurements of a few candidates.

Counts that are not multiples of 4 can run on a slower kernel than the next multiple (see
the discovery curve); the LUT does not model that path, so predictions of such candidates
are optimistic. The search rounds to the multiple and never produces them.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from edgeprune._io import atomic_write_json
from edgeprune.errors import ModelError
from edgeprune.latency.lut_measure import (
    LayerConfig,
    LayerSpec,
    PointMeasurer,
    StaircaseCurve,
    discover_channel_multiple,
    enumerate_layers,
    layer_onnx,
    overhead_onnx,
    point_shape,
)
from edgeprune.latency.oracle import default_cache_dir, profile_fingerprint
from edgeprune.profiles.schema import DeviceProfile

LUT_VERSION = 1
Arch = nn.Module | Mapping[str, tuple[int, int]]


def layer_channels(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(in, out) channels of every Conv2d and Linear layer, by module name."""
    out: dict[str, tuple[int, int]] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            out[name] = (mod.in_channels, mod.out_channels)
        elif isinstance(mod, nn.Linear):
            out[name] = (mod.in_features, mod.out_features)
    return out


def grid_axis(
    widths: Sequence[int], multiple: int, max_points: int, channel_step: int = 1
) -> tuple[int, ...]:
    """Channel counts to measure: multiples of the step up to the widest, plus exact widths.

    The step is the channel multiple, coarsened (by whole multiples) so that at most about
    ``max_points`` multiples are measured per axis. Below the first multiple, counts often
    run on another kernel than the staircase (on ORT's CPU: cost linear in C), so m/4 and m/2
    are measured too (when they are multiples of ``channel_step``) and not rounded up.
    """
    top = max(widths)
    step = multiple * max(1, math.ceil(top / (multiple * max_points)))
    below = {c for c in (multiple // 4, multiple // 2) if 1 <= c < top and c % channel_step == 0}
    return tuple(sorted({*below, *range(step, top + 1, step), *widths}))


def _locate(axis: tuple[int, ...], c: int, multiple: int) -> tuple[int, int, float]:
    # Exact grid counts (base widths like 3 or 10) are used as they are; counts above the
    # first multiple are rounded up to the multiple (the staircase), never past the widest
    # measured count; smaller ones are interpolated between the sub-multiple points.
    if c not in axis and c > multiple:
        rounded = -(-c // multiple) * multiple
        c = min(rounded, axis[-1]) if c <= axis[-1] else rounded
    if len(axis) == 1 or c <= axis[0]:
        return 0, 0, 0.0
    i = min(bisect.bisect_right(axis, c) - 1, len(axis) - 2)  # extrapolates past the top
    return i, i + 1, (c - axis[i]) / (axis[i + 1] - axis[i])


# Channel counts divisible by the alignment run the runtime's blocked kernels (the
# staircase); other counts take a slower path whose cost grows with the channels instead
# (ORT on AMD EPYC, 3x3 conv at 16x16, C in = out: 45 channels 69 us, 48 channels 51 us,
# 33 channels 44 us). Each build reads the alignment off this host's discovery curve
# (lut_measure.infer_align); this one, measured there, stands in only where no curve shows a
# staircase to read it from (a profile that fixes channel_multiple: 1).
ALIGN = 4


def _aligned(c: int, axis: tuple[int, ...], align: int = ALIGN) -> bool:
    return c in axis or c % align == 0


@dataclass(frozen=True)
class LayerTable:
    """Measured latency (us, per-call overhead removed) of one configuration over a grid.

    Depthwise configurations have one channel axis (``axis_out`` equals ``axis_in`` and only
    the diagonal is used). ``slow``: coefficients of ``a + b*cin*cout + c*cin + d*cout``
    fitted on points with channel counts off the ``align`` grid (the slow path), used when a
    count is neither measured nor a multiple of ``align``; None in tables built before it
    was measured. ``align``: the host's fast-path alignment the table was built with.
    """

    config: LayerConfig
    axis_in: tuple[int, ...]
    axis_out: tuple[int, ...]
    grid_us: tuple[tuple[float, ...], ...]
    slow: tuple[float, ...] | None = None
    align: int = ALIGN

    def predict_us(self, c_in: int, c_out: int, multiple: int) -> float:
        """Bilinear interpolation at the channel counts rounded up to ``multiple``; the slow
        path's fit for counts off the aligned grid."""
        if self.slow is not None and not (
            _aligned(c_in, self.axis_in, self.align) and _aligned(c_out, self.axis_out, self.align)
        ):
            a, b, c, d = self.slow
            return max(0.0, a + b * c_in * c_out + c * c_in + d * c_out)
        i0, i1, wi = _locate(self.axis_in, c_in, multiple)
        if self.config.groups_mode == "depthwise":
            g = self.grid_us
            return max(0.0, (1 - wi) * g[i0][i0] + wi * g[i1][i1])
        o0, o1, wo = _locate(self.axis_out, c_out, multiple)
        g = self.grid_us
        top = (1 - wo) * g[i0][o0] + wo * g[i0][o1]
        bottom = (1 - wo) * g[i1][o0] + wo * g[i1][o1]
        return max(0.0, (1 - wi) * top + wi * bottom)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "axis_in": list(self.axis_in),
            "axis_out": list(self.axis_out),
            "grid_us": [list(r) for r in self.grid_us],
            "slow": None if self.slow is None else list(self.slow),
            "align": self.align,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerTable:
        return cls(
            LayerConfig.from_dict(dict(d["config"])),
            tuple(d["axis_in"]),
            tuple(d["axis_out"]),
            tuple(tuple(float(v) for v in r) for r in d["grid_us"]),
            None if d.get("slow") is None else tuple(float(v) for v in d["slow"]),
            int(d.get("align", ALIGN)),
        )


def _grid_points(
    cfg: LayerConfig, axis_in: tuple[int, ...], axis_out: tuple[int, ...]
) -> list[tuple[int, int]]:
    if cfg.groups_mode == "depthwise":
        return [(c, c * cfg.depth_mult) for c in axis_in]
    return [(ci, co) for ci in axis_in for co in axis_out]


def slow_counts(axis: tuple[int, ...], step: int, align: int = ALIGN) -> tuple[int, ...]:
    """Up to three counts off the aligned grid spread over ``axis`` (a third, two thirds,
    the top less one), or none when the axis is one fixed width (an image's 3 channels) or
    when no valid count is off it: a grouped conv whose channel step (its group count) is a
    multiple of ``align`` only ever has aligned widths, so it has no slow path to time.

    Candidates are multiples of ``step`` (the only widths pruning can produce); each search
    walks at most ``len(axis) + align`` multiples up, since among any ``align`` consecutive
    multiples of a step that is not itself a multiple of ``align`` one is off the grid.
    """
    top = axis[-1]
    if len(axis) == 1 or align <= 1 or top < 2 * align or step % align == 0:
        return ()
    out = set()
    for start in (top // 3, 2 * top // 3, top - 1):
        first = -(-max(start, align + 1) // step) * step  # round up to a multiple of step
        for k in range(len(axis) + align):
            c = first + k * step
            if c % align and c not in axis:
                if c < top:
                    out.add(c)
                break
    return tuple(sorted(out))


def _slow_points(
    cfg: LayerConfig, axis_in: tuple[int, ...], axis_out: tuple[int, ...], align: int = ALIGN
) -> list[tuple[int, int]]:
    """Points that time the slow path: off-grid counts on one side or both."""
    step = cfg.channel_step
    s_in, s_out = slow_counts(axis_in, step, align), slow_counts(axis_out, step, align)
    if cfg.groups_mode == "depthwise":
        return [(c, c * cfg.depth_mult) for c in s_in]
    pts = {(ci, co) for ci in s_in for co in s_out}
    pts |= {(ci, axis_out[-1]) for ci in s_in} | {(axis_in[-1], co) for co in s_out}
    return sorted(pts)


def _fit_slow(points: Sequence[tuple[int, int, float]]) -> tuple[float, ...] | None:
    """Least squares ``us ~ a + b*ci*co + c*ci + d*co`` (fewer terms with fewer points)."""
    if len(points) < 2:
        return None
    x = np.array([[1.0, ci * co, ci, co] for ci, co, _ in points])
    y = np.array([us for _, _, us in points])
    cols = [0, 1, 2, 3] if len(points) >= 6 else [0, 1]
    coef, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
    full = np.zeros(4)
    full[cols] = coef
    return tuple(float(v) for v in full)


@dataclass(eq=False)
class LatencyLUT:
    """A per-layer latency table for one model family on one profile.

    Build with :meth:`build`; predict with :meth:`predict_ms`; correct with
    :meth:`calibrate` (returns a new LUT) or :meth:`calibrate_one` (adds one measurement to
    this LUT's fit, in place: the search feeds it the kept candidates as it measures them).
    Layers are matched by module name, so pruned candidates of the model it was built from
    are predicted without a forward pass.

    Attributes:
        profile: Profile name.
        fingerprint: :func:`~edgeprune.latency.oracle.profile_fingerprint` of the profile.
        multiple: Channel multiple used for rounding.
        layers: The base model's layers by name.
        tables: One table per configuration key.
        overhead_us: The runtime's per-call cost (measured on a one-Relu graph).
        scale: Calibrated slope (1 until calibrated).
        offset_ms: Calibrated offset (0 until calibrated).
        curve: The channel-multiple discovery curve, when it was discovered.
        align: The fast-path alignment the tables were built with (read off the curve).
        build_s: Wall time of the build.
        points_measured: Grid points measured by the build (0 when all came from the cache).
        calibration: (raw prediction ms, measured ms) pairs the calibration is fitted on.
        self_check: The table's error on this host, from held-out points measured by the
            build (see :func:`self_check`): ``n``, ``median_abs_pct``, ``max_abs_pct``,
            ``warning`` and the points; None for LUTs saved before it existed.
    """

    profile: str
    fingerprint: str
    multiple: int
    layers: Mapping[str, LayerSpec]
    tables: Mapping[str, LayerTable]
    overhead_us: float
    scale: float = 1.0
    offset_ms: float = 0.0
    curve: StaircaseCurve | None = None
    align: int = ALIGN
    build_s: float = 0.0
    points_measured: int = 0
    calibration: list[tuple[float, float]] = field(default_factory=list)
    self_check: dict[str, Any] | None = None
    _tables_by_layer: dict[str, LayerTable] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._tables_by_layer = {n: self.tables[s.config.key()] for n, s in self.layers.items()}

    @property
    def channel_multiple(self) -> int:
        """The channel multiple predictions round to (discovered or given at build)."""
        return self.multiple

    @property
    def calibration_points(self) -> int:
        """How many measurements the calibration is fitted on."""
        return len(self.calibration)

    # ---- prediction ----------------------------------------------------------------------
    def _channels(self, arch: Arch) -> Mapping[str, tuple[int, int]]:
        chans = layer_channels(arch) if isinstance(arch, nn.Module) else arch
        missing = [n for n in self.layers if n not in chans]
        if missing:
            raise ModelError(
                f"the LUT was built for another architecture: layer(s) {', '.join(missing[:3])} "
                "are missing from this model; build a LUT for it with LatencyLUT.build"
            )
        return chans

    def predict_layers_us(self, arch: Arch) -> dict[str, float]:
        """Predicted latency of each conv/linear layer (us), channel counts read from ``arch``.

        Args:
            arch: A model of the same architecture (pruned or not), or ``{layer name:
                (in, out)}`` as :func:`layer_channels` returns.
        """
        chans = self._channels(arch)
        m = self.multiple
        return {
            name: spec.calls * self._tables_by_layer[name].predict_us(*chans[name], m)
            for name, spec in self.layers.items()
        }

    def predict_raw_ms(self, arch: Arch) -> float:
        """Uncalibrated prediction: per-layer sum plus one call's overhead, in ms."""
        chans = self._channels(arch)
        m, total_us = self.multiple, self.overhead_us
        for name, spec in self.layers.items():
            total_us += spec.calls * self._tables_by_layer[name].predict_us(*chans[name], m)
        return total_us / 1000.0

    def predict_ms(self, arch: Arch) -> float:
        """Predicted latency in ms: ``scale * predict_raw_ms + offset_ms``, kept positive.

        The fit keeps ``offset_ms >= 0`` (see :func:`_fit`); the floor at a tenth of the
        scaled sum guards predictions of LUTs saved before that rule.
        """
        scaled = self.scale * self.predict_raw_ms(arch)
        return max(scaled + self.offset_ms, 0.1 * scaled)

    # ---- calibration -----------------------------------------------------------------------
    def calibrate(self, measured: Sequence[tuple[Arch, float]]) -> LatencyLUT:
        """A copy fitted to real measurements: ``measured_ms ~ scale * raw + offset``.

        Least squares on two or more points; one point, points whose predictions lie within
        10% of each other, or a fit with a negative slope or offset go through the origin
        (``offset`` 0), so no smaller model is ever predicted at or below 0 ms. ``self`` is
        unchanged.

        Args:
            measured: (model or channel dict, measured p50 in ms) pairs, e.g. from the
                latency oracle on the candidates the search kept.
        """
        if not measured:
            raise ValueError("calibrate needs at least one (architecture, p50_ms) pair")
        pairs = [(self.predict_raw_ms(a), float(ms)) for a, ms in measured]
        scale, offset = _fit(pairs)
        return dataclasses.replace(self, scale=scale, offset_ms=offset, calibration=pairs)

    def calibrate_one(self, arch: Arch, p50_ms: float) -> None:
        """Add one measurement to this LUT's calibration and refit it, in place."""
        self.calibration.append((self.predict_raw_ms(arch), float(p50_ms)))
        self.scale, self.offset_ms = _fit(self.calibration)

    def prediction_error(self, samples: Sequence[tuple[Arch, float]]) -> dict[str, float]:
        """MAPE, worst absolute % error and mean signed % error of predictions vs measured ms."""
        errs = [100.0 * (self.predict_ms(a) - ms) / ms for a, ms in samples]
        if not errs:
            nan = math.nan
            return {"median_abs_pct": nan, "mape": nan, "max_abs_pct": nan, "mean_pct": nan, "n": 0}
        return {
            "median_abs_pct": float(np.median(np.abs(errs))),
            "mape": float(np.mean(np.abs(errs))),
            "max_abs_pct": float(np.max(np.abs(errs))),
            "mean_pct": float(np.mean(errs)),
            "n": len(errs),
        }

    # ---- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": LUT_VERSION,
            "profile": self.profile,
            "fingerprint": self.fingerprint,
            "multiple": self.multiple,
            "overhead_us": self.overhead_us,
            "scale": self.scale,
            "offset_ms": self.offset_ms,
            "calibration": [list(p) for p in self.calibration],
            "build_s": self.build_s,
            "points_measured": self.points_measured,
            "curve": self.curve.to_dict() if self.curve else None,
            "align": self.align,
            "self_check": self.self_check,
            "layers": [s.to_dict() for s in self.layers.values()],
            "tables": {k: t.to_dict() for k, t in self.tables.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyLUT:
        if d.get("version") != LUT_VERSION:
            raise ModelError(
                f"LUT file version {d.get('version')} is not {LUT_VERSION}; rebuild the LUT"
            )
        layers = [LayerSpec.from_dict(s) for s in d["layers"]]
        return cls(
            profile=d["profile"],
            fingerprint=d["fingerprint"],
            multiple=int(d["multiple"]),
            layers={s.name: s for s in layers},
            tables={k: LayerTable.from_dict(t) for k, t in d["tables"].items()},
            overhead_us=float(d["overhead_us"]),
            scale=float(d["scale"]),
            offset_ms=float(d["offset_ms"]),
            curve=StaircaseCurve.from_dict(d["curve"]) if d.get("curve") else None,
            align=int(d.get("align", ALIGN)),
            build_s=float(d.get("build_s", 0.0)),
            points_measured=int(d.get("points_measured", 0)),
            calibration=[(float(x), float(y)) for x, y in d.get("calibration", [])],
            self_check=d.get("self_check"),
        )

    def save(self, path: Path) -> None:
        """Write the LUT (tables included) as JSON, atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> LatencyLUT:
        """Read a LUT written by :meth:`save`."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise ModelError(f"cannot read LUT {path}: {exc}; rebuild it") from exc

    # ---- building ----------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        model: nn.Module,
        profile: DeviceProfile,
        *,
        cache_dir: Path | None = None,
        channel_multiple: int | None = None,
        max_points_per_axis: int = 8,
        passes: int = 2,
        discovery_c_max: int = 64,
        measurer: PointMeasurer | None = None,
        progress: bool | Callable[[str], None] = False,
    ) -> LatencyLUT:
        """Measure (or load from the disk cache) every table ``model`` needs on ``profile``.

        Args:
            model: The base (unpruned) model; its widths bound the grids.
            profile: Where to measure; its batch and input shape define the layer inputs.
            cache_dir: Root of the LUT cache (``<cache_dir>/<fingerprint>/``); default
                ``$EDGEPRUNE_CACHE/lut`` or ``~/.cache/edgeprune/lut``.
            channel_multiple: Use this multiple instead of discovering it.
            max_points_per_axis: Coarsen the grid step beyond this many multiples per axis.
            passes: Timing passes per point (the minimum of the medians is kept).
            discovery_c_max: Largest channel count of the discovery probe.
            measurer: Reuse a measurer (and its loop settings).
            progress: Called with a short message per table (``True``: printed).

        Raises:
            ModelError: The model rejects the profile's input or has unsupported layers.
            TargetUnavailableError: The profile's runtime is not usable here.
        """
        start = time.perf_counter()
        fp = profile_fingerprint(profile)
        root = (Path(cache_dir) if cache_dir else default_cache_dir() / "lut") / fp
        specs = enumerate_layers(model, profile.full_input_shape)
        meas = measurer or PointMeasurer(profile)
        before = meas.points_measured
        multiple, curve, overhead_us, align = _profile_facts(
            root, profile, meas, channel_multiple, passes, discovery_c_max
        )
        by_cfg: dict[str, list[LayerSpec]] = defaultdict(list)
        for s in specs:
            by_cfg[s.config.key()].append(s)
        tables: dict[str, LayerTable] = {}
        checks: list[dict[str, Any]] = []
        for n_table, (key, group) in enumerate(by_cfg.items(), 1):
            t_table, n_before = time.perf_counter(), meas.points_measured
            cfg = group[0].config
            step = multiple * cfg.channel_step // math.gcd(multiple, cfg.channel_step)
            cstep = cfg.channel_step
            axis_in = grid_axis([s.in_channels for s in group], step, max_points_per_axis, cstep)
            axis_out = grid_axis([s.out_channels for s in group], step, max_points_per_axis, cstep)
            if cfg.groups_mode == "depthwise":
                axis_out = axis_in
            slow_pts = _slow_points(cfg, axis_in, axis_out, align)
            held = held_out_points(cfg, axis_in, axis_out, key, align)
            raw = _measured_points(
                root / f"{key}.json", cfg, axis_in, axis_out, meas, passes,
                extra=[*slow_pts, *held],
            )  # fmt: skip
            grid = tuple(
                tuple(max(raw.get((ci, co), 0.0) - overhead_us, 0.0) for co in axis_out)
                for ci in axis_in
            )
            if cfg.groups_mode == "depthwise":
                diag = {c: max(raw[(c, c * cfg.depth_mult)] - overhead_us, 0.0) for c in axis_in}
                grid = tuple(tuple(diag[ci] for _ in axis_out) for ci in axis_in)
            slow = _fit_slow(
                [(ci, co, max(raw[(ci, co)] - overhead_us, 0.0)) for ci, co in slow_pts]
            )
            tables[key] = LayerTable(cfg, axis_in, axis_out, grid, slow, align)
            for ci, co in held:
                checks.append(
                    {
                        "layer": cfg.describe(),
                        "c_in": ci,
                        "c_out": co,
                        "measured_us": max(raw[(ci, co)] - overhead_us, 0.0),
                        "predicted_us": tables[key].predict_us(ci, co, multiple),
                    }
                )
            if progress:
                done = meas.points_measured - n_before
                how = f"{done} points measured" if done else "from the cache"
                (print if progress is True else progress)(
                    f"latency table {n_table}/{len(by_cfg)}: {cfg.describe()} "
                    f"({len(group)} layer{'s' * (len(group) > 1)}): {how}, "
                    f"{time.perf_counter() - t_table:.1f} s"
                )
        return cls(
            profile=profile.name,
            fingerprint=fp,
            multiple=multiple,
            layers={s.name: s for s in specs},
            tables=tables,
            overhead_us=overhead_us,
            curve=curve,
            align=align,
            build_s=time.perf_counter() - start,
            points_measured=meas.points_measured - before,
            self_check=_record_self_check(root, self_check(checks, overhead_us), model),
        )


#: Held-out points measured per table by the build, to check the table on this host.
HELD_OUT_PER_TABLE = 2
#: A self-check worse than these (median, max absolute % error) is warned about.
SELF_CHECK_WARN_PCT = (5.0, 15.0)


def held_out_points(
    cfg: LayerConfig,
    axis_in: tuple[int, ...],
    axis_out: tuple[int, ...],
    key: str,
    align: int = ALIGN,
) -> list[tuple[int, int]]:
    """Channel counts the table did not measure, to check it against: one on the channel
    multiple's staircase and one off it (the slow path) where the axes leave room, drawn
    with a generator seeded by the table's key (the same points on every build)."""
    rng = np.random.default_rng(int(key[:8], 16))
    step = cfg.channel_step

    def pick(axis: tuple[int, ...], aligned: bool) -> int | None:
        top = axis[-1]
        pool = [
            c for c in range(step, top + 1, step)
            if c not in axis and (c % align == 0) == aligned
        ]  # fmt: skip
        return int(rng.choice(pool)) if pool else None

    out: list[tuple[int, int]] = []
    for aligned in (True, False)[:HELD_OUT_PER_TABLE]:
        ci = pick(axis_in, aligned) if len(axis_in) > 1 else axis_in[0]
        if ci is None:
            continue
        if cfg.groups_mode == "depthwise":
            out.append((ci, ci * cfg.depth_mult))
            continue
        co = pick(axis_out, aligned) if len(axis_out) > 1 else axis_out[0]
        if co is not None and (ci, co) not in out:
            out.append((ci, co))
    return out


def self_check(checks: Sequence[Mapping[str, Any]], overhead_us: float) -> dict[str, Any]:
    """The table's error on this host: held-out points, each predicted by its table and
    measured in the same build, as % of the point's latency (the call overhead included,
    as a model's layers pay it)."""
    errs = [
        100.0
        * abs(c["predicted_us"] - c["measured_us"])
        / max(c["measured_us"] + overhead_us, 1e-9)
        for c in checks
    ]
    if not errs:
        return {"n": 0, "median_abs_pct": None, "max_abs_pct": None, "warning": None,
                "points": []}  # fmt: skip
    med, worst = float(np.median(errs)), float(np.max(errs))
    warn_med, warn_max = SELF_CHECK_WARN_PCT
    warning = None
    if med > warn_med or worst > warn_max:
        warning = (
            f"the latency table predicts held-out layer sizes on this host with a median "
            f"error of {med:.1f}% and a worst of {worst:.1f}% (over {warn_med:g}% / "
            f"{warn_max:g}%): its predictions steer the search less surely here; the landings "
            "are measured all the same"
        )
    return {
        "n": len(errs),
        "median_abs_pct": med,
        "max_abs_pct": worst,
        "warning": warning,
        "points": [{**c, "abs_pct": e} for c, e in zip(checks, errs, strict=True)],
    }


def _record_self_check(root: Path, check: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """Keep the last build's self-check beside the profile's facts (``profiles show``)."""
    path = root / "profile.json"
    facts = _read_json(path)
    if facts is not None:
        summary = {k: check[k] for k in ("n", "median_abs_pct", "max_abs_pct")}
        facts["self_check"] = {**summary, "model": type(model).__name__}
        atomic_write_json(path, facts)
    return check


def host_self_check(profile: DeviceProfile, cache_dir: Path | None = None) -> dict[str, Any] | None:
    """The last latency-table self-check on this host for ``profile`` (None: no build yet)."""
    root = (Path(cache_dir) if cache_dir else default_cache_dir() / "lut") / profile_fingerprint(
        profile
    )
    facts = _read_json(root / "profile.json")
    return None if facts is None else facts.get("self_check")


def _fit(pairs: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(scale, offset >= 0) of ``measured ~ scale * raw + offset``.

    A negative offset once predicted <= 0 ms for small models (-0.061 ms in
    ``bench/results/lut_resnet20.md``) and crashed a run: such fits, and single points, go
    through the origin instead (see :func:`fit_positive`).
    """
    return fit_positive(pairs)


def fit_positive(
    pairs: Sequence[tuple[float, float]], prior_scale: float = 1.0
) -> tuple[float, float]:
    """``(scale, offset >= 0)`` of ``y ~ scale * x + offset``.

    One point (or points within 10% of each other): keep the slope ratio ``y / x`` and no
    offset, which stays positive for every smaller model. Least squares otherwise; a
    negative offset or slope falls back to the line through the origin.
    """
    x = np.array([p[0] for p in pairs], dtype=np.float64)
    y = np.array([p[1] for p in pairs], dtype=np.float64)
    if len(x) == 0 or not np.all(x > 0):
        return prior_scale, 0.0
    through_origin = float(np.dot(x, y) / np.dot(x, x))
    if len(x) >= 2 and np.ptp(x) > 0.1 * float(np.mean(x)):
        a, b = np.polyfit(x, y, 1)
        if a > 0 and b >= 0:
            return float(a), float(b)
    return through_origin, 0.0


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # missing or cut short by a crash: measure again
    return data if isinstance(data, dict) and data.get("version") == LUT_VERSION else None


def _profile_facts(
    root: Path,
    profile: DeviceProfile,
    meas: PointMeasurer,
    channel_multiple: int | None,
    passes: int,
    c_max: int,
) -> tuple[int, StaircaseCurve | None, float, int]:
    """(multiple, discovery curve, per-call overhead us, fast-path alignment), from
    ``profile.json`` or measured. The alignment is read off this host's curve (also when
    the multiple was given and a curve was measured before), :data:`ALIGN` without one."""
    path = root / "profile.json"
    facts = _read_json(path) or {"version": LUT_VERSION, "profile": profile.name}
    if "overhead_us" not in facts:
        batch = profile.batch
        [facts["overhead_us"]] = meas.min_of_passes([(overhead_onnx(batch), (batch, 1, 1, 1))], 3)
    curve = StaircaseCurve.from_dict(facts["curve"]) if facts.get("curve") else None
    if channel_multiple is None and (curve is None or len(curve.channels) != c_max):
        _, curve = discover_channel_multiple(profile, c_max=c_max, passes=passes, measurer=meas)
        facts["curve"] = curve.to_dict()
    atomic_write_json(path, facts)
    multiple = channel_multiple or (curve.multiple if curve else 1)
    seen = curve.align if curve else None
    align = seen if seen is not None else ALIGN
    used = curve if channel_multiple is None else None
    return multiple, used, float(facts["overhead_us"]), align


def _measured_points(
    path: Path,
    cfg: LayerConfig,
    axis_in: tuple[int, ...],
    axis_out: tuple[int, ...],
    meas: PointMeasurer,
    passes: int,
    extra: Sequence[tuple[int, int]] = (),
) -> dict[tuple[int, int], float]:
    """Raw per-point medians (us) for the grid (and ``extra`` points): cached ones read,
    missing ones measured."""
    data = _read_json(path) or {"version": LUT_VERSION, "config": cfg.to_dict(), "points_us": {}}
    points: dict[tuple[int, int], float] = {}
    for k, v in data["points_us"].items():
        ci, co = k.split(",")
        points[(int(ci), int(co))] = float(v)
    wanted = [*_grid_points(cfg, axis_in, axis_out), *extra]
    todo = [p for p in dict.fromkeys(wanted) if p not in points]
    if todo:
        items = [(layer_onnx(cfg, ci, co), point_shape(cfg, ci)) for ci, co in todo]
        for p, us in zip(todo, meas.min_of_passes(items, passes), strict=True):
            points[p] = us
        data["points_us"] = {f"{ci},{co}": us for (ci, co), us in sorted(points.items())}
        atomic_write_json(path, data)
    return points
