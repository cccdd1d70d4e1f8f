"""FP16 ONNX conversion (for TensorRT 11's strongly typed FP16 engines), checked in ORT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgeprune.calibration.fp16 import convert_fp16, is_fp16_model
from edgeprune.errors import OnnxModelError
from edgeprune.models import create_model
from edgeprune.pipeline.export import export_onnx
from edgeprune.profiles import load_profile


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fp16") / "resnet20.onnx"
    return export_onnx(create_model("resnet20", 10), load_profile("cpu-ort-1t"), out).path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_fp16_model_keeps_fp32_io_and_matches(fp32_onnx: Path, tmp_path: Path) -> None:
    out = convert_fp16(fp32_onnx, tmp_path / "m.fp16.onnx")
    assert is_fp16_model(out) and not is_fp16_model(fp32_onnx)
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert {i.data_type for i in model.graph.initializer} == {TensorProto.FLOAT16}
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    ref, got = _run(fp32_onnx, x), _run(out, x)
    assert got.dtype == np.float32
    # fp16 keeps ~3 significant digits; errors stay well under 1% of the logit scale.
    assert np.max(np.abs(ref - got)) < 0.01 * max(1.0, float(np.max(np.abs(ref))))
    assert int(ref.argmax()) == int(got.argmax())


def test_fp16_io_option(fp32_onnx: Path, tmp_path: Path) -> None:
    out = convert_fp16(fp32_onnx, tmp_path / "io16.onnx", keep_io_fp32=False)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(float16)"
    assert sess.get_outputs()[0].type == "tensor(float16)"


def test_fp32_only_inputs_stay_fp32(tmp_path: Path) -> None:
    # Resize's `scales` input is float32-only in the ONNX spec; converting it would break
    # the graph, so it must survive as float32 while the data path turns float16.
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 2.0, 2.0])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [2.0])
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
            helper.make_node("Resize", ["c", "", "scales"], ["y"], name="up", mode="nearest"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        [scales, w],
    )
    src = tmp_path / "resize.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(src))
    out = convert_fp16(src, tmp_path / "resize16.onnx")
    types = {i.name: i.data_type for i in onnx.load(str(out)).graph.initializer}
    assert types == {"scales": TensorProto.FLOAT, "w": TensorProto.FLOAT16}
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    np.testing.assert_allclose(_run(out, x), _run(src, x))


def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(OnnxModelError, match="cannot read"):
        convert_fp16(tmp_path / "none.onnx", tmp_path / "o.onnx")
