"""Static check: will TensorRT's ONNX parser take every node of this model?

Runs anywhere (onnx only, no TensorRT), so a user learns about an unsupported layer before
copying a model to a Jetson. The tables below follow onnx-tensorrt's ``docs/operators.md``
(the "Operator Support Matrix"), read at its TensorRT 10.15 revision, with the operators that
its CHANGELOG lists as added after 10.3 (the TensorRT of JetPack 6.1/6.2) kept apart in
:data:`ADDED_AFTER_10_3`, so the check answers for the TensorRT the device actually has.
Opset range: the 10.0 table says "opset 9 to opset 20"; the 10.15 table "9 to 24".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from edgeprune.errors import OnnxModelError


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Operators marked "Y" in onnx-tensorrt docs/operators.md (TensorRT 10.x).
SUPPORTED_OPS: frozenset[str] = _names(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool
    BatchNormalization BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant
    ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
    DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor
    Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
    GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow
    HannWindow HardSigmoid HardSwish Hardmax Identity If ImageScaler
    InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log
    LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
    MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot
    Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike
    RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
    ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare
    Relu Reshape Resize ReverseSequence RMSNormalization RNN RoiAlign RotaryEmbedding
    Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink
    Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
    Squeeze Sub Sum Tan Tanh TensorScatter ThresholdedRelu Tile TopK Transpose Trilu
    Unsqueeze Upsample Where Xor
    """
)

# Operators marked "N" in the same table.
UNSUPPORTED_OPS: frozenset[str] = _names(
    """
    AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im
    CenterCropPad Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear
    ImageDecoder MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix Multinomial
    NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv
    QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty
    SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss
    SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
    """
)

# From onnx-tensorrt's CHANGELOG: the release that first parses each op (all after 10.3).
ADDED_AFTER_10_3: dict[str, tuple[int, int]] = {
    "BlackmanWindow": (10, 4),
    "HammingWindow": (10, 4),
    "HannWindow": (10, 4),
    "STFT": (10, 5),
    "Attention": (10, 14),
    "RMSNormalization": (10, 15),
    "RotaryEmbedding": (10, 15),
    "TensorScatter": (10, 15),
}

MIN_OPSET = 9
# Highest opset each documented table names; versions in between get the older figure.
_MAX_OPSET = {(10, 0): 20, (10, 15): 24}

DEFAULT_TRT_VERSION = "10.3"  # JetPack 6.1 / 6.2

_POOLS = {"AveragePool", "MaxPool", "LpPool"}
_REDUCES = {op for op in SUPPORTED_OPS if op.startswith("Reduce")}
_RESIZE_COORD = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric"}
_RESIZE_COORD |= {"align_corners"}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}


@dataclass(frozen=True)
class OpIssue:
    """One node TensorRT's parser will reject (``error``) or may mishandle (``warning``)."""

    node_name: str
    op_type: str
    severity: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: node '{self.node_name}' ({self.op_type}): {self.message}"


@dataclass(frozen=True)
class OpSupportReport:
    """Result of :func:`check_tensorrt_ops`."""

    onnx_path: str
    trt_version: str
    opset: int
    op_counts: dict[str, int]
    issues: tuple[OpIssue, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> tuple[OpIssue, ...]:
        return tuple(i for i in self.issues if i.severity == "error")

    @property
    def ok(self) -> bool:
        """True when no node is expected to fail parsing (warnings allowed)."""
        return not self.errors

    @property
    def unsupported_ops(self) -> list[str]:
        return sorted({i.op_type for i in self.errors})

    def summary(self) -> str:
        """A short human-readable verdict, one line per issue."""
        head = (
            f"{Path(self.onnx_path).name}: {sum(self.op_counts.values())} nodes, "
            f"{len(self.op_counts)} op types, opset {self.opset}, "
            f"TensorRT {self.trt_version}: "
            + ("all supported" if self.ok else f"{len(self.errors)} unsupported node(s)")
        )
        return "\n".join([head, *(f"  {i}" for i in self.issues)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnx_path": self.onnx_path,
            "trt_version": self.trt_version,
            "opset": self.opset,
            "ok": self.ok,
            "op_counts": dict(self.op_counts),
            "issues": [vars(i) for i in self.issues],
        }


def parse_version(version: str) -> tuple[int, int]:
    """``"10.3.0.30"`` -> ``(10, 3)``."""
    parts = str(version).split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError as exc:
        raise ValueError(f"cannot read TensorRT version '{version}' (expected e.g. 10.3)") from exc


def max_opset(trt_version: str) -> int:
    v = parse_version(trt_version)
    known = [k for k in _MAX_OPSET if k <= v]
    return _MAX_OPSET[max(known)] if known else _MAX_OPSET[(10, 0)]


def _walk(graph: onnx.GraphProto) -> Iterator[tuple[onnx.NodeProto, onnx.GraphProto]]:
    """Every node, including those of If/Loop/Scan subgraphs, with the graph it lives in."""
    for node in graph.node:
        yield node, graph
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _walk(g)


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _as_str(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def _restriction(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> str | None:
    """The documented restriction this node breaks, if any (only those checkable statically)."""
    op = node.op_type
    if op in _POOLS:
        ks = _attr(node, "kernel_shape", [])
        if ks and len(ks) not in (2, 3):
            return f"{len(ks)}D pooling; TensorRT pools 2D or 3D only"
        if any(d != 1 for d in _attr(node, "dilations", [])):
            return "dilations must be empty or all ones"
    if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
        return "the Indices output is unsupported"
    if op in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
        zp = consts.get(node.input[2])
        if zp is None:
            return "zero point must be a constant 0"
        if np.any(zp != 0):
            return "zero point must be 0 (quantize with symmetric activations)"
    if op == "Resize":
        mode = _as_str(_attr(node, "mode", b"nearest"))
        coord = _as_str(_attr(node, "coordinate_transformation_mode", b"half_pixel"))
        nearest = _as_str(_attr(node, "nearest_mode", b"round_prefer_floor"))
        if mode not in ("nearest", "linear"):
            return f"resize mode '{mode}' unsupported (nearest, linear only)"
        if coord not in _RESIZE_COORD:
            return f"coordinate_transformation_mode '{coord}' unsupported"
        if mode == "nearest" and nearest not in _RESIZE_NEAREST:
            return f"nearest_mode '{nearest}' unsupported"
        if _attr(node, "antialias", 0):
            return "antialiasing is not supported"
    if op == "TopK" and _attr(node, "sorted", 1) != 1:
        return "sorted must be 1"
    if op == "LSTM" and (_attr(node, "input_forget", 0) or _attr(node, "layout", 0)):
        return "input_forget and layout must be 0"
    if op == "ScatterND" and _as_str(_attr(node, "reduction", b"none")) != "none":
        return "reduction other than 'none' is not supported"
    if op == "Constant" and any(
        a.name in ("sparse_value", "value_string", "value_strings") for a in node.attribute
    ):
        return "sparse and string constants are unsupported"
    if op == "Dropout" and len(node.input) > 2 and node.input[2]:
        training = consts.get(node.input[2])
        if training is None or bool(np.any(training)):
            return "is_training must be a constant False"
    if op in _REDUCES and len(node.input) > 1 and node.input[1] and node.input[1] not in consts:
        return "axes must be an initializer"
    return None


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs by tensor name (of every graph level)."""
    out: dict[str, np.ndarray] = {}

    def visit(graph: onnx.GraphProto) -> None:
        for init in graph.initializer:
            out[init.name] = numpy_helper.to_array(init)
        for node, _ in _walk(graph):
            if node.op_type == "Constant":
                value = _attr(node, "value")
                if isinstance(value, onnx.TensorProto):
                    out[node.output[0]] = numpy_helper.to_array(value)

    visit(model.graph)
    return out


def check_tensorrt_ops(
    onnx_path: str | Path, trt_version: str = DEFAULT_TRT_VERSION
) -> OpSupportReport:
    """Check every node of an ONNX model against TensorRT's ONNX operator support table.

    Args:
        onnx_path: The model to check.
        trt_version: The TensorRT on the device (default 10.3, JetPack 6.1/6.2); ops added
            later are reported as unsupported on older versions.

    Returns:
        An :class:`OpSupportReport`; ``report.ok`` is False when some node will not parse,
        and each issue names the node, its op type and what to do.

    Raises:
        OnnxModelError: the file is missing or not an ONNX model.
    """
    path = Path(onnx_path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError) as exc:
        raise OnnxModelError(f"cannot read ONNX model {path}: {exc}") from exc
    v = parse_version(trt_version)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    consts = _constants(model)
    counts: Counter[str] = Counter()
    issues: list[OpIssue] = []

    if opset and not MIN_OPSET <= opset <= max_opset(trt_version):
        issues.append(
            OpIssue(
                "(model)",
                "opset",
                "warning",
                f"opset {opset} is outside {MIN_OPSET}..{max_opset(trt_version)} documented "
                f"for TensorRT {trt_version}; export with --opset 17",
            )
        )
    for node, _graph in _walk(model.graph):
        counts[node.op_type] += 1
        name = node.name or f"<unnamed {node.op_type}>"
        if node.domain not in ("", "ai.onnx"):
            msg = (
                f"custom op of domain '{node.domain}': TensorRT parses it only if a plugin "
                f"named '{node.op_type}' is registered on the device"
            )
            issues.append(OpIssue(name, node.op_type, "error", msg))
            continue
        if node.op_type in UNSUPPORTED_OPS or node.op_type not in SUPPORTED_OPS:
            where = "marked unsupported" if node.op_type in UNSUPPORTED_OPS else "not listed"
            msg = f"{where} in TensorRT's ONNX operator table; replace the layer before export"
            issues.append(OpIssue(name, node.op_type, "error", msg))
            continue
        since = ADDED_AFTER_10_3.get(node.op_type)
        if since is not None and v < since:
            msg = f"parsed from TensorRT {since[0]}.{since[1]} on; the device has {trt_version}"
            issues.append(OpIssue(name, node.op_type, "error", msg))
            continue
        broken = _restriction(node, consts)
        if broken:
            issues.append(OpIssue(name, node.op_type, "error", broken))
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.DOUBLE:
            issues.append(
                OpIssue(
                    tensor.name,
                    "initializer",
                    "warning",
                    "DOUBLE data is cast down to FLOAT by TensorRT (values clamped)",
                )
            )
            break
    return OpSupportReport(
        str(path), trt_version, opset, dict(sorted(counts.items())), tuple(issues)
    )
