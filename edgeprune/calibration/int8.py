"""INT8 by explicit quantization: calibrate on the user's data, write a quantized ONNX model,
with the recipe that suits the runtime it will run on.

TensorRT: symmetric Q/DQ (``trt-s8s8-qdq``). TensorRT 10 builds it with INT8 enabled,
TensorRT 11 reads the precision from the Q/DQ nodes; the deprecated calibrator classes are
never used. TensorRT accepts only zero zero-points, so activations are quantized
symmetrically, weights per output channel; biases stay float because TensorRT's
DequantizeLinear does not take INT32.

ONNX Runtime on CPU: its fast integer kernels (MLAS, VNNI) expect unsigned 8-bit
activations and signed weights; on an AMD EPYC with AVX-512 VNNI the symmetric S8S8 Q/DQ
model above ran 0.49x the speed of FP32 while U8S8 ran 1.78x (QDQ) and 1.85x (QOperator).
So ORT CPU profiles try :data:`ORT_CPU_RECIPES` on the model and keep the fastest, measured
interleaved with FP32 (:func:`choose_recipe`); when none beats FP32 the result says so.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeprune._io import atomic_write_bytes
from edgeprune.data import normalize
from edgeprune.errors import DataError, ExportError, OnnxModelError
from edgeprune.profiles.schema import DeviceProfile, MeasurementSettings

CALIB_METHODS = ("minmax", "entropy", "percentile")

try:  # onnxruntime is a core dependency; keep the class importable even without it
    from onnxruntime.quantization import CalibrationDataReader as _ReaderBase
except ImportError:  # pragma: no cover - onnxruntime missing
    _ReaderBase = object


class CalibrationReader(_ReaderBase):
    """Feeds ``n_samples`` normalised images, chosen deterministically, to ORT's calibrator.

    Args:
        data_x: uint8 images ``(N, C, H, W)`` (torch tensor or numpy array), or float32
            model inputs already normalised (``mean`` and ``std`` are then not used).
        mean: Per-channel mean in [0, 1] scale (the training data's).
        std: Per-channel std in [0, 1] scale.
        input_name: The ONNX graph input name.
        n_samples: How many images to calibrate on (capped at ``N``; rounded down to a
            multiple of ``batch`` because exported models have a static batch).
        batch: Images per ``get_next()`` (the model's batch size).
        seed: Selects which images are used; the same seed gives the same samples.

    Raises:
        DataError: No images, a non-uint8 array, or fewer images than one batch.
    """

    def __init__(
        self,
        data_x: torch.Tensor | np.ndarray,
        mean: Sequence[float],
        std: Sequence[float],
        input_name: str,
        n_samples: int = 256,
        batch: int = 1,
        seed: int = 0,
    ) -> None:
        x = torch.as_tensor(data_x)
        if x.dtype not in (torch.uint8, torch.float32) or x.ndim != 4:
            raise DataError(
                f"calibration data must be uint8 (N, C, H, W) images or float32 model inputs, "
                f"got {x.dtype} {list(x.shape)}; pass DataSplits.train_x"
            )
        if batch < 1 or n_samples < 1:
            raise DataError(f"calib samples ({n_samples}) and batch ({batch}) must be >= 1")
        n = min(n_samples, x.shape[0]) // batch * batch
        if n == 0:
            raise DataError(
                f"calibration needs at least one batch of {batch} images; the data has "
                f"{x.shape[0]}: use more data or a smaller batch"
            )
        rng = np.random.default_rng(seed)
        # Sorted indices: the same samples in the same order for a given seed.
        self.indices = np.sort(rng.choice(x.shape[0], size=n, replace=False))
        self.input_name = input_name
        self.batch = batch
        picked = x[torch.from_numpy(self.indices)]
        # float32: model inputs, normalised already (a user's own pipeline)
        self._x = (picked if x.is_floating_point() else normalize(picked, mean, std)).numpy()
        self._pos = 0

    @property
    def n_samples(self) -> int:
        return len(self.indices)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch as ``{input_name: float32 array}``, or None when done."""
        if self._pos >= self.n_samples:
            return None
        out = self._x[self._pos : self._pos + self.batch]
        self._pos += self.batch
        return {self.input_name: np.ascontiguousarray(out, dtype=np.float32)}

    def rewind(self) -> None:
        """Start again from the first batch (to calibrate a second time)."""
        self._pos = 0


def _calib_method(method: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    table = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in table:
        raise ExportError(f"unknown calibration method '{method}'; use one of {CALIB_METHODS}")
    return table[method]


@dataclass(frozen=True)
class Recipe:
    """How to quantize: onnxruntime's ``quantize_static`` settings, named.

    Attributes:
        name: Short name, recorded with the model.
        quant_format: ``qdq`` (QuantizeLinear/DequantizeLinear pairs) or ``qoperator``
            (QLinearConv and friends: onnxruntime only).
        activations: ``s8`` or ``u8``.
        symmetric_activations: Zero zero-points for activations (TensorRT needs them).
        reduce_range: 7-bit weights, for CPUs without VNNI where U8S8 products can saturate.
        quantize_bias: INT32 biases (TensorRT's DequantizeLinear takes none).
        runtime: The runtime the recipe is for.
        why: One line for reports.
    """

    name: str
    quant_format: str
    activations: str
    symmetric_activations: bool
    reduce_range: bool
    quantize_bias: bool
    runtime: str
    why: str


TRT_RECIPE = Recipe(
    "trt-s8s8-qdq", "qdq", "s8", True, False, False, "tensorrt",
    "TensorRT explicit quantization: symmetric S8 Q/DQ, float biases",
)  # fmt: skip
ORT_CPU_RECIPES = (
    Recipe(
        "ort-u8s8-qdq", "qdq", "u8", False, False, True, "onnxruntime",
        "ONNX Runtime CPU: U8 activations, S8 per-channel weights, Q/DQ (fused by ORT)",
    ),
    Recipe(
        "ort-u8s8-qoperator", "qoperator", "u8", False, False, True, "onnxruntime",
        "ONNX Runtime CPU: U8S8 QLinearConv operators",
    ),
    Recipe(
        "ort-u8s8-qdq-reduce-range", "qdq", "u8", False, True, True, "onnxruntime",
        "ONNX Runtime CPU, 7-bit weights (advised without VNNI; measured, not assumed)",
    ),
    TRT_RECIPE,
)  # fmt: skip
RECIPES = {r.name: r for r in ORT_CPU_RECIPES}


def candidate_recipes(profile: DeviceProfile) -> tuple[Recipe, ...]:
    """The recipes worth trying on ``profile``'s runtime (TensorRT: the one it accepts)."""
    if profile.runtime == "tensorrt":
        return (TRT_RECIPE,)
    return ORT_CPU_RECIPES


def quantize_int8(
    fp32_onnx: str | Path,
    out_path: str | Path,
    reader: CalibrationReader | _ArrayReader,
    *,
    per_channel: bool = True,
    method: str = "minmax",
    recipe: Recipe = TRT_RECIPE,
) -> Path:
    """Calibrate ``fp32_onnx`` on ``reader`` and write it quantized by ``recipe``.

    Runs ``quant_pre_process`` (shape inference + graph cleanup) and then
    ``quantize_static`` with the recipe's format and types (default: TensorRT-compatible
    symmetric S8 Q/DQ).

    Args:
        fp32_onnx: The validated float32 export.
        out_path: Where the INT8 model goes (written atomically).
        reader: Calibration batches (see :class:`CalibrationReader`).
        per_channel: Per-output-channel weight scales (recommended for pruned convs).
        method: ``minmax`` (default), ``entropy`` or ``percentile``.
        recipe: See :data:`ORT_CPU_RECIPES` and :data:`TRT_RECIPE`.

    Returns:
        ``out_path``.

    Raises:
        OnnxModelError: ``fp32_onnx`` is missing.
        ExportError: quantization failed (the message carries onnxruntime's reason).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, out_path = Path(fp32_onnx), Path(out_path)
    if not src.is_file():
        raise OnnxModelError(f"{src} does not exist; export the FP32 model first")
    calibrate_method = _calib_method(method)
    reader.rewind()
    with tempfile.TemporaryDirectory(prefix="edgeprune-int8-") as tmp:
        pre, q = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        try:
            quant_pre_process(str(src), str(pre))
            quantize_static(
                str(pre),
                str(q),
                reader,
                quant_format=QuantFormat.QDQ
                if recipe.quant_format == "qdq"
                else QuantFormat.QOperator,
                per_channel=per_channel,
                reduce_range=recipe.reduce_range,
                activation_type=QuantType.QInt8 if recipe.activations == "s8" else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calibrate_method,
                extra_options={
                    "ActivationSymmetric": recipe.symmetric_activations,
                    "WeightSymmetric": True,
                    "QuantizeBias": recipe.quantize_bias,
                },
            )
        except Exception as exc:  # ORT raises plain Exceptions/RuntimeErrors from C++
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise ExportError(
                f"INT8 quantization of {src.name} failed: {first}; check the calibration "
                "data matches the model's input"
            ) from exc
        atomic_write_bytes(out_path, q.read_bytes())
    return out_path


@dataclass(frozen=True)
class _Eval:
    top1: float
    n: int


def _top1(prepared: Any, x_uint8: torch.Tensor, y: torch.Tensor, mean: Any, std: Any) -> _Eval:
    batch = prepared.input_shape[0]
    n = x_uint8.shape[0] // batch * batch
    correct = 0
    for i in range(0, n, batch):
        xb = normalize(x_uint8[i : i + batch], mean, std).numpy()
        logits = prepared.run(xb)
        correct += int((logits.argmax(axis=1) == y[i : i + batch].numpy()).sum())
    return _Eval(100.0 * correct / max(n, 1), n)


def compare_int8(
    fp32_onnx: str | Path,
    int8_onnx: str | Path,
    data: Any,
    profile: DeviceProfile,
    *,
    split: str = "test",
    settings: MeasurementSettings | None = None,
) -> dict[str, Any]:
    """Accuracy and latency of the INT8 model against its FP32 source on the ORT target.

    Latency blocks of the two models are interleaved (``settings.blocks`` each) so a noisy
    shared CPU hurts both alike; the medians are compared.

    Args:
        fp32_onnx: The float32 model.
        int8_onnx: Its Q/DQ INT8 version.
        data: ``DataSplits`` (uint8 images + labels, mean/std).
        profile: An onnxruntime profile (threads etc.); batch and input shape must match.
        split: ``test`` (default) or ``val``.
        settings: Measurement rules (default: the profile's).

    Returns:
        ``top1_fp32``, ``top1_int8``, ``top1_drop_points``, ``n_eval``, ``p50/p90_*_ms``,
        ``speedup_p50`` (fp32 / int8), file sizes and the latency settings.
    """
    from edgeprune.targets.onnxruntime import OrtTarget

    if split not in ("test", "val"):
        raise DataError(f"split must be 'test' or 'val', not '{split}'")
    x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
    if x.shape[0] == 0:
        raise DataError(f"the data has no {split} split; use split='val'")
    target, settings = OrtTarget(), settings or profile.measurement
    fp32 = target.prepare(Path(fp32_onnx), profile)
    int8 = target.prepare(Path(int8_onnx), profile)
    try:
        acc32 = _top1(fp32, x, y, data.mean, data.std)
        acc8 = _top1(int8, x, y, data.mean, data.std)
        stats: dict[str, Any] = {}
        for block in range(settings.blocks):
            for key, prep in (("fp32", fp32), ("int8", int8)):
                s = target.measure(prep, None, settings, warmup=block == 0)
                stats[key] = s if key not in stats else stats[key].merged(s)
    finally:
        fp32.close()
        int8.close()
    s32, s8 = stats["fp32"], stats["int8"]
    return {
        "split": split,
        "n_eval": acc32.n,
        "top1_fp32": acc32.top1,
        "top1_int8": acc8.top1,
        "top1_drop_points": acc32.top1 - acc8.top1,
        "p50_fp32_ms": s32.median_ms,
        "p50_int8_ms": s8.median_ms,
        "p90_fp32_ms": s32.p90_ms,
        "p90_int8_ms": s8.p90_ms,
        "speedup_p50": s32.median_ms / s8.median_ms,
        "size_fp32_bytes": Path(fp32_onnx).stat().st_size,
        "size_int8_bytes": Path(int8_onnx).stat().st_size,
        "latency_settings": dict(s32.settings),
    }


def export_int8(
    fp32_onnx: str | Path,
    out_path: str | Path,
    data: Any,
    *,
    n_samples: int = 256,
    seed: int = 0,
    per_channel: bool = True,
    method: str = "minmax",
    recipe: Recipe = TRT_RECIPE,
) -> Path:
    """Calibrate on ``n_samples`` training images of ``data`` and write the INT8 model.

    The input name and the (static) batch are read from ``fp32_onnx``, so this is what
    ``edgeprune export --int8 --calib-data D --calib-samples N`` calls.

    Args:
        fp32_onnx: The float32 export.
        out_path: The INT8 model's path (e.g. ``model.int8.onnx``).
        data: ``DataSplits``, or a source for :func:`edgeprune.data.load_data` (``"digits"``,
            a path) loaded at the model's input size; calibration uses the training split,
            never the test split. Or float32 model inputs ``(N, C, H, W)``, normalised.
        n_samples: Calibration images.
        seed: Which images (deterministic).
        per_channel: Per-channel weight scales.
        method: ``minmax``, ``entropy`` or ``percentile``.

    Returns:
        ``out_path``.
    """
    import onnx

    src = Path(fp32_onnx)
    if not src.is_file():
        raise OnnxModelError(f"{src} does not exist; export the FP32 model first")
    graph = onnx.load(str(src), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    inp = next(v for v in graph.input if v.name not in inits)
    dim0 = inp.type.tensor_type.shape.dim[0]
    batch = dim0.dim_value if dim0.HasField("dim_value") and dim0.dim_value > 0 else 1
    if isinstance(data, (str, Path)):
        from edgeprune.data import load_data

        side = inp.type.tensor_type.shape.dim[2].dim_value or 32
        data = load_data(data, image_size=side)
    if isinstance(data, (np.ndarray, torch.Tensor)):  # normalised model inputs
        reader = CalibrationReader(
            data, (), (), inp.name, n_samples=n_samples, batch=batch, seed=seed
        )
    else:
        reader = CalibrationReader(
            data.train_x, data.mean, data.std, inp.name, n_samples=n_samples, batch=batch,
            seed=seed,
        )  # fmt: skip
    return quantize_int8(
        src, out_path, reader, per_channel=per_channel, method=method, recipe=recipe
    )


def choose_recipe(
    fp32_onnx: str | Path,
    out_path: str | Path,
    data: Any,
    profile: DeviceProfile,
    *,
    n_samples: int = 256,
    seed: int = 0,
    settings: MeasurementSettings | None = None,
    max_drop_points: float = 1.0,
) -> dict[str, Any]:
    """Quantize with every recipe for ``profile``'s runtime, measure, keep the best.

    On TensorRT profiles the one recipe TensorRT accepts is written (measuring needs the
    device). On onnxruntime profiles each recipe's model is measured interleaved with the
    FP32 model (:func:`compare_int8`) and scored on the validation split; the fastest whose
    top-1 is within ``max_drop_points`` of FP32 is written to ``out_path``. When no recipe
    is faster than FP32, nothing is written and ``chosen`` is None: INT8 does not pay on
    this CPU, and the numbers say by how much.

    Returns:
        ``{"chosen": name | None, "why": str, "recipes": [{name, speedup_p50, top1_*, ...}],
        "path": str | None}``.
    """
    out_path = Path(out_path)
    recipes = candidate_recipes(profile)
    if profile.runtime == "tensorrt":
        export_int8(fp32_onnx, out_path, data, n_samples=n_samples, seed=seed, recipe=TRT_RECIPE)
        return {
            "chosen": TRT_RECIPE.name,
            "why": TRT_RECIPE.why + " (the only recipe TensorRT builds; measure on the device)",
            "recipes": [{"name": TRT_RECIPE.name, "measured": False}],
            "path": str(out_path),
        }
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeprune-recipes-") as tmp:
        for r in recipes:
            cand = Path(tmp) / f"{r.name}.onnx"
            export_int8(fp32_onnx, cand, data, n_samples=n_samples, seed=seed, recipe=r)
            cmp = compare_int8(fp32_onnx, cand, data, profile, split="val", settings=settings)
            rows.append({"name": r.name, "why": r.why, "measured": True, "path": cand, **cmp})
        ok = [x for x in rows if x["top1_drop_points"] <= max_drop_points]
        best = max(ok, key=lambda x: x["speedup_p50"]) if ok else None
        if best is not None and best["speedup_p50"] > 1.0:
            atomic_write_bytes(out_path, Path(best["path"]).read_bytes())
            chosen, path = best["name"], str(out_path)
            why = (
                f"fastest of {len(rows)} recipes measured against FP32 on this CPU "
                f"({best['speedup_p50']:.2f}x at p50, top-1 {best['top1_drop_points']:+.2f} "
                "points below FP32 on the validation split)"
            )
        else:
            chosen, path = None, None
            fastest = max(rows, key=lambda x: x["speedup_p50"])
            why = (
                f"no INT8 recipe beats FP32 on this CPU within {max_drop_points} point(s) of "
                f"top-1: the fastest, {fastest['name']}, ran {fastest['speedup_p50']:.2f}x "
                "FP32's speed; ship FP32 here"
            )
    for x in rows:
        x.pop("path", None)
    return {"chosen": chosen, "why": why, "recipes": rows, "path": path}


class _ArrayReader(_ReaderBase):
    """Calibration batches from ready float arrays (the latency path: values do not matter)."""

    def __init__(self, input_name: str, arrays: Sequence[np.ndarray]) -> None:
        self.input_name = input_name
        self.arrays = list(arrays)
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self.arrays):
            return None
        self._i += 1
        return {self.input_name: self.arrays[self._i - 1]}

    def rewind(self) -> None:
        self._i = 0


def needs_int8(profile: DeviceProfile) -> bool:
    """True when latency on ``profile`` is that of an INT8 model edgeprune must quantize
    (onnxruntime INT8 profiles; TensorRT quantizes at engine build)."""
    return profile.precision == "int8" and profile.runtime == "onnxruntime"


def profile_recipe(profile: DeviceProfile) -> Recipe:
    """The recipe an INT8 profile ships in (``onnxruntime.int8_recipe``; TensorRT's own)."""
    if profile.runtime == "tensorrt":
        return TRT_RECIPE
    name = profile.onnxruntime.int8_recipe
    if name not in RECIPES:
        raise ExportError(
            f"profile {profile.name}: int8_recipe {name!r} is unknown; use one of "
            f"{', '.join(RECIPES)}"
        )
    return RECIPES[name]


def quantize_for_latency(src: str | Path, dst: str | Path, profile: DeviceProfile) -> Path:
    """Quantize an FP32 graph by the profile's recipe on seeded random calibration data.

    For latency only (the LUT's layer graphs, the search's candidates): the kernels an INT8
    model runs, and so its speed, do not depend on the calibration values; the model that
    ships is calibrated on real images (:func:`export_int8`).
    """
    import onnx

    graph = onnx.load(str(src), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    inp = next(v for v in graph.input if v.name not in inits)
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]
    reader = _ArrayReader(inp.name, arrays)
    return quantize_int8(src, dst, reader, recipe=profile_recipe(profile))
