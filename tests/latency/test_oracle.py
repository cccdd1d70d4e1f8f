"""The latency oracle: architecture signatures, cache hits across instances, interleaving."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch

from edgeprune.latency.oracle import LatencyOracle, arch_signature, profile_fingerprint
from edgeprune.models.testing import TinyConvNet
from edgeprune.pipeline.export import export_onnx
from edgeprune.profiles import MeasurementSettings, load_profile

FAST = MeasurementSettings(
    warmup_iters=2, warmup_ms=0, min_iters=8, min_duration_ms=2, max_iters=200, blocks=3
)


@pytest.fixture(scope="module")
def profile():
    return load_profile("cpu-ort-1t").model_copy(update={"measurement": FAST})


def _tiny(width: int, seed: int = 0) -> TinyConvNet:
    torch.manual_seed(seed)
    return TinyConvNet(width=width).eval()


def test_signature_ignores_weights_and_tracks_shapes() -> None:
    shape = (1, 3, 32, 32)
    a, b = _tiny(16, seed=0), _tiny(16, seed=1)
    assert not torch.equal(a.stem[0].weight, b.stem[0].weight)
    assert arch_signature(a, shape) == arch_signature(b, shape)
    assert arch_signature(a, shape) != arch_signature(_tiny(8), shape)
    assert arch_signature(a, shape) != arch_signature(a, (1, 3, 64, 64))
    # One changed channel count anywhere changes it.
    c = _tiny(16)
    c.fc = torch.nn.Linear(32, 5)
    assert arch_signature(a, shape) != arch_signature(c, shape)


def test_fingerprint_tracks_runtime_settings_not_loop_settings(profile) -> None:
    assert profile_fingerprint(profile) == profile_fingerprint(load_profile("cpu-ort-1t"))
    assert profile_fingerprint(profile) != profile_fingerprint(load_profile("cpu-ort-2t"))


def test_cache_hits_skip_export_and_survive_a_new_oracle(profile, tmp_path: Path) -> None:
    cache = tmp_path / "latency.jsonl"
    work = tmp_path / "work"
    oracle = LatencyOracle(profile, cache, workdir=work, export_fn=export_onnx)
    first = oracle.measure(_tiny(16, seed=0))
    assert (oracle.hits, oracle.misses) == (0, 1)
    assert len(list(work.glob("*.onnx"))) == 1

    # Same architecture, other weights: a hit, nothing exported or measured.
    again = oracle.measure(_tiny(16, seed=3))
    assert (oracle.hits, oracle.misses) == (1, 1)
    assert again.times_ms == first.times_ms
    assert len(list(work.glob("*.onnx"))) == 1

    narrow = oracle.measure(_tiny(4))
    assert (oracle.hits, oracle.misses) == (1, 2)
    assert len(list(work.glob("*.onnx"))) == 2
    assert narrow.count >= FAST.min_iters

    # A resumed run reads the cache file and exports nothing.
    work2 = tmp_path / "work2"
    resumed = LatencyOracle(profile, cache, workdir=work2, export_fn=export_onnx)
    assert len(resumed) == 2
    assert resumed.measure(_tiny(16, seed=7)).times_ms == first.times_ms
    assert (resumed.hits, resumed.misses) == (1, 0)
    assert not work2.exists() or not list(work2.glob("*.onnx"))

    # Another profile ignores those rows.
    other = load_profile("cpu-ort-2t").model_copy(update={"measurement": FAST})
    assert len(LatencyOracle(other, cache, workdir=work2, export_fn=export_onnx)) == 0


def test_cache_survives_a_torn_last_line(profile, tmp_path: Path) -> None:
    cache = tmp_path / "latency.jsonl"
    LatencyOracle(profile, cache, workdir=tmp_path, export_fn=export_onnx).measure(_tiny(8))
    with open(cache, "a", encoding="utf-8") as fh:
        fh.write('{"version": 1, "key": "abs|cut')  # a crash mid-append
    resumed = LatencyOracle(profile, cache, workdir=tmp_path, export_fn=export_onnx)
    resumed.measure(_tiny(8))
    assert (resumed.hits, resumed.misses) == (1, 0)


def test_measure_onnx_path_is_keyed_by_content(profile, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    export_onnx(_tiny(8), profile, path)
    oracle = LatencyOracle(profile, None, workdir=tmp_path, export_fn=export_onnx)
    stats = oracle.measure(path)
    assert stats.settings["intra_op_threads"] == 1
    oracle.measure(str(path))
    assert (oracle.hits, oracle.misses) == (1, 1)


def test_interleaved_ratio_sees_a_much_smaller_model(profile, tmp_path: Path) -> None:
    oracle = LatencyOracle(profile, tmp_path / "c.jsonl", workdir=tmp_path, export_fn=export_onnx)
    small, big = _tiny(4), _tiny(64)
    result = oracle.measure_vs_baseline(small, big, blocks=4)
    cand, base, ratio = result
    assert len(result.block_ratios) == 4
    assert cand.count >= 4 * 2 and base.count >= 4 * 2  # ceil(8 / 4) per block at least
    # 4 vs 64 channels is ~250x fewer conv FLOPs: measured ~0.05; the direction, with a
    # margin a loaded host cannot erase (both sides are hit alike, interleaved).
    assert 0 < ratio < 0.7
    assert ratio == pytest.approx(statistics.median(result.block_ratios))
    assert oracle.measure_vs_baseline(_tiny(4, seed=2), _tiny(64, seed=2), blocks=4).ratio == ratio
    assert oracle.hits == 1


def test_a_confirmation_combines_both_measurements_and_is_what_the_cache_keeps(
    profile, tmp_path: Path
) -> None:
    cache = tmp_path / "c.jsonl"
    oracle = LatencyOracle(profile, cache, workdir=tmp_path, export_fn=export_onnx)
    small, big = _tiny(4), _tiny(16)
    first = oracle.measure_vs_baseline(small, big, blocks=2)
    again = oracle.measure_vs_baseline(small, big, blocks=2, fresh=True)
    assert len(again.block_ratios) == 4 and again.block_ratios[:2] == first.block_ratios
    resumed = LatencyOracle(profile, cache, workdir=tmp_path, export_fn=export_onnx)
    assert resumed.measure_vs_baseline(small, big, blocks=2).ratio == again.ratio


def test_disturbed_block_pairs_are_retaken_within_a_bound_and_counted(
    profile, tmp_path: Path
) -> None:
    """Real ONNX Runtime blocks: at dispersion 1.0 every pair counts as disturbed (a block's
    median is never below its fastest iteration), so exactly ``max_retakes`` pairs are
    retaken and the rest are kept and counted; at a bar no block reaches, none is."""
    from edgeprune.latency.oracle import dispersion

    assert dispersion([1.0, 1.0, 1.0]) == 1.0 and dispersion([1.0, 2.0, 3.0]) == 2.0
    big, small = _tiny(64, seed=4), _tiny(4, seed=4)

    def oracle_with(**settings: float) -> LatencyOracle:
        m = profile.measurement.model_copy(update=settings)
        prof = profile.model_copy(update={"measurement": m})
        return LatencyOracle(prof, tmp_path / f"{settings}.jsonl", workdir=tmp_path / "w",
                             export_fn=export_onnx)  # fmt: skip

    strict = oracle_with(disturbed_dispersion=1.0, max_retakes=2)
    got = strict.measure_vs_baseline(small, big, blocks=3)
    assert got.contention["retaken"] == 2 and got.contention["disturbed_kept"] == 3
    assert len(got.block_ratios) == 3 and len(got.contention["load_1m"]) == 3
    again = strict.measure_vs_baseline(small, big, blocks=3, fresh=True)
    assert again.contention["retaken"] == 4 and again.contention["disturbed_kept"] == 6
    assert strict.measure_vs_baseline(small, big, blocks=3).contention == again.contention
    calm = oracle_with(disturbed_dispersion=1e6).measure_vs_baseline(small, big, blocks=3)
    assert calm.contention["retaken"] == 0 and calm.contention["disturbed_kept"] == 0
