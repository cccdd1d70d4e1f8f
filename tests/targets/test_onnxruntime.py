"""The onnxruntime target on a tiny exported model: real sessions, real timings."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.errors import OnnxModelError, TargetUnavailableError
from edgeprune.models.testing import TinyConvNet
from edgeprune.pipeline.export import export_onnx
from edgeprune.profiles import DeviceProfile, MeasurementSettings, load_profile
from edgeprune.targets.base import Target, get_target
from edgeprune.targets.onnxruntime import OrtPrepared, OrtTarget

TINY = MeasurementSettings(warmup_iters=2, warmup_ms=0, min_iters=5, min_duration_ms=0)


def _profile(**ort: object) -> DeviceProfile:
    base = load_profile("cpu-ort-1t")
    return base.model_copy(update={"onnxruntime": base.onnxruntime.model_copy(update=ort)})


@pytest.fixture(scope="module")
def tiny_model() -> TinyConvNet:
    torch.manual_seed(0)
    return TinyConvNet(width=8).eval()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_model: TinyConvNet) -> Path:
    path = tmp_path_factory.mktemp("ort") / "tiny.onnx"
    export_onnx(tiny_model, load_profile("cpu-ort-1t"), path)
    return path


@pytest.fixture()
def prepared(tiny_onnx: Path) -> Iterator[OrtPrepared]:
    p = OrtTarget().prepare(tiny_onnx, load_profile("cpu-ort-1t"))
    yield p
    p.close()


def test_registered_and_available() -> None:
    target = get_target("onnxruntime")
    assert isinstance(target, OrtTarget)
    assert isinstance(target, Target)
    assert target.available() == (True, "")
    assert target.available_for(load_profile("cpu-ort-2t")) == (True, "")


def test_measure_gives_sane_stats_with_settings(prepared: OrtPrepared) -> None:
    stats = OrtTarget().measure(prepared, None, TINY)
    assert stats.count == 5
    assert 0 < stats.min_ms <= stats.p50_ms <= stats.p99_ms <= stats.max_ms
    assert stats.p50_ms < 1000  # a 3-conv 32x32 net is far below a second
    s = stats.settings
    assert s["runtime"] == "onnxruntime"
    assert s["onnxruntime_version"]
    assert s["execution_provider"] == "CPUExecutionProvider"
    assert (s["intra_op_threads"], s["inter_op_threads"]) == (1, 1)
    assert s["allow_spinning"] is True
    assert s["graph_optimization"] == "all"
    assert s["cpu_model"]
    assert s["batch"] == 1
    assert s["input_shape"] == [1, 3, 32, 32]
    assert s["precision"] == "fp32"


def test_settings_follow_the_profile(tiny_onnx: Path) -> None:
    prof = _profile(intra_op_threads=2, allow_spinning=False, graph_optimization="disable")
    target = OrtTarget()
    p = target.prepare(tiny_onnx, prof)
    try:
        s = target.measure(p, None, TINY).settings
    finally:
        p.close()
    assert s["intra_op_threads"] == 2
    assert s["allow_spinning"] is False
    assert s["graph_optimization"] == "disable"


def test_run_matches_torch(prepared: OrtPrepared, tiny_model: TinyConvNet) -> None:
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(x)).numpy()
    out = prepared.run(x)
    assert out.shape == (1, 10)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    with pytest.raises(OnnxModelError, match=r"\[1, 3, 28, 28\]"):
        prepared.run(np.zeros((1, 3, 28, 28), np.float32))


def test_measurement_obeys_min_duration(prepared: OrtPrepared) -> None:
    settings = MeasurementSettings(warmup_iters=0, warmup_ms=0, min_iters=1, min_duration_ms=40)
    t0 = time.perf_counter()
    stats = OrtTarget().measure(prepared, None, settings)
    assert time.perf_counter() - t0 >= 0.040
    assert stats.count >= 2
    assert sum(stats.times_ms) >= 0.5 * 40  # most of the wall time is inside session.run


def test_measurement_obeys_min_iters_and_cap(prepared: OrtPrepared) -> None:
    target = OrtTarget()
    many = MeasurementSettings(warmup_iters=0, warmup_ms=0, min_iters=23, min_duration_ms=0)
    assert target.measure(prepared, None, many).count == 23
    capped = MeasurementSettings(
        warmup_iters=0, warmup_ms=0, min_iters=1, min_duration_ms=60_000, max_iters=7
    )
    assert target.measure(prepared, None, capped).count == 7


def test_measure_with_given_inputs_checks_shape(prepared: OrtPrepared) -> None:
    x = np.ones((1, 3, 32, 32), np.float32)
    assert OrtTarget().measure(prepared, x, TINY).count == 5
    with pytest.raises(OnnxModelError, match="does not fit"):
        OrtTarget().measure(prepared, np.ones((2, 3, 32, 32), np.float32), TINY)


def test_not_onnx_file(tmp_path: Path) -> None:
    bogus = tmp_path / "weights.onnx"
    bogus.write_bytes(b"definitely not a protobuf \x00\x01\x02" * 10)
    with pytest.raises(OnnxModelError, match=r"weights\.onnx is not a valid ONNX model"):
        OrtTarget().prepare(bogus, load_profile("cpu-ort-1t"))
    with pytest.raises(OnnxModelError, match="does not exist"):
        OrtTarget().prepare(tmp_path / "missing.onnx", load_profile("cpu-ort-1t"))


def test_input_shape_mismatch_names_both_shapes(tiny_onnx: Path) -> None:
    prof = load_profile("cpu-ort-1t").model_copy(update={"input_shape": (3, 28, 28)})
    with pytest.raises(OnnxModelError) as info:
        OrtTarget().prepare(tiny_onnx, prof)
    assert "[1, 3, 32, 32]" in str(info.value)
    assert "[1, 3, 28, 28]" in str(info.value)


def test_missing_execution_provider(tiny_onnx: Path) -> None:
    prof = _profile(execution_provider="NoSuchExecutionProvider")
    ok, reason = OrtTarget().available_for(prof)
    assert not ok
    assert "NoSuchExecutionProvider" in reason
    with pytest.raises(TargetUnavailableError, match="NoSuchExecutionProvider"):
        OrtTarget().prepare(tiny_onnx, prof)


def test_closed_session_refuses_to_run(tiny_onnx: Path) -> None:
    p = OrtTarget().prepare(tiny_onnx, load_profile("cpu-ort-1t"))
    p.close()
    with pytest.raises(OnnxModelError, match="closed"):
        p.run(np.zeros((1, 3, 32, 32), np.float32))


def test_module_import_does_not_import_onnxruntime() -> None:
    code = (
        "import sys, edgeprune.targets, edgeprune.targets.onnxruntime; "
        "print('onnxruntime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
