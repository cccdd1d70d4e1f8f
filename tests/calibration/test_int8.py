"""INT8 by explicit quantization: deterministic calibration reader, Q/DQ export, accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from edgeprune.calibration.int8 import CalibrationReader, compare_int8, export_int8
from edgeprune.data import DataSplits, load_data, normalize
from edgeprune.errors import DataError, ExportError, OnnxModelError
from edgeprune.models.testing import TinyConvNet
from edgeprune.pipeline.export import export_onnx
from edgeprune.profiles import DeviceProfile, MeasurementSettings, load_profile
from edgeprune.targets.trt_ops import check_tensorrt_ops

FAST = MeasurementSettings(warmup_iters=3, warmup_ms=0, min_iters=20, min_duration_ms=50, blocks=2)


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    # 16x16 keeps every detail of the 8x8 digits at a quarter of the 32x32 compute.
    return load_data("digits", image_size=16)


def _profile() -> DeviceProfile:
    return load_profile("cpu-ort-1t").model_copy(update={"input_shape": (3, 16, 16)})


def _fit(model: torch.nn.Module, data: DataSplits, steps: int = 200) -> None:
    # A short Adam run without augmentation: ~95% on digits within seconds on a shared
    # 2-core CPU (the project's train() augments and needs many more epochs). One thread:
    # the thread count changes float summation order, and so the trained weights.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, y = normalize(data.train_x, data.mean, data.std), data.train_y
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(steps):
            idx = torch.randint(0, x.shape[0], (64,), generator=gen)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, digits: DataSplits) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)  # initial weights: the run is reproducible
    model = TinyConvNet(num_classes=10, width=16)
    _fit(model, digits)
    fp32 = export_onnx(model, _profile(), out / "model.onnx").path
    int8 = export_int8(fp32, out / "model.int8.onnx", digits, n_samples=128, seed=0)
    return fp32, int8


def test_reader_is_deterministic_and_normalised(digits: DataSplits) -> None:
    a = CalibrationReader(digits.train_x, digits.mean, digits.std, "input", 50, batch=4, seed=3)
    b = CalibrationReader(digits.train_x, digits.mean, digits.std, "input", 50, batch=4, seed=3)
    c = CalibrationReader(digits.train_x, digits.mean, digits.std, "input", 50, batch=4, seed=4)
    assert np.array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)
    assert a.n_samples == 48  # rounded down to whole batches of the static batch size
    batches = []
    while (feed := a.get_next()) is not None:
        batches.append(feed["input"])
    assert len(batches) == 12 and all(x.shape == (4, 3, 16, 16) for x in batches)
    assert batches[0].dtype == np.float32
    expected = normalize(digits.train_x[torch.from_numpy(a.indices[:4])], digits.mean, digits.std)
    np.testing.assert_allclose(batches[0], expected.numpy(), rtol=1e-6)
    a.rewind()
    np.testing.assert_array_equal(a.get_next()["input"], batches[0])


def test_reader_caps_and_rejects_bad_data(digits: DataSplits) -> None:
    small = digits.train_x[:10]
    reader = CalibrationReader(small, digits.mean, digits.std, "input", 1000, batch=1)
    assert reader.n_samples == 10
    with pytest.raises(DataError, match="uint8"):
        CalibrationReader(small.double(), digits.mean, digits.std, "input", 5)
    # float32 are model inputs, normalised already (a user's own pipeline): fed as they are
    inputs = torch.randn(6, 3, 8, 8)
    fed = CalibrationReader(inputs, (), (), "input", 4, batch=2, seed=1)
    got = np.concatenate([fed.get_next()["input"] for _ in range(2)])
    np.testing.assert_array_equal(got, inputs[torch.from_numpy(fed.indices)].numpy())
    with pytest.raises(DataError, match="at least one batch"):
        CalibrationReader(small, digits.mean, digits.std, "input", 5, batch=8)


def test_int8_export_is_qdq_and_tensorrt_compatible(exported: tuple[Path, Path]) -> None:
    _, int8 = exported
    graph = onnx.load(str(int8)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    # Symmetric activations: every zero point is 0, which TensorRT requires.
    zps = [n.input[2] for n in graph.node if n.op_type.endswith("QuantizeLinear")]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    assert zps and all(not np.any(inits[z]) for z in zps)
    assert all(inits[z].dtype == np.int8 for z in zps)
    # Per-channel weights: the conv weight scales are vectors.
    assert any(
        n.op_type == "DequantizeLinear" and inits.get(n.input[1], np.zeros(1)).size > 1
        for n in graph.node
    )
    report = check_tensorrt_ops(int8)
    assert report.ok, report.summary()


def test_int8_accuracy_within_one_point_of_fp32(
    exported: tuple[Path, Path], digits: DataSplits
) -> None:
    fp32, int8 = exported
    r = compare_int8(fp32, int8, digits, _profile(), settings=FAST)
    assert r["n_eval"] == digits.test_x.shape[0]
    assert r["top1_fp32"] > 85.0, "the model did not train; the comparison would be vacuous"
    assert abs(r["top1_fp32"] - r["top1_int8"]) <= 1.0, r
    assert r["p50_fp32_ms"] > 0 and r["p50_int8_ms"] > 0


def test_quantize_errors_name_the_problem(tmp_path: Path, digits: DataSplits) -> None:
    with pytest.raises(OnnxModelError, match="does not exist"):
        export_int8(tmp_path / "missing.onnx", tmp_path / "out.onnx", digits)
    model = TinyConvNet(num_classes=10, width=4).eval()
    fp32 = export_onnx(model, _profile(), tmp_path / "m.onnx").path
    with pytest.raises(ExportError, match="calibration method"):
        export_int8(fp32, tmp_path / "out.onnx", digits, n_samples=4, method="kl")


def test_export_int8_loads_a_named_source(exported: tuple[Path, Path], tmp_path: Path) -> None:
    # The CLI passes --calib-data as a name or path; the model's input size picks the size.
    fp32, _ = exported
    out = export_int8(fp32, tmp_path / "named.int8.onnx", "digits", n_samples=8)
    assert check_tensorrt_ops(out).ok


# ------------------------------------------------------------------ recipes per runtime


def test_recipes_per_runtime() -> None:
    from edgeprune.calibration.int8 import ORT_CPU_RECIPES, TRT_RECIPE, candidate_recipes

    assert candidate_recipes(load_profile("jetson-orin-nano-trt-fp16")) == (TRT_RECIPE,)
    ort = candidate_recipes(load_profile("cpu-ort-1t"))
    assert ort == ORT_CPU_RECIPES and ort[0].activations == "u8"
    assert {r.quant_format for r in ort} == {"qdq", "qoperator"}


def test_u8s8_recipes_write_unsigned_activations(
    exported: tuple[Path, Path], digits: DataSplits, tmp_path: Path
) -> None:
    from edgeprune.calibration.int8 import RECIPES

    fp32, _ = exported
    qdq = export_int8(fp32, tmp_path / "u8.onnx", digits, n_samples=64,
                      recipe=RECIPES["ort-u8s8-qdq"])  # fmt: skip
    graph = onnx.load(str(qdq)).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    act_zps = [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert act_zps and all(z.dtype == np.uint8 for z in act_zps)
    qop = export_int8(fp32, tmp_path / "qop.onnx", digits, n_samples=64,
                      recipe=RECIPES["ort-u8s8-qoperator"])  # fmt: skip
    assert "QLinearConv" in {n.op_type for n in onnx.load(str(qop)).graph.node}
    r = compare_int8(fp32, qdq, digits, _profile(), settings=FAST)
    assert abs(r["top1_fp32"] - r["top1_int8"]) <= 1.0, r


def test_choose_recipe_measures_every_candidate_and_keeps_a_faster_one_or_none(
    exported: tuple[Path, Path], digits: DataSplits, tmp_path: Path
) -> None:
    from edgeprune.calibration.int8 import ORT_CPU_RECIPES, choose_recipe

    fp32, _ = exported
    out = tmp_path / "chosen.int8.onnx"
    res = choose_recipe(fp32, out, digits, _profile(), n_samples=64, settings=FAST)
    assert [r["name"] for r in res["recipes"]] == [r.name for r in ORT_CPU_RECIPES]
    assert all(r["speedup_p50"] > 0 for r in res["recipes"])
    if res["chosen"] is None:  # INT8 does not pay on this CPU: said, nothing written
        assert "no INT8 recipe beats FP32" in res["why"] and not out.exists()
    else:
        row = next(r for r in res["recipes"] if r["name"] == res["chosen"])
        assert row["speedup_p50"] > 1.0 and out.is_file()
        assert row["speedup_p50"] == max(
            r["speedup_p50"] for r in res["recipes"] if r["top1_drop_points"] <= 1.0
        )


def test_choose_recipe_on_tensorrt_writes_the_symmetric_qdq_model(
    exported: tuple[Path, Path], digits: DataSplits, tmp_path: Path
) -> None:
    from edgeprune.calibration.int8 import choose_recipe

    fp32, _ = exported
    trt = load_profile("jetson-orin-nx-trt-int8")
    res = choose_recipe(fp32, tmp_path / "trt.onnx", digits, trt, n_samples=64)
    assert res["chosen"] == "trt-s8s8-qdq" and check_tensorrt_ops(tmp_path / "trt.onnx").ok
