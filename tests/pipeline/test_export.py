"""ONNX export: static shapes from the profile, validated against torch, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgeprune._io import sha256_file
from edgeprune.errors import ExportError, OnnxModelError
from edgeprune.models import create_model
from edgeprune.models.testing import TinyConvNet
from edgeprune.pipeline.export import compare_outputs, export_onnx, validate_onnx
from edgeprune.profiles import load_profile
from edgeprune.targets.onnxruntime import OrtTarget


class FlatLinear(nn.Module):
    """Accepts only 3x32x32 inputs: its Linear expects 3*32*32 features."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x, 1))


class ReturnsString(nn.Module):
    def forward(self, x: torch.Tensor) -> str:
        return "logits"


def test_resnet20_exports_and_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("resnet20")
    model.train()  # export must switch to eval and give the mode back
    out = tmp_path / "sub" / "resnet20.onnx"
    info = export_onnx(model, load_profile("cpu-ort-1t"), out)
    assert model.training
    assert info.path == out and out.is_file()
    assert info.max_abs_diff < 1e-4
    assert info.opset == 17
    assert info.exporter == "torchscript"
    assert info.input_shape == (1, 3, 32, 32)
    assert info.sha256 == sha256_file(out)
    assert info.size_bytes == out.stat().st_size
    assert info.onnx_version == onnx.__version__
    assert info.torch_version == torch.__version__
    d = info.to_dict()
    assert d["path"] == str(out) and d["input_shape"] == [1, 3, 32, 32]
    proto = validate_onnx(out)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 32, 32]  # static batch and shape
    assert proto.graph.input[0].name == info.input_name
    assert proto.graph.output[0].name == info.output_name

    # The file on disk runs in the ORT target and agrees with the torch model in eval mode.
    x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    prepared = OrtTarget().prepare(out, load_profile("cpu-ort-1t"))
    try:
        got = prepared.run(x)
    finally:
        prepared.close()
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_batch_from_profile(tmp_path: Path) -> None:
    prof = load_profile("cpu-ort-1t").model_copy(update={"batch": 2})
    info = export_onnx(TinyConvNet(width=8), prof, tmp_path / "b2.onnx", opset=13)
    assert info.input_shape == (2, 3, 32, 32)
    assert info.opset == 13
    proto = onnx.load(str(info.path))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 32, 32]
    assert any(op.version == 13 for op in proto.opset_import if op.domain in ("", "ai.onnx"))


def test_model_rejecting_profile_shape(tmp_path: Path) -> None:
    yaml_path = tmp_path / "small-images.yaml"
    yaml_path.write_text("name: small-images\ninput_shape: [3, 28, 28]\n", encoding="utf-8")
    out = tmp_path / "out" / "flat.onnx"
    with pytest.raises(ExportError) as info:
        export_onnx(FlatLinear(), load_profile(yaml_path), out)
    msg = str(info.value)
    assert "model rejects input shape [1, 3, 28, 28] from profile 'small-images'" in msg
    assert "pick a profile whose input_shape fits the model" in msg
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())
    # The same model with the shape it was built for exports fine.
    assert export_onnx(FlatLinear(), load_profile("cpu-ort-1t"), out).max_abs_diff < 1e-4


def test_model_returning_non_tensor(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not a tensor"):
        export_onnx(ReturnsString(), load_profile("cpu-ort-1t"), tmp_path / "s.onnx")
    assert not list(tmp_path.iterdir())


def test_compare_outputs() -> None:
    ref = np.linspace(-1, 1, 10, dtype=np.float32).reshape(1, 10)
    assert compare_outputs(ref, ref.copy(), 1e-4, "t") == 0.0
    close = ref + np.float32(5e-5)
    assert compare_outputs(ref, close, 1e-4, "t") == pytest.approx(5e-5, rel=1e-2)
    tampered = ref.copy()
    tampered[0, 3] += 0.01
    with pytest.raises(ExportError, match=r"differs from torch by 0\.01"):
        compare_outputs(ref, tampered, 1e-4, "t")
    with pytest.raises(ExportError, match="shape"):
        compare_outputs(ref, ref.reshape(10, 1), 1e-4, "t")
    nan = ref.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ExportError, match="NaN"):
        compare_outputs(ref, nan, 1e-4, "t")


def test_compare_outputs_scales_with_magnitude() -> None:
    # Logits near 3000 (an untrained ResNet-56) carry float32 rounding of ~1e-3.
    ref = np.array([[3000.0, -1500.0]], dtype=np.float32)
    assert compare_outputs(ref, ref + np.float32(2e-3), 1e-4, "t") > 0
    with pytest.raises(ExportError):
        compare_outputs(ref, ref + np.float32(1.0), 1e-4, "t")


def test_validate_onnx_rejects_non_onnx(tmp_path: Path) -> None:
    with pytest.raises(OnnxModelError, match=r"is not a valid ONNX model: no such file"):
        validate_onnx(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\xfe not protobuf at all" * 4)
    with pytest.raises(OnnxModelError, match=r"garbage\.onnx is not a valid ONNX model.*export"):
        validate_onnx(garbage)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(OnnxModelError, match="is not a valid ONNX model"):
        validate_onnx(empty)
