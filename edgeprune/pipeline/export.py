"""Export a torch model to ONNX for a device profile, and prove the export is faithful.

The ONNX has a static batch and input shape (the profile's), passes ``onnx.checker`` and
matches torch on seeded random inputs when run in onnxruntime; otherwise nothing is written.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune._io import atomic_write_bytes, sha256_file
from edgeprune.errors import EdgepruneError, ExportError, OnnxModelError
from edgeprune.outputs import flatten_outputs, output_names
from edgeprune.profiles.schema import DeviceProfile

EXPORTER = "torchscript"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
CHECK_INPUTS = 3


@dataclass(frozen=True)
class ExportInfo:
    """What was exported and how well it matches torch.

    Attributes:
        path: The written ONNX file.
        opset: ONNX opset version.
        exporter: ``"torchscript"`` (``torch.onnx.export(dynamo=False)``).
        input_name: Graph input name.
        output_name: First graph output name (``logits`` for a classifier).
        output_names: Every graph output, one per tensor the model returns.
        input_shape: Static input shape (batch, C, H, W) from the profile.
        max_abs_diff: Largest |torch - onnxruntime| over the check inputs.
        sha256: Hash of the file.
        size_bytes: File size.
        onnx_version: ``onnx`` package version.
        torch_version: ``torch`` version that exported it.
    """

    path: Path
    opset: int
    exporter: str
    input_name: str
    output_name: str
    input_shape: tuple[int, ...]
    max_abs_diff: float
    sha256: str
    size_bytes: int
    onnx_version: str
    torch_version: str
    output_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "path": str(self.path),
            "opset": self.opset,
            "exporter": self.exporter,
            "input_name": self.input_name,
            "output_name": self.output_name,
            "output_names": list(self.output_names or (self.output_name,)),
            "input_shape": list(self.input_shape),
            "max_abs_diff": self.max_abs_diff,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "onnx_version": self.onnx_version,
            "torch_version": self.torch_version,
        }


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    # Export and comparison need eval mode (BN running stats, no dropout); give the caller
    # back the mode it had.
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _seeded_inputs(shape: tuple[int, ...], seed: int, n: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for _ in range(n)]


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, atol: float, what: str) -> float:
    """Max |reference - candidate|; raise when shapes differ, values are not finite or too far.

    ``atol`` holds for outputs of magnitude up to 1. Larger outputs get it scaled by their
    largest magnitude, because float32 rounding grows with the values: an untrained ResNet-56
    emits logits near 3000 and differs by ~2e-3 between two correct runtimes.

    Args:
        reference: torch's output.
        candidate: onnxruntime's output for the same input.
        atol: Largest absolute difference accepted (for outputs of magnitude <= 1).
        what: Names the export in the error message.

    Raises:
        ExportError: The outputs disagree.
    """
    if reference.shape != candidate.shape:
        raise ExportError(
            f"{what}: onnxruntime output shape {list(candidate.shape)} differs from torch's "
            f"{list(reference.shape)}; the export is wrong — report it with the model code"
        )
    ref64, cand64 = reference.astype(np.float64), candidate.astype(np.float64)
    if not np.array_equal(np.isfinite(ref64), np.isfinite(cand64)):
        raise ExportError(f"{what}: onnxruntime output has NaN/inf where torch's does not")
    finite = np.isfinite(ref64)
    if not finite.any():
        return 0.0
    diff = float(np.max(np.abs(ref64[finite] - cand64[finite])))
    allowed = atol * max(1.0, float(np.max(np.abs(ref64[finite]))))
    if not diff <= allowed:
        raise ExportError(
            f"{what}: onnxruntime output differs from torch by {diff:.3g} (> {allowed:.3g}, "
            f"atol {atol:g} scaled by the output magnitude); check for ops the exporter "
            "handles differently or raise atol"
        )
    return diff


def export_onnx(
    model: nn.Module,
    profile: DeviceProfile,
    out_path: Path,
    *,
    opset: int = 17,
    atol: float = 1e-4,
    seed: int = 0,
) -> ExportInfo:
    """Export ``model`` to ONNX with the profile's static batch and input shape, and verify it.

    The graph is checked with ``onnx.checker``, run in onnxruntime (CPU) on three seeded
    random inputs and compared with torch. The file appears at ``out_path`` only when every
    check passed. The model's train/eval mode is restored afterwards.

    Args:
        model: The torch model (any mode; exported in eval mode).
        profile: Supplies ``batch`` and ``input_shape``.
        out_path: Where the ONNX file goes (parent directories are created).
        opset: ONNX opset version.
        atol: Largest |torch - onnxruntime| accepted, scaled up for outputs larger than 1
            (see :func:`compare_outputs`).
        seed: Seed of the check inputs.

    Raises:
        ExportError: The model rejects the profile's input shape, the exporter fails, or the
            export disagrees with torch.
    """
    import onnx
    import onnxruntime as ort

    out_path = Path(out_path)
    shape = tuple(profile.full_input_shape)
    what = f"export of {type(model).__name__} to {out_path.name}"
    inputs = _seeded_inputs(shape, seed, CHECK_INPUTS)
    # Run on the model's own device (a model fine-tuned on a GPU stays there); the inputs are
    # drawn on the CPU so the seed gives the same values everywhere.
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    with _eval_mode(model), torch.no_grad():
        try:
            outs = [model(x.to(device)) for x in inputs]
            refs = [[t.cpu().numpy() for t in flatten_outputs(o)] for o in outs]
        except ExportError:
            raise
        except EdgepruneError as exc:  # an output that is not a tensor
            raise ExportError(f"{what}: an output is not a tensor: {exc}") from exc
        except Exception as exc:
            raise ExportError(
                f"model rejects input shape {list(shape)} from profile '{profile.name}': "
                f"{_first_line(exc)}; pick a profile whose input_shape fits the model"
            ) from exc
        # One graph output per tensor: a classifier's "logits", a detector's "out.0",
        # "out.1", a segmentation dict's keys.
        names = output_names(outs[0], OUTPUT_NAME)
        buf = io.BytesIO()
        try:
            # The TorchScript exporter (dynamo=False) is ~10x faster than the dynamo exporter
            # in torch 2.13 and needs no onnxscript; the search exports every kept candidate,
            # so export speed is search speed. Its deprecation warning is expected.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(
                    model,
                    (inputs[0].to(device),),
                    buf,  # type: ignore[arg-type]  # TorchScript exporter takes file objects
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=names,
                    do_constant_folding=True,
                )
        except Exception as exc:
            raise ExportError(
                f"{what} failed: {_first_line(exc)}; try another --opset or replace the "
                "unsupported op"
            ) from exc
    data = buf.getvalue()
    try:
        proto = onnx.load_from_string(data)
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ExportError(f"{what}: exported graph fails onnx.checker: {_first_line(exc)}") from exc

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"{what}: onnxruntime rejects the graph: {_first_line(exc)}") from exc
    in_name = sess.get_inputs()[0].name
    graph_outputs = [o.name for o in sess.get_outputs()]
    if len(graph_outputs) != len(names):
        raise ExportError(
            f"{what}: the graph has {len(graph_outputs)} outputs but the model returns "
            f"{len(names)} tensors (an output is a constant or an input); return only "
            "computed tensors from forward"
        )
    max_diff = 0.0
    for x, ref in zip(inputs, refs, strict=True):
        got = sess.run(graph_outputs, {in_name: x.numpy()})
        for name, r, g in zip(graph_outputs, ref, got, strict=True):
            label = what if len(graph_outputs) == 1 else f"{what} (output {name})"
            max_diff = max(max_diff, compare_outputs(r, g, atol, label))

    atomic_write_bytes(out_path, data)
    return ExportInfo(
        path=out_path,
        opset=opset,
        exporter=EXPORTER,
        input_name=in_name,
        output_name=graph_outputs[0],
        output_names=tuple(graph_outputs),
        input_shape=shape,
        max_abs_diff=max_diff,
        sha256=sha256_file(out_path),
        size_bytes=out_path.stat().st_size,
        onnx_version=str(onnx.__version__),
        torch_version=str(torch.__version__),
    )


def validate_onnx(path: Path) -> Any:
    """Load an ONNX file and run ``onnx.checker`` on it.

    Returns:
        The ``onnx.ModelProto``.

    Raises:
        OnnxModelError: Not a file, not ONNX, or fails the checker.
    """
    import onnx

    path = Path(path)
    hint = "export it with `edgeprune export`"
    if not path.is_file():
        raise OnnxModelError(f"{path} is not a valid ONNX model: no such file; {hint}")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise OnnxModelError(
            f"{path} is not a valid ONNX model: cannot parse it ({_first_line(exc)}); {hint}"
        ) from exc
    try:
        # The path form also handles models with external data (> 2 GB).
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise OnnxModelError(
            f"{path} is not a valid ONNX model: checker says {_first_line(exc)}; {hint}"
        ) from exc
    if not proto.graph.node:
        raise OnnxModelError(f"{path} is not a valid ONNX model: its graph is empty; {hint}")
    return proto


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
