"""The per-layer latency LUT: staircase rule, build + disk cache, prediction, calibration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.errors import ModelError
from edgeprune.latency.lut import LatencyLUT, grid_axis, layer_channels
from edgeprune.latency.lut_measure import (
    discover_channel_multiple,
    enumerate_layers,
    infer_channel_multiple,
)
from edgeprune.latency.oracle import LatencyOracle
from edgeprune.models import create_model
from edgeprune.models.testing import TinyConvNet
from edgeprune.pipeline.export import export_onnx
from edgeprune.profiles import MeasurementSettings, load_profile

CHANNELS = np.arange(1, 65, dtype=float)
CURVES = {
    "period16": (lambda c: 3 + 10 * np.ceil(c / 16), 16),
    "period8": (lambda c: 3 + 5 * np.ceil(c / 8), 8),
    "period4": (lambda c: 3 + 2 * np.ceil(c / 4), 4),
    "linear": (lambda c: 5 + 1.5 * c, 1),
    "flat": (lambda c: 20 + 0 * c, 1),
}


@pytest.mark.parametrize("name", sorted(CURVES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_staircase_rule_on_synthetic_curves(name: str, seed: int) -> None:
    curve, expected = CURVES[name]
    noise = 1 + 0.015 * np.random.default_rng(seed).standard_normal(CHANNELS.size)
    multiple, scores = infer_channel_multiple(CHANNELS.astype(int), curve(CHANNELS) * noise)
    assert multiple == expected, scores


def test_staircase_rule_when_off_multiple_counts_are_slower() -> None:
    # ORT's shape: multiples of 4 on a ceil(C/16) staircase, other counts on a slower kernel.
    c = CHANNELS.astype(int)
    fast = 3 + 25 * np.ceil(CHANNELS / 16)
    lat = np.where(c % 4 == 0, fast, 2.2 * CHANNELS + 5)
    assert infer_channel_multiple(c, lat)[0] == 16


def test_grid_axis_holds_multiples_and_base_widths() -> None:
    assert grid_axis([3, 16], 16, 8) == (3, 4, 8, 16)
    assert grid_axis([64, 10], 16, 8) == (4, 8, 10, 16, 32, 48, 64)
    assert grid_axis([512], 16, 8) == (4, 8, *range(64, 513, 64))  # coarsened to 8 points
    assert grid_axis([64], 16, 8, channel_step=8) == (8, 16, 32, 48, 64)


@pytest.fixture(scope="module")
def profile():
    return load_profile("cpu-ort-1t").model_copy(
        update={
            "measurement": MeasurementSettings(
                warmup_iters=5, warmup_ms=20, min_iters=30, min_duration_ms=150, blocks=3
            )
        }
    )


@pytest.fixture(scope="module")
def tiny_lut(profile, tmp_path_factory):
    cache = tmp_path_factory.mktemp("lut")
    lut = LatencyLUT.build(TinyConvNet(width=32), profile, cache_dir=cache, channel_multiple=8)
    return lut, cache


def test_layers_found_with_input_sizes() -> None:
    specs = {s.name: s for s in enumerate_layers(TinyConvNet(width=16), (1, 3, 32, 32))}
    assert set(specs) == {"stem.0", "conv_a", "down.0", "fc"}
    assert specs["down.0"].config.in_hw == (32, 32)
    assert specs["down.0"].config.stride == (2, 2)
    # stem (3->16) and conv_a (16->16) share a configuration; the strided conv does not.
    assert specs["stem.0"].config == specs["conv_a"].config != specs["down.0"].config
    assert specs["fc"].config.kind == "linear"


def test_lut_predicts_narrower_models_faster_and_rounds_up(tiny_lut) -> None:
    lut, _ = tiny_lut
    assert lut.multiple == 8
    base, narrow = TinyConvNet(width=32), TinyConvNet(width=8)
    assert lut.predict_ms(narrow) < 0.6 * lut.predict_ms(base)
    # The staircase: 12 channels (a multiple of 4) are predicted as 16, the next multiple.
    at12, at16 = (
        lut.predict_layers_us(TinyConvNet(width=12)),
        lut.predict_layers_us(TinyConvNet(width=16)),
    )
    assert at12["stem.0"] == pytest.approx(at16["stem.0"])
    assert at12["conv_a"] == pytest.approx(at16["conv_a"])
    # Counts off the aligned grid (not multiples of 4) take the slow path's fit instead.
    slow = {t.slow is not None for t in lut.tables.values()}
    assert True in slow
    assert lut.predict_ms(TinyConvNet(width=13)) != lut.predict_ms(TinyConvNet(width=16))
    assert lut.predict_ms(layer_channels(base)) == lut.predict_ms(base)
    assert sum(lut.predict_layers_us(base).values()) + lut.overhead_us == pytest.approx(
        1000 * lut.predict_raw_ms(base)
    )


def test_lut_rejects_another_architecture(tiny_lut) -> None:
    with pytest.raises(ModelError, match="another architecture"):
        tiny_lut[0].predict_ms(create_model("resnet20"))


def test_lut_tracks_measurement_and_calibrates(tiny_lut, profile, tmp_path: Path) -> None:
    lut, _ = tiny_lut
    oracle = LatencyOracle(profile, None, workdir=tmp_path, export_fn=export_onnx)
    widths = (8, 16, 24, 32)
    measured = {w: oracle.measure(TinyConvNet(width=w)).median_ms for w in widths}
    base = TinyConvNet(width=32)
    # Uncalibrated: the per-layer sum lands within a loose factor of the whole model.
    assert 1 / 3 < lut.predict_ms(base) / measured[32] < 3
    # Fitted on the two ends, the middle widths are predicted within 2x (noisy machine).
    cal = lut.calibrate([(TinyConvNet(width=8), measured[8]), (base, measured[32])])
    assert cal.calibration_points == 2 and lut.scale == 1.0  # the original is unchanged
    for w in (16, 24):
        assert 0.5 < cal.predict_ms(TinyConvNet(width=w)) / measured[w] < 2
    err = cal.prediction_error([(TinyConvNet(width=w), measured[w]) for w in widths])
    assert err["n"] == 4 and err["mape"] < 50
    # One point: a scale through the origin (no offset, so smaller models stay positive),
    # exact at that point.
    one = lut.calibrate([(base, measured[32])])
    assert one.offset_ms == 0.0 and one.predict_ms(base) == pytest.approx(measured[32])
    assert one.predict_ms(TinyConvNet(width=8)) > 0
    # The search's form: measurements added one by one, in place, give the same fit.
    live = dataclasses.replace(lut, calibration=[])
    live.calibrate_one(TinyConvNet(width=8), measured[8])
    assert live.predict_ms(TinyConvNet(width=8)) == pytest.approx(measured[8])
    live.calibrate_one(base, measured[32])
    assert (live.scale, live.offset_ms) == pytest.approx((cal.scale, cal.offset_ms))
    assert lut.calibration_points == 0


def test_lut_disk_cache_is_reused_and_round_trips(tiny_lut, profile, tmp_path: Path) -> None:
    lut, cache = tiny_lut
    again = LatencyLUT.build(TinyConvNet(width=32), profile, cache_dir=cache, channel_multiple=8)
    assert again.points_measured == 0
    assert again.predict_ms(TinyConvNet(width=16)) == lut.predict_ms(TinyConvNet(width=16))
    # A wider base needs more grid points: only those are measured.
    wider = LatencyLUT.build(TinyConvNet(width=40), profile, cache_dir=cache, channel_multiple=8)
    assert 0 < wider.points_measured < lut.points_measured + 20
    cal = lut.calibrate([(TinyConvNet(width=8), 0.05), (TinyConvNet(width=32), 0.2)])
    cal.save(tmp_path / "lut.json")
    loaded = LatencyLUT.load(tmp_path / "lut.json")
    assert loaded.predict_ms(TinyConvNet(width=24)) == cal.predict_ms(TinyConvNet(width=24))
    assert loaded.calibration == cal.calibration and loaded.channel_multiple == 8


def test_discovery_measures_a_rising_curve(profile, tmp_path: Path) -> None:
    multiple, curve = discover_channel_multiple(profile, c_max=32, passes=1)
    assert curve.channels == tuple(range(1, 33))
    assert multiple == curve.multiple and multiple in (1, 2, 4, 8, 16)
    assert all(v > 0 for v in curve.latency_us)
    # A 32-channel conv costs more than a 1-channel one on any runtime.
    assert curve.latency_us[-1] > curve.latency_us[0]


def test_predict_needs_no_forward_pass_on_resnet56(profile, tmp_path: Path) -> None:
    """What makes prediction cheap enough for the search's inner loop: channel counts are
    read from the modules, no forward pass runs, no layer is measured (its speed is a
    benchmark's business, ``bench/bench_lut.py``, not a timed test's)."""
    model = create_model("resnet56")
    lut = LatencyLUT.build(
        model, profile, cache_dir=tmp_path, channel_multiple=32, max_points_per_axis=2, passes=1
    )
    assert len(lut.layers) == 1 + 27 * 2 + 2 + 1  # stem, 27 blocks, 2 shortcuts, fc
    calls: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda *_: calls.append("x")) for m in model.modules()]
    try:
        from_model = lut.predict_ms(model)
    finally:
        for h in hooks:
            h.remove()
    assert calls == []
    assert from_model == lut.predict_ms(layer_channels(model)) > 0


def test_negative_offset_never_predicts_zero_or_less(tiny_lut) -> None:
    """A LUT saved with a negative offset (bench/results/lut_resnet20.md once had -0.061 ms)
    still predicts a positive latency for the smallest model, and a refit drops it."""
    lut, _ = tiny_lut
    small = TinyConvNet(width=8)
    broken = dataclasses.replace(lut, scale=1.0, offset_ms=-10.0, calibration=[])
    assert broken.predict_ms(small) > 0
    # measurements whose least-squares line has a negative intercept: fitted through 0
    refit = lut.calibrate([(TinyConvNet(width=8), 0.01), (TinyConvNet(width=32), 0.4)])
    assert refit.offset_ms >= 0 and refit.predict_ms(small) > 0


def test_slow_counts_are_off_the_aligned_grid_and_inside_the_axis() -> None:
    from edgeprune.latency.lut import ALIGN, slow_counts

    assert slow_counts((3,), 1) == ()  # a fixed width (the image's channels)
    counts = slow_counts((4, 8, 16, 32, 48, 64), 1)
    assert counts and all(c % ALIGN and c < 64 for c in counts)
    assert slow_counts((4, 8, 16, 32), 2) == tuple(c for c in slow_counts((4, 8, 16, 32), 2))
    assert all(c % 2 == 0 and c % ALIGN for c in slow_counts((4, 8, 16, 32), 2))


@pytest.mark.parametrize("groups", [2, 3, 4, 8, 16])
def test_grouped_conv_grids_end_and_hold_only_valid_widths(groups: int) -> None:
    """Every grid and slow-path count of a grouped conv is a multiple of its group count,
    for group widths 4 to 24; a step that is a multiple of ALIGN (4, 8, 16 groups) has no
    slow path at all (it once sent the build into an endless loop)."""
    from edgeprune.latency.lut import ALIGN, slow_counts

    for width in range(4, 25):
        top = groups * width
        axis = grid_axis([top], groups, 8, groups)
        assert all(c % groups == 0 for c in axis) and axis[-1] == top
        slow = slow_counts(axis, groups)
        assert all(c % groups == 0 and c % ALIGN and c < top and c not in axis for c in slow)
        if groups % ALIGN == 0:
            assert slow == ()


class _Grouped(torch.nn.Module):
    """The issue's reproducers: 48 channels in 4 groups, 64 in 8, beside 3 groups."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 48, 3, padding=1)
        self.b = torch.nn.Conv2d(48, 48, 3, padding=1, groups=4)
        self.c = torch.nn.Conv2d(48, 64, 1)
        self.d = torch.nn.Conv2d(64, 64, 3, padding=1, groups=8)
        self.e = torch.nn.Conv2d(64, 48, 1)
        self.f = torch.nn.Conv2d(48, 48, 3, padding=1, groups=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(self.e(self.d(self.c(self.b(self.a(x))))))


def test_lut_build_on_grouped_convs_ends_and_predicts(profile, tmp_path: Path) -> None:
    lines: list[str] = []
    model = _Grouped()
    lut = LatencyLUT.build(
        model, profile, cache_dir=tmp_path, channel_multiple=8, max_points_per_axis=2,
        passes=1, progress=lines.append,
    )  # fmt: skip
    assert {t.config.groups for t in lut.tables.values()} >= {3, 4, 8}
    assert lut.predict_ms(model) > 0
    # progress names the layer type and the work, not a cache hash
    assert any("grouped(8)" in line and "points measured" in line for line in lines)
    assert not any(t in " ".join(lines) for t in lut.tables)


def test_the_build_checks_its_table_on_held_out_points(profile, tmp_path: Path) -> None:
    """Every build measures channel counts its grid left out (on the staircase and off it)
    and reports the table's error on this host from those measurements."""
    from edgeprune.latency.lut import held_out_points, host_self_check

    lut = LatencyLUT.build(
        TinyConvNet(width=32), profile, cache_dir=tmp_path, channel_multiple=8,
        max_points_per_axis=2, passes=1,
    )  # fmt: skip
    check = lut.self_check
    assert check is not None and check["n"] >= 2 and len(check["points"]) == check["n"]
    for point in check["points"]:
        table = next(t for t in lut.tables.values() if t.config.describe() == point["layer"])
        assert (point["c_in"], point["c_out"]) in held_out_points(
            table.config, table.axis_in, table.axis_out, table.config.key()
        )
        # held out: not a grid point of the table it checks
        assert not (point["c_in"] in table.axis_in and point["c_out"] in table.axis_out)
        assert point["measured_us"] >= 0 and point["predicted_us"] >= 0
    assert check["median_abs_pct"] <= check["max_abs_pct"]
    assert LatencyLUT.from_dict(lut.to_dict()).self_check == check
    assert host_self_check(profile, tmp_path)["n"] == check["n"]


def _with_slow_path(align: int, c: np.ndarray) -> np.ndarray:
    """A period-16 staircase whose counts off multiples of ``align`` take a linear path
    (cheaper low in a stair, dearer high in it: the AMD EPYC host's shape)."""
    stair = 3 + 10 * np.ceil(c / 16)
    slow = 1.0 + 0.35 * c
    return np.where(c % align == 0, stair, slow)


@pytest.mark.parametrize("align", [2, 4, 8])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_fast_path_alignment_is_read_off_the_curve(align: int, seed: int) -> None:
    from edgeprune.latency.lut_measure import infer_align

    noise = 1 + 0.02 * np.random.default_rng(seed).standard_normal(CHANNELS.size)
    lat = _with_slow_path(align, CHANNELS) * noise
    assert infer_align(CHANNELS.astype(int), lat, 16) == align
    stairs = (3 + 10 * np.ceil(CHANNELS / 16)) * noise  # every count padded: no slow path
    assert infer_align(CHANNELS.astype(int), stairs, 16) == 1
    assert infer_align(CHANNELS.astype(int), 5 + 1.5 * CHANNELS, 1) is None  # no staircase


def test_slow_counts_follow_the_alignment() -> None:
    from edgeprune.latency.lut import slow_counts

    axis = (8, 16, 32, 48, 64)
    assert all(c % 8 for c in slow_counts(axis, 1, 8)) and slow_counts(axis, 1, 8)
    assert slow_counts(axis, 1, 1) == ()  # every count on the fast path: nothing to time
    assert slow_counts(axis, 4, 4) == ()


def test_a_build_uses_the_alignment_this_hosts_curve_shows(profile, tmp_path: Path) -> None:
    lut = LatencyLUT.build(TinyConvNet(width=32), profile, cache_dir=tmp_path, passes=1,
                           max_points_per_axis=3)  # fmt: skip
    assert lut.curve is not None
    expected = lut.curve.align if lut.curve.align is not None else 4
    assert lut.align == expected and all(t.align == expected for t in lut.tables.values())
    again = LatencyLUT.from_dict(lut.to_dict())
    assert again.align == lut.align and again.tables.keys() == lut.tables.keys()
