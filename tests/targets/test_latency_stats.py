"""LatencyStats figures against hand-computed values, and the timing loop's stopping rules."""

from __future__ import annotations

import json
import math
import random
import time

import pytest

from edgeprune.profiles.schema import MeasurementSettings
from edgeprune.targets.base import LatencyStats, nearest_rank
from edgeprune.targets.timing import host_info, random_input, time_loop

# Expected values below were worked out by hand with the nearest-rank rule "the value at
# rank ceil(p/100 * n)" (what trtexec's formula gives for these sizes):
#   1..10:  p50 -> rank 5 -> 5;  p90 -> rank 9 -> 9;  p95 -> rank ceil(9.5)=10 -> 10;
#           p99 -> rank ceil(9.9)=10 -> 10
#   1..100: p50 -> 50, p90 -> 90, p95 -> 95, p99 -> 99
TEN = [float(v) for v in range(1, 11)]
HUNDRED = [float(v) for v in range(1, 101)]


def _shuffled(values: list[float]) -> list[float]:
    out = list(values)
    random.Random(0).shuffle(out)
    return out


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (TEN, {50: 5.0, 90: 9.0, 95: 10.0, 99: 10.0, 100: 10.0}),
        (HUNDRED, {50: 50.0, 90: 90.0, 95: 95.0, 99: 99.0, 100: 100.0}),
    ],
)
def test_percentiles_hand_computed(values: list[float], expected: dict[int, float]) -> None:
    stats = LatencyStats.from_times(_shuffled(values))
    assert stats.p50_ms == expected[50]
    assert stats.p90_ms == expected[90]
    assert stats.p95_ms == expected[95]
    assert stats.p99_ms == expected[99]
    assert stats.percentile(100) == expected[100]


def test_nearest_rank_small_samples() -> None:
    assert nearest_rank([7.0], 99) == 7.0
    # Two values: p50 -> rank 1, p51 -> rank ceil(1.02) = 2.
    assert nearest_rank([1.0, 2.0], 50) == 1.0
    assert nearest_rank([1.0, 2.0], 51) == 2.0
    # 1000 values, p99.9 -> rank 999.
    assert nearest_rank([float(v) for v in range(1, 1001)], 99.9) == 999.0
    with pytest.raises(ValueError):
        nearest_rank([], 50)


def test_moments_min_max_count() -> None:
    stats = LatencyStats.from_times(_shuffled(TEN))
    assert stats.count == 10
    assert stats.min_ms == 1.0
    assert stats.max_ms == 10.0
    assert stats.mean_ms == pytest.approx(5.5)
    # Population std of 1..10: sqrt((10^2 - 1) / 12) = sqrt(8.25).
    assert stats.std_ms == pytest.approx(math.sqrt(8.25))
    assert stats.cov == pytest.approx(math.sqrt(8.25) / 5.5)
    assert stats.median_ms == pytest.approx(5.5)  # the interpolated median, unlike p50 (5)
    one = LatencyStats.from_times([3.0])
    assert one.std_ms == 0.0
    assert one.cov == 0.0


def test_empty_times_rejected() -> None:
    with pytest.raises(ValueError):
        LatencyStats.from_times([])


def test_merged_keeps_all_times_and_first_settings() -> None:
    a = LatencyStats.from_times([1.0, 2.0], {"threads": 1})
    b = LatencyStats.from_times([3.0, 4.0, 5.0], {"threads": 99})
    m = a.merged(b)
    assert m.times_ms == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert m.count == 5
    assert dict(m.settings) == {"threads": 1}
    assert m.p50_ms == 3.0


def test_to_dict_from_dict_round_trip_through_json() -> None:
    stats = LatencyStats.from_times([0.5, 0.25, 1.5], {"runtime": "onnxruntime", "batch": 1})
    d = json.loads(json.dumps(stats.to_dict()))
    assert d["count"] == 3
    assert d["p50_ms"] == 0.5
    assert d["times_ms"] == [0.5, 0.25, 1.5]
    back = LatencyStats.from_dict(d)
    assert back == stats
    assert "times_ms" not in stats.summary()


# --- time_loop ------------------------------------------------------------------------


class _Counter:
    def __init__(self, sleep_s: float = 0.0) -> None:
        self.calls = 0
        self.sleep_s = sleep_s

    def __call__(self) -> None:
        self.calls += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)


def test_time_loop_stops_at_min_iters_when_duration_met() -> None:
    fn = _Counter()
    settings = MeasurementSettings(warmup_iters=4, warmup_ms=0, min_iters=7, min_duration_ms=0)
    times = time_loop(fn, settings)
    assert len(times) == 7
    assert fn.calls == 4 + 7
    assert all(t >= 0 for t in times)


def test_time_loop_runs_until_min_duration() -> None:
    fn = _Counter(sleep_s=0.002)
    settings = MeasurementSettings(warmup_iters=0, warmup_ms=0, min_iters=1, min_duration_ms=30)
    t0 = time.perf_counter()
    times = time_loop(fn, settings)
    assert time.perf_counter() - t0 >= 0.030
    # each time is fn's own (it sleeps >= 2 ms), and the loop stopped at the first call that
    # ended past 30 ms: the calls before it fit inside the 30 ms (however slow the host)
    assert all(t >= 2.0 for t in times)
    assert sum(times[:-1]) < 30
    assert len(times) >= 2
    assert min(times) >= 2.0  # each call sleeps 2 ms; the times are in ms


def test_time_loop_warmup_by_time_and_cap() -> None:
    fn = _Counter(sleep_s=0.001)
    settings = MeasurementSettings(
        warmup_iters=1, warmup_ms=20, min_iters=1, min_duration_ms=60_000, max_iters=3
    )
    times = time_loop(fn, settings)
    assert len(times) == 3  # max_iters wins over a 60 s minimum duration
    assert fn.calls - 3 >= 5  # warm-up lasted >= 20 ms of 1 ms calls, not just 1 call


def test_time_loop_without_warmup() -> None:
    fn = _Counter()
    settings = MeasurementSettings(warmup_iters=50, warmup_ms=0, min_iters=2, min_duration_ms=0)
    assert len(time_loop(fn, settings, warmup=False)) == 2
    assert fn.calls == 2


def test_random_input_is_seeded() -> None:
    a, b = random_input((1, 3, 4, 4), seed=3), random_input((1, 3, 4, 4), seed=3)
    assert a.dtype.name == "float32"
    assert a.shape == (1, 3, 4, 4)
    assert (a == b).all()
    assert not (a == random_input((1, 3, 4, 4), seed=4)).all()


def test_host_info_fields() -> None:
    info = host_info()
    assert info["cpu_model"] and not str(info["cpu_model"]).isdigit()
    assert info["logical_cores"] >= 1
    assert info["onnxruntime"] and info["numpy"]
    assert set(info) >= {"cpu_model", "logical_cores", "os", "python", "torch"}
    json.dumps(info)
