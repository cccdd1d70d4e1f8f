"""TensorRT target: cache keys, build plans, messages and metrics here; build+run on a GPU.

Tests marked ``tensorrt`` build and time real engines and skip (with the reason) where
TensorRT or a GPU is missing; ``gpu`` tests exercise the CUDA-event timing through torch.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

import edgeprune.targets.tensorrt as trt_target
import edgeprune.targets.tensorrt_build as trt_build
import edgeprune.targets.tensorrt_run as trt_run
from edgeprune.errors import ProfileError, TargetUnavailableError
from edgeprune.models.testing import TinyConvNet
from edgeprune.pipeline.export import export_onnx
from edgeprune.profiles import DeviceProfile, MeasurementSettings, load_profile
from edgeprune.targets import LatencyStats, get_target
from edgeprune.targets.tensorrt import (
    TrtTarget,
    engine_cache_key,
    parse_nvpmodel_query,
    profile_problem,
    trt_version_problem,
)
from edgeprune.targets.tensorrt_build import (
    ParserErrorInfo,
    build_plan,
    engine_settings,
    format_parser_errors,
    timing_cache_path,
)
from edgeprune.targets.tensorrt_run import TrtMeasurement, summarize_metrics

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
FAST = MeasurementSettings(warmup_iters=5, warmup_ms=20, min_iters=30, min_duration_ms=100)
SHA = "ab" * 32


def _with_trt(profile: DeviceProfile, **changes: object) -> DeviceProfile:
    assert profile.tensorrt is not None
    return profile.model_copy(update={"tensorrt": profile.tensorrt.model_copy(update=changes)})


# --- availability and messages ------------------------------------------------------------


def test_registered_by_name() -> None:
    assert isinstance(get_target("tensorrt"), TrtTarget)


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_missing_tensorrt_is_one_clear_line(tmp_path: Path) -> None:
    ok, reason = TrtTarget().available()
    assert not ok
    assert "tensorrt Python package is not installed" in reason and "\n" not in reason
    assert "JetPack 6" in reason and "pip install tensorrt" in reason
    onnx_path = tmp_path / "m.onnx"  # availability is checked before the file
    with pytest.raises(TargetUnavailableError) as exc:
        TrtTarget().prepare(onnx_path, load_profile("jetson-orin-nano-trt-fp16"))
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("profile 'jetson-orin-nano-trt-fp16' needs tensorrt: ")


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("8.5.2.2", "TensorRT 8.5 found (JetPack 5): edgeprune needs TensorRT >= 10 (JetPack 6)"),
        ("7.1.3", "TensorRT 7.1 found (JetPack 4): edgeprune needs TensorRT >= 10 (JetPack 6)"),
        ("9.3.0", "TensorRT 9.3 found: edgeprune needs TensorRT >= 10 (JetPack 6)"),
        ("10.3.0.30", None),
        ("10.15.1", None),
        ("11.0.0", None),
    ],
)
def test_version_gate(version: str, expected: str | None) -> None:
    assert trt_version_problem(version) == expected


def test_profile_problems() -> None:
    xavier = profile_problem(load_profile("jetson-xavier-nx-trt-fp16"))
    assert xavier is not None
    assert "JetPack 5.1 with TensorRT 8.5" in xavier and "needs TensorRT >= 10" in xavier
    assert profile_problem(load_profile("jetson-orin-nano-trt-fp16")) is None
    dla32 = load_profile("jetson-agx-orin-dla-trt-fp16").model_copy(update={"precision": "fp32"})
    assert "DLA runs fp16 or int8 only" in (profile_problem(dla32) or "")
    assert "not tensorrt" in (profile_problem(load_profile("cpu-ort-1t")) or "")
    old = _with_trt(load_profile("x86-gpu-trt-fp16"), min_tensorrt_version="8.5")
    assert "min_tensorrt_version" in (profile_problem(old) or "")
    with pytest.raises(ProfileError, match=r"TensorRT 8\.5"):
        TrtTarget().prepare(Path("unused.onnx"), load_profile("jetson-xavier-nx-trt-fp16"))


def test_parse_nvpmodel_query() -> None:
    assert parse_nvpmodel_query("NV Power Mode: MAXN\n0\n") == ("MAXN", 0)
    assert parse_nvpmodel_query("NV Power Mode: 15W\n0\n") == ("15W", 0)
    assert parse_nvpmodel_query("nvpmodel: command not found") == (None, None)


# --- engine cache -------------------------------------------------------------------------


def test_engine_cache_key_tracks_what_changes_the_engine() -> None:
    base = load_profile("jetson-orin-nano-trt-fp16")
    key = engine_cache_key(SHA, base, "10.3.0.30", "Orin")
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert key == engine_cache_key(
        SHA, load_profile("jetson-orin-nano-trt-fp16"), "10.3.0.30", "Orin"
    )
    changed = {
        "onnx": engine_cache_key("cd" * 32, base, "10.3.0.30", "Orin"),
        "trt": engine_cache_key(SHA, base, "10.3.0.31", "Orin"),
        "gpu": engine_cache_key(SHA, base, "10.3.0.30", "NVIDIA H100"),
        "precision": engine_cache_key(
            SHA, base.model_copy(update={"precision": "int8"}), "10.3.0.30", "Orin"
        ),
        "batch": engine_cache_key(SHA, base.model_copy(update={"batch": 8}), "10.3.0.30", "Orin"),
        "shape": engine_cache_key(
            SHA, base.model_copy(update={"input_shape": (3, 64, 64)}), "10.3.0.30", "Orin"
        ),
        "workspace": engine_cache_key(SHA, _with_trt(base, workspace_mb=512), "10.3.0.30", "Orin"),
        "level": engine_cache_key(
            SHA, _with_trt(base, builder_optimization_level=5), "10.3.0.30", "Orin"
        ),
        "dla": engine_cache_key(SHA, _with_trt(base, dla_core=1), "10.3.0.30", "Orin"),
    }
    assert key not in changed.values()
    assert len(set(changed.values())) == len(changed)
    # Runtime-only settings and documentation must not force a rebuild.
    same = [
        _with_trt(base, cuda_graph=True, data_transfers=False, spin_wait=True),
        _with_trt(base, timing_cache=False, jetpack="6.1"),
        base.model_copy(update={"description": "other words", "measurement": FAST}),
    ]
    assert {engine_cache_key(SHA, p, "10.3.0.30", "Orin") for p in same} == {key}
    assert engine_settings(base)["gpu_fallback"] is None  # only meaningful with a DLA core


def test_cache_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path))
    assert trt_build.engine_cache_dir() == tmp_path / "engines"
    a = timing_cache_path("10.3.0.30", "Orin")
    assert a.parent == tmp_path / "engines" / "timing"
    assert a.name == "10.3.0.30__Orin.cache"
    assert timing_cache_path("10.3.0.30", "NVIDIA GeForce RTX 4090") != a
    assert timing_cache_path("10.4.0", "Orin") != a
    assert timing_cache_path("10.3.0.30", "Orin", tmp_path / "x").is_relative_to(tmp_path / "x")


# --- build plan and errors ----------------------------------------------------------------


def test_build_plans_per_tensorrt_generation() -> None:
    v10 = {p: build_plan(p, has_precision_flags=True) for p in ("fp32", "fp16", "int8")}
    assert v10["fp32"].builder_flags == ()
    assert v10["fp16"].builder_flags == ("FP16",)
    assert v10["int8"].builder_flags == ("INT8", "FP16")
    assert all(p.network_flags == () and not p.fp16_onnx for p in v10.values())
    v11 = {p: build_plan(p, has_precision_flags=False) for p in ("fp32", "fp16", "int8")}
    assert all(
        p.builder_flags == () and p.network_flags == ("STRONGLY_TYPED",) for p in v11.values()
    )
    assert v11["fp16"].fp16_onnx and not v11["int8"].fp16_onnx
    with pytest.raises(ValueError):
        build_plan("bf16", True)


def test_parser_errors_become_one_message() -> None:
    errors = [
        ParserErrorInfo("UNSUPPORTED_NODE", "No importer registered for op: Det", 3, "det", "Det"),
        ParserErrorInfo("INVALID_GRAPH", "graph has no outputs"),
    ]
    msg = format_parser_errors("model.onnx", errors)
    assert "\n" not in msg
    assert msg.startswith("TensorRT's ONNX parser rejected model.onnx with 2 error(s): ")
    assert "node 3 'det' (Det): No importer registered for op: Det [UNSUPPORTED_NODE]" in msg
    assert "graph: graph has no outputs [INVALID_GRAPH]" in msg
    assert issubclass(trt_build.TensorRTBuildError, trt_target.OnnxModelError)


def _attribute_names(module: object) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))  # type: ignore[attr-defined]
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    return names | {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def test_no_api_removed_in_tensorrt_10_or_11() -> None:
    used = set().union(*(_attribute_names(m) for m in (trt_target, trt_build, trt_run)))
    removed = {
        "execute_async_v2", "execute_v2", "execute_async", "build_engine_with_config",
        "max_workspace_size", "get_binding_index", "get_binding_shape", "num_bindings",
        "binding_is_input", "set_binding_shape", "EXPLICIT_BATCH", "int8_calibrator",
        "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "IInt8Calibrator",
        "platform_has_fast_fp16", "device_memory_size",
    }  # fmt: skip
    assert not used & removed, used & removed
    assert {"execute_async_v3", "set_tensor_address", "build_serialized_network"} <= used
    assert {"set_memory_pool_limit", "create_timing_cache", "builder_optimization_level"} <= used
    # The builder's build_engine() is gone in 10; our own build_engine is a plain function.
    src = Path(trt_build.__file__).read_text(encoding="utf-8")
    assert "builder.build_engine" not in src


# --- metrics ------------------------------------------------------------------------------


def _stats(name: str, times: list[float]) -> LatencyStats:
    return LatencyStats.from_times(times, metric=name)


def test_trtexec_metrics_summary() -> None:
    stats = {
        "Latency": _stats("Latency", [1.0, 1.1, 1.2, 1.0]),
        "GPU Compute Time": _stats("GPU Compute Time", [0.5, 0.5, 0.5, 0.5]),
        "H2D Latency": _stats("H2D Latency", [0.1] * 4),
    }
    out = summarize_metrics(stats, throughput_qps=900.0, batch=4)
    assert out["Throughput"] == {"qps": 900.0, "images_per_s": 3600.0}
    assert out["GPU Compute Time"]["median_ms"] == 0.5
    assert {"p90_ms", "p95_ms", "p99_ms", "cov", "count"} <= set(out["Latency"])
    assert "warnings" not in out
    noisy = {"GPU Compute Time": _stats("GPU Compute Time", [0.5, 0.6, 0.5, 0.7])}
    assert "CoV" in summarize_metrics(noisy, 1.0, 1)["warnings"][0]

    m = TrtMeasurement(stats, 900.0, 4, {"cuda_graph": False, "data_transfers": True})
    lat = m.latency
    assert lat.metric == "Latency" and lat.times_ms == stats["Latency"].times_ms
    assert lat.settings["cuda_graph"] is False
    assert lat.settings["metrics"]["GPU Compute Time"]["count"] == 4
    assert m.images_per_s == 3600.0


# --- on a GPU with TensorRT ---------------------------------------------------------------


@pytest.fixture()
def tiny_onnx(tmp_path: Path) -> Path:
    profile = load_profile("x86-gpu-trt-fp16")
    return export_onnx(TinyConvNet(10).eval(), profile, tmp_path / "tiny.onnx").path


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_run_and_time(
    tiny_onnx: Path, tmp_path: Path, precision: str
) -> None:  # pragma: no cover - needs TensorRT
    import onnxruntime as ort

    profile = load_profile("x86-gpu-trt-fp16").model_copy(update={"precision": precision})
    target = TrtTarget(cache_dir=tmp_path / "cache")
    prepared = target.prepare(tiny_onnx, profile)
    try:
        assert not prepared.build.cache_hit and prepared.build.path.is_file()
        assert prepared.build.timing_cache is not None and prepared.build.timing_cache.is_file()
        x = np.random.default_rng(0).standard_normal(prepared.input_shape).astype(np.float32)
        ref = ort.InferenceSession(str(tiny_onnx)).run(None, {"input": x})[0]
        atol = 1e-3 if precision == "fp32" else 3e-2
        np.testing.assert_allclose(prepared.run(x), ref, atol=atol * max(1, np.abs(ref).max()))
        m = target.measure_all(prepared, None, FAST)
        assert {"Latency", "GPU Compute Time", "H2D Latency", "D2H Latency"} <= set(m.stats)
        assert m.stats["Latency"].count >= FAST.min_iters and m.throughput_qps > 0
        # Host-clock end-to-end latency covers the device-side compute.
        assert m.stats["Latency"].median_ms >= m.stats["GPU Compute Time"].median_ms
        lat = target.measure(prepared, None, FAST, warmup=False)
        assert lat.settings["metrics"]["Throughput"]["qps"] > 0
        assert lat.settings["tensorrt_version"] and lat.settings["data_transfers"] is True
    finally:
        prepared.close()
    again = target.prepare(tiny_onnx, profile)  # engine and timing cache reused
    assert again.build.cache_hit
    again.close()


@pytest.mark.tensorrt
def test_without_transfers_and_with_cuda_graph(
    tiny_onnx: Path, tmp_path: Path
) -> None:  # pragma: no cover
    profile = _with_trt(load_profile("x86-gpu-trt-fp16"), data_transfers=False, spin_wait=True)
    target = TrtTarget(cache_dir=tmp_path)
    prepared = target.prepare(tiny_onnx, profile)
    m = target.measure_all(prepared, None, FAST)
    assert "H2D Latency" not in m.stats and m.settings["spin_wait"] is True
    prepared.close()
    if trt_target._cuda_backend_name() == "torch":
        graph = _with_trt(profile, cuda_graph=True)
        prepared = target.prepare(tiny_onnx, graph)
        assert target.measure_all(prepared, None, FAST).settings["cuda_graph"] is True
        prepared.close()


@pytest.mark.tensorrt
def test_int8_profile_needs_qdq_model(tiny_onnx: Path, tmp_path: Path) -> None:  # pragma: no cover
    profile = load_profile("jetson-orin-nx-trt-int8")
    with pytest.raises(trt_target.OnnxModelError, match="no Q/DQ nodes"):
        TrtTarget(cache_dir=tmp_path).prepare(tiny_onnx, profile)


@pytest.mark.gpu
def test_cuda_event_timing_through_torch() -> None:  # pragma: no cover - needs CUDA
    import torch

    backend = trt_run.TorchCuda()
    buf = backend.alloc((1, 3, 32, 32), np.float32)
    buf.host[:] = 1.0
    ev = [backend.event(blocking=True) for _ in range(3)]
    with backend.active():
        backend.record(ev[0])
        backend.h2d(buf)
        backend.record(ev[1])
        torch.cuda.current_stream().synchronize()
        backend.record(ev[2])
        backend.wait(ev[2])
    assert backend.elapsed_ms(ev[0], ev[1]) >= 0.0
    assert float(buf.keep[1].sum()) == 3 * 32 * 32
    assert "NVIDIA" in backend.gpu_name() or backend.gpu_name()
