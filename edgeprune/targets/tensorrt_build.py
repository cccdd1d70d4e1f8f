"""TensorRT engine building: ONNX + profile -> serialized engine, cached on disk.

Written against the TensorRT 10.x Python API (JetPack 6.1/6.2 ship 10.3) using only calls
that still exist in 11.x, except the precision builder flags, which are used only where
they exist (see :func:`build_plan`). Never used: ``EXPLICIT_BATCH`` (gone in 11),
``build_engine`` / ``max_workspace_size`` / binding indices (gone in 10), calibrator
classes (deprecated in 10, gone in 11: INT8 comes from the Q/DQ ONNX).

``tensorrt`` is imported inside functions only; everything here that needs no engine
(build plans, cache keys and paths, error formatting) runs on any machine.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune._io import atomic_write_bytes, atomic_write_json
from edgeprune.errors import OnnxModelError, TargetUnavailableError
from edgeprune.profiles.schema import DeviceProfile

CACHE_KEY_VERSION = 1


class TensorRTBuildError(OnnxModelError):
    """TensorRT's ONNX parser or builder rejected the model (message lists each reason)."""


@dataclass(frozen=True)
class BuildPlan:
    """How one TensorRT version builds one profile's precision.

    Attributes:
        network_flags: ``NetworkDefinitionCreationFlag`` member names to set.
        builder_flags: ``BuilderFlag`` member names to set.
        fp16_onnx: Convert the model to FP16 tensors first (strongly typed FP16, 11.x).
        note: What the plan does, for reports.
    """

    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    fp16_onnx: bool
    note: str


def build_plan(precision: str, has_precision_flags: bool) -> BuildPlan:
    """The network/builder flags for ``precision`` on a TensorRT with or without FP16/INT8 flags.

    TensorRT 10.x (``has_precision_flags``): weakly typed network, ``FP16`` flag for fp16,
    ``INT8`` + ``FP16`` for a Q/DQ model (Q/DQ layers run INT8, the rest may run FP16).
    TensorRT 11.x: strongly typed (always on; the flag is set where it still exists), FP16
    from an FP16 ONNX, INT8 from the Q/DQ nodes with unquantized layers in FP32.
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"unknown precision {precision}")
    if has_precision_flags:
        flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}[precision]
        return BuildPlan((), flags, False, f"TensorRT 10.x weak typing, builder flags {flags}")
    return BuildPlan(
        ("STRONGLY_TYPED",),
        (),
        precision == "fp16",
        "strongly typed network: precision from the ONNX tensor types"
        + (" (FP16 ONNX converted offline)" if precision == "fp16" else ""),
    )


def engine_settings(profile: DeviceProfile) -> dict[str, Any]:
    """The profile settings that change the engine (runtime-only ones excluded).

    ``cuda_graph``, ``data_transfers`` and ``spin_wait`` change how an engine is timed, not
    the engine, so changing them must not force a rebuild; the timing cache only speeds up
    the build.
    """
    trt = profile.tensorrt
    if trt is None:
        raise ValueError(f"profile '{profile.name}' has no tensorrt settings")
    return {
        "precision": profile.precision,
        "batch": profile.batch,
        "input_shape": list(profile.input_shape),
        "workspace_mb": trt.workspace_mb,
        "builder_optimization_level": trt.builder_optimization_level,
        "dla_core": trt.dla_core,
        "gpu_fallback": trt.gpu_fallback if trt.dla_core is not None else None,
    }


def engine_cache_key(
    onnx_sha256: str, profile: DeviceProfile, trt_version: str, gpu_name: str
) -> str:
    """sha256 of a canonical JSON of everything an engine depends on.

    Engines are valid only for the TensorRT version and the GPU that built them, so both
    are part of the key along with the model hash and :func:`engine_settings`.
    """
    doc = {
        "v": CACHE_KEY_VERSION,
        "onnx_sha256": onnx_sha256,
        "engine": engine_settings(profile),
        "tensorrt_version": trt_version,
        "gpu_name": gpu_name,
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "unknown"


def engine_cache_dir(cache_dir: Path | None = None) -> Path:
    """``<cache root>/engines`` (cache root: ``cache_dir``, ``$EDGEPRUNE_CACHE`` or
    ``~/.cache/edgeprune``)."""
    from edgeprune.data.cache import cache_root

    return cache_root(cache_dir) / "engines"


def timing_cache_path(trt_version: str, gpu_name: str, cache_dir: Path | None = None) -> Path:
    """One timing cache per (TensorRT version, GPU): tactic timings are valid only there."""
    return engine_cache_dir(cache_dir) / "timing" / f"{_slug(trt_version)}__{_slug(gpu_name)}.cache"


@dataclass(frozen=True)
class ParserErrorInfo:
    """One entry of ``OnnxParser``'s error list."""

    code: str
    desc: str
    node: int = -1
    node_name: str = ""
    node_operator: str = ""


def format_parser_errors(onnx_name: str, errors: Sequence[ParserErrorInfo]) -> str:
    """All parser errors as one message: what failed, where, and what to do."""
    parts = []
    for e in errors:
        where = f"node {e.node}" if e.node >= 0 else "graph"
        if e.node_name or e.node_operator:
            where += f" '{e.node_name}' ({e.node_operator})"
        parts.append(f"{where}: {e.desc} [{e.code}]")
    return (
        f"TensorRT's ONNX parser rejected {onnx_name} with {len(errors)} error(s): "
        + "; ".join(parts)
        + " — run `check_tensorrt_ops` on the model and replace the listed layers"
    )


def _parser_errors(parser: Any) -> list[ParserErrorInfo]:
    out = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        # node_name()/node_operator() exist from TensorRT 9; older parsers give only node().
        name = getattr(e, "node_name", lambda: "")()
        op = getattr(e, "node_operator", lambda: "")()
        out.append(ParserErrorInfo(str(e.code()), str(e.desc()), int(e.node()), name, op))
    parser.clear_errors()
    return out


def make_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that prints warnings and keeps error messages for exceptions."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                self.errors.append(msg)
            if int(severity) <= int(trt.ILogger.WARNING):
                print(f"[TensorRT] {msg}")

    return _Logger()


@dataclass(frozen=True)
class EngineBuild:
    """An engine file ready to deserialize, and how it came to be."""

    path: Path
    key: str
    cache_hit: bool
    build_s: float
    plan: BuildPlan
    timing_cache: Path | None


def _network_flags(trt: Any, names: Sequence[str]) -> int:
    flags = 0
    for name in names:
        member = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if member is not None:  # 11.x may drop flags that became the only behaviour
            flags |= 1 << int(member)
    return flags


def _set_shapes(builder: Any, network: Any, config: Any, profile: DeviceProfile) -> None:
    full = tuple(profile.full_input_shape)
    if network.num_inputs != 1:
        raise OnnxModelError(
            f"the model has {network.num_inputs} inputs; edgeprune measures single-input models"
        )
    inp = network.get_input(0)
    shape = tuple(inp.shape)
    if any(d == -1 for d in shape):
        opt = builder.create_optimization_profile()
        opt.set_shape(inp.name, full, full, full)
        config.add_optimization_profile(opt)
    elif shape != full:
        raise OnnxModelError(
            f"the model's input is {list(shape)} but profile '{profile.name}' feeds "
            f"{list(full)}; re-export the model for this profile"
        )


def _configure_dla(trt: Any, builder: Any, config: Any, profile: DeviceProfile) -> None:
    assert profile.tensorrt is not None
    core = profile.tensorrt.dla_core
    if core is None:
        return
    n = builder.num_DLA_cores
    if core >= n:
        raise TargetUnavailableError(
            f"profile '{profile.name}' asks for DLA core {core} but this device has {n} "
            "(Orin Nano and discrete GPUs have none): use the GPU variant of the profile"
        )
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    if profile.tensorrt.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def build_engine(
    trt: Any,
    onnx_path: Path,
    profile: DeviceProfile,
    key: str,
    trt_version: str,
    gpu_name: str,
    cache_dir: Path | None = None,
) -> EngineBuild:
    """Build (or reuse) the engine for ``onnx_path`` under ``profile``.

    Raises:
        TensorRTBuildError: the parser rejected the model (all its errors in one message)
            or ``build_serialized_network`` returned nothing.
        TargetUnavailableError: the profile asks for a DLA core the device lacks.
    """
    assert profile.tensorrt is not None
    settings = profile.tensorrt
    plan = build_plan(profile.precision, hasattr(trt.BuilderFlag, "FP16"))
    root = engine_cache_dir(cache_dir)
    engine_path = root / f"{key}.engine"
    tc_path = timing_cache_path(trt_version, gpu_name, cache_dir) if settings.timing_cache else None
    if engine_path.is_file():
        return EngineBuild(engine_path, key, True, 0.0, plan, tc_path)

    source = onnx_path
    if plan.fp16_onnx:
        from edgeprune.calibration.fp16 import convert_fp16, is_fp16_model

        if not is_fp16_model(onnx_path):
            source = convert_fp16(onnx_path, root / f"{key}.fp16.onnx")

    t0 = time.perf_counter()
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, plan.network_flags))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        raise TensorRTBuildError(format_parser_errors(onnx_path.name, _parser_errors(parser)))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    config.builder_optimization_level = settings.builder_optimization_level
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    _configure_dla(trt, builder, config, profile)
    if tc_path is not None:
        saved = tc_path.read_bytes() if tc_path.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(saved), ignore_mismatch=False)
    _set_shapes(builder, network, config, profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        why = "; ".join(logger.errors[-3:]) or "no reason logged"
        raise TensorRTBuildError(
            f"TensorRT could not build {onnx_path.name} for profile '{profile.name}': {why} — "
            "raise tensorrt.workspace_mb or lower builder_optimization_level"
        )
    if tc_path is not None:
        atomic_write_bytes(tc_path, bytes(config.get_timing_cache().serialize()))
    atomic_write_bytes(engine_path, bytes(serialized))
    build_s = time.perf_counter() - t0
    atomic_write_json(
        engine_path.with_suffix(".json"),
        {
            "key": key,
            "onnx": str(onnx_path),
            "tensorrt_version": trt_version,
            "gpu_name": gpu_name,
            "engine": engine_settings(profile),
            "plan": plan.note,
            "build_s": build_s,
        },
    )
    return EngineBuild(engine_path, key, False, build_s, plan, tc_path)
