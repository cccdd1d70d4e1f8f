"""Static TensorRT operator-support check: exported models pass, unsupported nodes are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeprune.errors import OnnxModelError
from edgeprune.models import create_model
from edgeprune.models.testing import TinyConvNet
from edgeprune.pipeline.export import export_onnx
from edgeprune.profiles import load_profile
from edgeprune.targets.trt_ops import (
    ADDED_AFTER_10_3,
    SUPPORTED_OPS,
    UNSUPPORTED_OPS,
    check_tensorrt_ops,
)


def _save(tmp_path: Path, nodes: list, inits: list | None = None, opset: int = 17) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


def test_tables_are_disjoint_and_cover_cnn_ops() -> None:
    assert not SUPPORTED_OPS & UNSUPPORTED_OPS
    cnn = {"Conv", "Relu", "Add", "BatchNormalization", "GlobalAveragePool", "Gemm", "MaxPool"}
    assert cnn <= SUPPORTED_OPS
    assert {"QuantizeLinear", "DequantizeLinear", "Cast"} <= SUPPORTED_OPS
    assert set(ADDED_AFTER_10_3) <= SUPPORTED_OPS


@pytest.mark.parametrize("name", ["resnet20", "tiny"])
def test_exported_models_are_supported(name: str, tmp_path: Path) -> None:
    model = create_model(name, 10) if name != "tiny" else TinyConvNet(10)
    path = export_onnx(model, load_profile("cpu-ort-1t"), tmp_path / "m.onnx").path
    report = check_tensorrt_ops(path)
    assert report.ok, report.summary()
    assert report.issues == ()
    assert report.op_counts["Conv"] >= 3
    assert report.opset == 17 and report.trt_version == "10.3"
    assert "all supported" in report.summary()


def test_unsupported_nodes_are_named(tmp_path: Path) -> None:
    zp = numpy_helper.from_array(np.array(3, dtype=np.int8), "zp")
    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "scale")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu_ok"),
        helper.make_node("Det", ["r"], ["d"], name="det_node"),
        helper.make_node("MyPlugin", ["r"], ["p"], name="custom_node", domain="com.example"),
        helper.make_node("MaxPool", ["r"], ["mp", "idx"], name="pool_idx", kernel_shape=[2, 2]),
        helper.make_node("QuantizeLinear", ["r", "scale", "zp"], ["q"], name="q_asym"),
        helper.make_node("Resize", ["r", "", "scale"], ["rz"], name="cubic", mode="cubic"),
        helper.make_node("HannWindow", ["n"], ["w"], name="window"),
        helper.make_node("FancyOp", ["r"], ["y"], name="unknown_node"),
    ]
    path = _save(tmp_path, nodes, [zp, scale])
    report = check_tensorrt_ops(path, "10.3")
    assert not report.ok
    by_node = {i.node_name: i for i in report.errors}
    assert set(by_node) == {
        "det_node",
        "custom_node",
        "pool_idx",
        "q_asym",
        "cubic",
        "window",
        "unknown_node",
    }
    assert "marked unsupported" in by_node["det_node"].message
    assert "plugin" in by_node["custom_node"].message
    assert "Indices" in by_node["pool_idx"].message
    assert "zero point must be 0" in by_node["q_asym"].message
    assert "cubic" in by_node["cubic"].message
    assert "10.4" in by_node["window"].message
    assert "not listed" in by_node["unknown_node"].message
    assert report.unsupported_ops == sorted(
        {"Det", "MyPlugin", "MaxPool", "QuantizeLinear", "Resize", "HannWindow", "FancyOp"}
    )
    text = report.summary()
    assert "7 unsupported node(s)" in text and "det_node" in text
    # A newer TensorRT parses HannWindow: the verdict follows the device's version.
    newer = check_tensorrt_ops(path, "10.15")
    assert "window" not in {i.node_name for i in newer.errors}


def test_subgraphs_are_checked(tmp_path: Path) -> None:
    then_g = helper.make_graph(
        [helper.make_node("Unique", ["x"], ["u"], name="inner_unique")],
        "then",
        [],
        [helper.make_tensor_value_info("u", TensorProto.FLOAT, None)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["v"], name="inner_relu")],
        "else",
        [],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, None)],
    )
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node(
        "If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g
    )
    report = check_tensorrt_ops(_save(tmp_path, [node], [cond]))
    assert [i.node_name for i in report.errors] == ["inner_unique"]
    assert report.op_counts == {"If": 1, "Relu": 1, "Unique": 1}


def test_opset_out_of_range_is_a_warning(tmp_path: Path) -> None:
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="r")], opset=23)
    report = check_tensorrt_ops(path, "10.3")
    assert report.ok  # the parser may still take it; the user is warned
    assert [i.severity for i in report.issues] == ["warning"]
    assert "opset 23" in report.issues[0].message
    assert check_tensorrt_ops(path, "10.15").issues == ()


def test_asymmetric_ort_quantization_is_caught(tmp_path: Path) -> None:
    # onnxruntime's default static quantization (uint8 activations, asymmetric) produces
    # non-zero zero points, which TensorRT rejects: the check must say so before a build.
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    src = export_onnx(TinyConvNet(10, width=4), load_profile("cpu-ort-1t"), tmp_path / "f.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = [{"input": rng.random((1, 3, 32, 32), dtype=np.float32)}] * 4

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self.batches.pop() if self.batches else None

    out = tmp_path / "asym.onnx"
    quantize_static(str(src.path), str(out), Reader(), quant_format=QuantFormat.QDQ)
    report = check_tensorrt_ops(out)
    assert not report.ok
    assert {i.op_type for i in report.errors} <= {"QuantizeLinear", "DequantizeLinear"}
    assert all("zero point" in i.message for i in report.errors)


def test_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model", encoding="utf-8")
    with pytest.raises(OnnxModelError, match=r"cannot read ONNX model .*bad\.onnx"):
        check_tensorrt_ops(bad)
    with pytest.raises(OnnxModelError, match="cannot read"):
        check_tensorrt_ops(tmp_path / "missing.onnx")
