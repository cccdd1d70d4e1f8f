"""FP32 ONNX -> FP16 ONNX, for TensorRT 11's strongly typed networks.

TensorRT 11 removed ``BuilderFlag.FP16``: precision comes from the tensor types in the ONNX,
so an FP16 engine needs an FP16 model made offline. This is a plain onnx-API conversion
(no onnxconverter-common, whose releases pin old protobuf versions): float initializers and
float constants become float16, internal float Casts cast to float16, and graph inputs and
outputs stay float32 by default with one Cast each at the boundary, so callers keep feeding
float32 and the model stays a drop-in replacement. Tensor types are then re-derived by ONNX
shape inference in strict mode, which rejects any node left with mixed types.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeprune._io import atomic_write_bytes
from edgeprune.errors import ExportError, OnnxModelError

FP16_MAX = float(np.finfo(np.float16).max)

# Inputs that the ONNX spec types as float32 only, whatever the data type: keep them fp32.
_FP32_ONLY_INPUTS: dict[str, set[int]] = {"Resize": {2}, "Upsample": {1}}


def _to_fp16_tensor(t: TensorProto) -> TensorProto:
    arr = numpy_helper.to_array(t)
    # Values beyond fp16's range would become inf; clamp them (weights that large are rare
    # and would overflow in an fp16 engine anyway).
    out = numpy_helper.from_array(np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16), t.name)
    return out


def _fp32_only_names(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        for idx in _FP32_ONLY_INPUTS.get(node.op_type, set()):
            if idx < len(node.input) and node.input[idx]:
                names.add(node.input[idx])
    return names


def _convert_graph(graph: onnx.GraphProto) -> None:
    keep = _fp32_only_names(graph)
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT and init.name not in keep:
            graph.initializer[i].CopyFrom(_to_fp16_tensor(init))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                if node.op_type == "Constant" and node.output[0] in keep:
                    continue
                attr.t.CopyFrom(_to_fp16_tensor(attr.t))
            elif attr.type == onnx.AttributeProto.GRAPH:
                _convert_graph(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _convert_graph(g)
        if node.op_type in ("Cast", "RandomNormal", "RandomUniform", "EyeLike"):
            for attr in node.attribute:
                if attr.name in ("to", "dtype") and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
    del graph.value_info[:]


def _float_io(values: list[onnx.ValueInfoProto]) -> list[onnx.ValueInfoProto]:
    return [v for v in values if v.type.tensor_type.elem_type == TensorProto.FLOAT]


def convert_fp16(fp32_onnx: str | Path, out_path: str | Path, *, keep_io_fp32: bool = True) -> Path:
    """Write an FP16 copy of ``fp32_onnx`` to ``out_path`` (atomically).

    Args:
        fp32_onnx: A float32 model (e.g. from ``edgeprune export``).
        out_path: Where the FP16 model goes.
        keep_io_fp32: Keep float32 graph inputs/outputs with a Cast at each (default), so
            the same float32 arrays feed both models; False makes the I/O float16 too.

    Returns:
        ``out_path``.

    Raises:
        OnnxModelError: ``fp32_onnx`` is missing or not ONNX.
        ExportError: the converted graph fails ONNX's strict type/shape inference.
    """
    src, out_path = Path(fp32_onnx), Path(out_path)
    try:
        model = onnx.load(str(src))
    except Exception as exc:  # onnx raises protobuf DecodeError or OSError here
        raise OnnxModelError(f"cannot read ONNX model {src}: {exc}") from exc
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    inputs = [v for v in _float_io(list(graph.input)) if v.name not in init_names]
    outputs = _float_io(list(graph.output))
    _convert_graph(graph)

    if keep_io_fp32:
        casts_in = []
        for v in inputs:
            inner = f"{v.name}__fp16"
            for node in graph.node:
                for k, name in enumerate(node.input):
                    if name == v.name:
                        node.input[k] = inner
            casts_in.append(
                helper.make_node(
                    "Cast", [v.name], [inner], name=f"{v.name}__to_fp16", to=TensorProto.FLOAT16
                )
            )
        for v in outputs:
            inner = f"{v.name}__fp16"
            for node in graph.node:
                for k, name in enumerate(node.output):
                    if name == v.name:
                        node.output[k] = inner
            graph.node.append(
                helper.make_node(
                    "Cast", [inner], [v.name], name=f"{v.name}__to_fp32", to=TensorProto.FLOAT
                )
            )
        for k, cast in enumerate(casts_in):
            graph.node.insert(k, cast)
    else:
        for v in [*inputs, *outputs]:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16

    try:
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises InferenceError / ValidationError (C++ bound)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"FP16 conversion of {src.name} gives an inconsistent graph: {first}; "
            "build FP32 or convert with NVIDIA ModelOpt AutoCast"
        ) from exc
    atomic_write_bytes(out_path, model.SerializeToString())
    return out_path


def is_fp16_model(onnx_path: str | Path) -> bool:
    """True when the model's float initializers are float16 (what :func:`convert_fp16` makes)."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    keep = _fp32_only_names(graph)
    kinds = {i.data_type for i in graph.initializer if i.name not in keep}
    return TensorProto.FLOAT16 in kinds and TensorProto.FLOAT not in kinds
