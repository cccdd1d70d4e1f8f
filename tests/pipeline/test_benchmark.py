"""Interleaved benchmark of two tiny ONNX models on a tiny-measurement profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from edgeprune.errors import OnnxModelError, TargetUnavailableError
from edgeprune.models.testing import TinyConvNet
from edgeprune.pipeline.benchmark import BENCHMARK_FILE, benchmark, render_table
from edgeprune.pipeline.export import export_onnx
from edgeprune.profiles import DeviceProfile, MeasurementSettings, load_profile
from edgeprune.targets.timing import block_settings

PROFILE_YAML = """\
name: tiny-bench
runtime: onnxruntime
input_shape: [3, 32, 32]
measurement:
  warmup_iters: 2
  warmup_ms: 0
  min_iters: 6
  min_duration_ms: 0
  blocks: 3
onnxruntime:
  intra_op_threads: 1
"""


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> DeviceProfile:
    path = tmp_path_factory.mktemp("prof") / "tiny-bench.yaml"
    path.write_text(PROFILE_YAML, encoding="utf-8")
    return load_profile(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, profile: DeviceProfile) -> list[Path]:
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    paths = []
    for width in (8, 16):
        out = root / f"tiny{width}.onnx"
        export_onnx(TinyConvNet(width=width), profile, out)
        paths.append(out)
    return paths


def test_benchmark_json_and_interleaving(
    tmp_path: Path, models: list[Path], profile: DeviceProfile
) -> None:
    result = benchmark(models, [profile], out_dir=tmp_path / "bench", progress=False)
    doc = json.loads((tmp_path / "bench" / BENCHMARK_FILE).read_text(encoding="utf-8"))
    assert doc == json.loads(json.dumps(result.to_dict()))
    assert doc["version"] == 1
    assert doc["created"].startswith("20")
    assert doc["host"]["cpu_model"] and doc["host"]["logical_cores"] >= 1
    entries = doc["entries"]
    assert [e["model"] for e in entries] == ["tiny8", "tiny16"]
    for e in entries:
        assert e["profile"] == "tiny-bench"
        assert e["onnx_path"] in {str(p) for p in models}
        assert len(e["onnx_sha256"]) == 64
        assert e["profile_settings"]["measurement"]["min_iters"] == 6
        lat = e["latency"]
        # 3 blocks of ceil(6 / 3) = 2 iterations each (duration minimum is 0): exactly 2.
        assert e["block_counts"] == [2, 2, 2]
        assert lat["count"] == sum(e["block_counts"]) == len(lat["times_ms"])
        assert lat["settings"]["blocks"] == 3
        assert lat["settings"]["interleaved_models"] == 2
        assert lat["settings"]["runtime"] == "onnxruntime"
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
    # The order rotates each round: tiny8 goes first, then second, then first again.
    assert entries[0]["block_positions"] == [0, 1, 0]
    assert entries[1]["block_positions"] == [1, 0, 1]
    assert entries[0]["speedup_vs_first"] == 1.0
    assert entries[1]["speedup_vs_first"] == pytest.approx(
        entries[0]["latency"]["p50_ms"] / entries[1]["latency"]["p50_ms"]
    )


def test_blocks_override_and_table(models: list[Path], profile: DeviceProfile) -> None:
    result = benchmark(models, [profile], blocks=2, progress=False)
    assert [len(e.block_counts) for e in result.entries] == [2, 2]
    assert all(e.latency.count == 6 for e in result.entries)  # 2 blocks x ceil(6/2)
    table = render_table(result)
    assert table.row_count == 2
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert "tiny8" in text and "tiny16" in text and "1.00x" in text


def test_same_file_twice_gets_distinct_names(
    tmp_path: Path, models: list[Path], profile: DeviceProfile
) -> None:
    other = tmp_path / "copy" / models[0].name
    other.parent.mkdir()
    other.write_bytes(models[0].read_bytes())
    result = benchmark([models[0], other], [profile], blocks=1, progress=False)
    names = [e.model for e in result.entries]
    assert len(set(names)) == 2
    assert result.entries[0].onnx_sha256 == result.entries[1].onnx_sha256


def test_block_settings_split_the_profile() -> None:
    s = MeasurementSettings(warmup_iters=10, min_iters=50, min_duration_ms=1000, max_iters=99)
    b = block_settings(s, 5)
    assert (b.min_iters, b.min_duration_ms, b.max_iters) == (10, 200.0, 20)
    assert (b.warmup_iters, b.warmup_ms) == (0, 0.0)
    assert block_settings(s, 100).min_iters == 1


def test_not_onnx_and_unavailable(
    tmp_path: Path, models: list[Path], profile: DeviceProfile
) -> None:
    bogus = tmp_path / "bogus.onnx"
    bogus.write_text("hello", encoding="utf-8")
    with pytest.raises(OnnxModelError, match=r"bogus\.onnx"):
        benchmark([models[0], bogus], [profile], progress=False)
    no_ep = profile.model_copy(
        update={
            "onnxruntime": profile.onnxruntime.model_copy(
                update={"execution_provider": "NoSuchExecutionProvider"}
            )
        }
    )
    with pytest.raises(TargetUnavailableError, match="tiny-bench"):
        benchmark(models, [no_ep], progress=False)
    with pytest.raises(ValueError):
        benchmark([], [profile], progress=False)
    assert not (tmp_path / BENCHMARK_FILE).exists()


def test_two_profiles(models: list[Path], profile: DeviceProfile) -> None:
    two_threads = profile.model_copy(
        update={
            "name": "tiny-bench-2t",
            "onnxruntime": profile.onnxruntime.model_copy(update={"intra_op_threads": 2}),
        }
    )
    result = benchmark(models, [profile, two_threads], blocks=1, progress=False)
    assert [(e.profile, e.model) for e in result.entries] == [
        ("tiny-bench", "tiny8"),
        ("tiny-bench", "tiny16"),
        ("tiny-bench-2t", "tiny8"),
        ("tiny-bench-2t", "tiny16"),
    ]
    assert result.entries[2].latency.settings["intra_op_threads"] == 2
    assert result.entries[2].speedup_vs_first == 1.0


def test_input_shape_comes_from_the_models(
    tmp_path: Path, models: list[Path], profile: DeviceProfile
) -> None:
    """A 96-px model is measured at 96 px on a 32-px profile; mixed sizes are refused."""
    big = profile.model_copy(update={"input_shape": (3, 96, 96)})
    path = tmp_path / "tiny96.onnx"
    export_onnx(TinyConvNet(width=8), big, path)
    result = benchmark([path], [profile], progress=False)
    [entry] = result.entries
    assert entry.latency.count > 0
    with pytest.raises(OnnxModelError, match=r"different input shapes .*\[1, 3, 96, 96\]"):
        benchmark([models[0], path], [profile], progress=False)
