"""TensorRT target (NVIDIA GPUs and Jetson): ONNX + profile -> engine -> trtexec-style figures.

Needs TensorRT >= 10 (JetPack 6.x ships 10.3) and a CUDA device with a buffer backend
(torch with CUDA, else pycuda). ``tensorrt``, ``torch.cuda`` and ``pycuda`` are imported
inside functions only, so this module imports anywhere and the target reports itself
unavailable with one line saying what is missing.

Layout: :mod:`.tensorrt_build` builds and caches engines, :mod:`.tensorrt_run` runs and
times them, :mod:`.trt_ops` checks operator support before any build.

``measure()`` returns the host-clock ``Latency`` as a :class:`LatencyStats`; GPU Compute
Time, H2D/D2H Latency, Enqueue Time and Throughput (qps) are summarised in its
``settings["metrics"]``; :meth:`TrtTarget.measure_all` returns them all as
:class:`~edgeprune.targets.tensorrt_run.TrtMeasurement`.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune._io import sha256_file
from edgeprune.errors import OnnxModelError, ProfileError, TargetUnavailableError
from edgeprune.profiles.schema import DeviceProfile, MeasurementSettings
from edgeprune.targets.base import LatencyStats, Prepared, register_target
from edgeprune.targets.tensorrt_build import (
    EngineBuild,
    TensorRTBuildError,
    build_engine,
    engine_cache_key,
    make_logger,
)
from edgeprune.targets.tensorrt_run import PyCuda, TorchCuda, TrtMeasurement, TrtRunner
from edgeprune.targets.timing import random_input
from edgeprune.targets.trt_ops import check_tensorrt_ops, parse_version

__all__ = [
    "TensorRTBuildError",
    "TrtPrepared",
    "TrtTarget",
    "engine_cache_key",
    "profile_available",
    "profile_problem",
    "trt_version_problem",
]

MIN_VERSION = (10, 0)
_JETPACK_OF = {8: "JetPack 5", 7: "JetPack 4"}
_INSTALL = (
    "on a Jetson it comes with JetPack 6 (python3-libnvinfer), on x86 with an NVIDIA GPU "
    "from `pip install tensorrt`"
)


def trt_version_problem(version: str) -> str | None:
    """Why this TensorRT version cannot be used (None when it can)."""
    major, minor = parse_version(version)
    if (major, minor) >= MIN_VERSION:
        return None
    jp = _JETPACK_OF.get(major)
    found = f"TensorRT {major}.{minor} found" + (f" ({jp})" if jp else "")
    return f"{found}: edgeprune needs TensorRT >= 10 (JetPack 6)"


def profile_problem(profile: DeviceProfile) -> str | None:
    """What makes a TensorRT profile unusable on any machine (None when nothing does)."""
    if profile.runtime != "tensorrt":
        return f"profile '{profile.name}' uses runtime '{profile.runtime}', not tensorrt"
    cfg = profile.tensorrt
    if cfg is None:
        return f"profile '{profile.name}' has runtime tensorrt but no `tensorrt:` section"
    if cfg.device_tensorrt_version and trt_version_problem(cfg.device_tensorrt_version):
        major, minor = parse_version(cfg.device_tensorrt_version)
        jetpack = f"JetPack {cfg.jetpack}" if cfg.jetpack else "its JetPack"
        return (
            f"profile '{profile.name}': {profile.device or 'the device'} runs {jetpack} with "
            f"TensorRT {major}.{minor}; edgeprune needs TensorRT >= 10 (JetPack 6) — measure "
            "it with an onnxruntime profile through `edgeprune agent`, or trtexec on the device"
        )
    if cfg.dla_core is not None and profile.precision == "fp32":
        return (
            f"profile '{profile.name}' puts the model on DLA core {cfg.dla_core} in fp32; the "
            "DLA runs fp16 or int8 only: set precision fp16 or int8, or drop dla_core"
        )
    if parse_version(cfg.min_tensorrt_version) < MIN_VERSION:
        return (
            f"profile '{profile.name}' accepts TensorRT {cfg.min_tensorrt_version}; edgeprune "
            "supports TensorRT >= 10: set min_tensorrt_version to 10.0 or later"
        )
    return None


def _import_trt() -> Any:
    import tensorrt as trt

    return trt


def _cuda_backend_name() -> str | None:
    """``torch`` when torch sees a CUDA device, else ``pycuda`` when it does, else None."""
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return "torch"
    if importlib.util.find_spec("pycuda") is not None:
        try:
            import pycuda.driver as cuda

            cuda.init()
            if cuda.Device.count() > 0:
                return "pycuda"
        except Exception:  # pycuda raises its own LogicError/RuntimeError without a driver
            return None
    return None


def read_power_state() -> dict[str, Any]:
    """The Jetson power mode now (``nvpmodel -q``), or Nones off Jetson."""
    exe = shutil.which("nvpmodel")
    if exe is None:
        return {"nvpmodel_name": None, "nvpmodel": None}
    try:
        out = subprocess.run(
            [exe, "-q"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"nvpmodel_name": None, "nvpmodel": None}
    name, mode = parse_nvpmodel_query(out)
    return {"nvpmodel_name": name, "nvpmodel": mode}


def parse_nvpmodel_query(text: str) -> tuple[str | None, int | None]:
    """``NV Power Mode: MAXN`` + a line with the id -> ``("MAXN", 0)``."""
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    ids = re.findall(r"^\s*(\d+)\s*$", text, flags=re.M)
    return (m.group(1) if m else None, int(ids[0]) if ids else None)


@dataclass
class TrtPrepared:
    """An engine loaded and bound to buffers, ready to run (see :class:`Prepared`)."""

    path: Path
    profile: DeviceProfile
    runner: TrtRunner
    build: EngineBuild
    info: dict[str, Any]
    input_name: str = ""
    input_shape: tuple[int, ...] = ()
    _closed: bool = field(default=False, repr=False)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one batch (float32 of the profile's shape); return the first output."""
        if self._closed:
            raise OnnxModelError(f"engine for {self.path} is closed; prepare it again")
        return self.runner.run(x)

    def close(self) -> None:
        if not self._closed:
            self.runner.close()
            self._closed = True


def _has_qdq(onnx_path: Path) -> bool:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)


@register_target("tensorrt")
class TrtTarget:
    """Builds TensorRT engines on this device and times them like trtexec.

    Args:
        cache_dir: Cache root for engines and timing caches (default ``$EDGEPRUNE_CACHE``
            or ``~/.cache/edgeprune``; engines go to ``<root>/engines``).
    """

    name = "tensorrt"

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir

    def available(self) -> tuple[bool, str]:
        """(True, "") with TensorRT >= 10 and a CUDA device, else (False, what is missing)."""
        if importlib.util.find_spec("tensorrt") is None:
            return False, f"the tensorrt Python package is not installed: {_INSTALL}"
        try:
            trt = _import_trt()
        except (ImportError, OSError) as exc:  # package present, libnvinfer missing/broken
            return False, f"tensorrt does not import ({exc}); reinstall it: {_INSTALL}"
        problem = trt_version_problem(str(trt.__version__))
        if problem:
            return False, problem
        if _cuda_backend_name() is None:
            return False, (
                "no CUDA device reachable through torch or pycuda: TensorRT needs an NVIDIA "
                "GPU; install pycuda or a CUDA build of torch on the device"
            )
        return True, ""

    def available_for(self, profile: DeviceProfile) -> tuple[bool, str]:
        """:meth:`available` plus what the profile itself rules out (e.g. TensorRT 8.5)."""
        problem = profile_problem(profile)
        return (False, problem) if problem else self.available()

    def _backend(self) -> Any:
        return TorchCuda() if _cuda_backend_name() == "torch" else PyCuda()

    def prepare(self, onnx_path: Path, profile: DeviceProfile) -> TrtPrepared:
        """Check ops, build (or reuse) the engine for this device, load it and bind buffers.

        Raises:
            ProfileError: the profile cannot work with this target (see :func:`profile_problem`).
            TargetUnavailableError: no TensorRT >= 10 or no CUDA device here.
            OnnxModelError: missing file, unsupported ops, an FP32 model for an int8
                profile, or a shape that does not fit the profile.
            TensorRTBuildError: the parser or builder rejected the model.
        """
        problem = profile_problem(profile)
        if problem:
            raise ProfileError(problem)
        ok, reason = self.available()
        if not ok:
            raise TargetUnavailableError(f"profile '{profile.name}' needs tensorrt: {reason}")
        path = Path(onnx_path)
        if not path.is_file():
            raise OnnxModelError(f"{path} does not exist; export one with `edgeprune export`")
        trt = _import_trt()
        version = str(trt.__version__)
        report = check_tensorrt_ops(path, version)
        if not report.ok:
            raise OnnxModelError(
                "TensorRT cannot parse this model: " + report.summary().replace("\n", "; ")
            )
        if profile.precision == "int8" and not _has_qdq(path):
            raise OnnxModelError(
                f"profile '{profile.name}' is int8 but {path.name} has no Q/DQ nodes: pass the "
                "model from `edgeprune export --int8` (model.int8.onnx)"
            )
        backend = self._backend()
        try:
            gpu = backend.gpu_name()
            key = engine_cache_key(sha256_file(path), profile, version, gpu)
            build = build_engine(trt, path, profile, key, version, gpu, self.cache_dir)
            runner = self._load(trt, build, profile, backend)
        except BaseException:
            backend.close()  # pycuda: pop the context pushed for this target
            raise
        # Read once per prepare: `nvpmodel -q` is a subprocess, and the mode is set by hand.
        power = profile.power.model_dump() if profile.power else None
        now = read_power_state()
        matches = None
        if power and power.get("nvpmodel_name") and now["nvpmodel_name"]:
            matches = power["nvpmodel_name"] == now["nvpmodel_name"]
        info = {
            "tensorrt_version": version,
            "gpu_name": gpu,
            "cuda_backend": backend.name,
            "engine_key": key,
            "engine_cache_hit": build.cache_hit,
            "engine_build_s": build.build_s,
            "build_plan": build.plan.note,
            "timing_cache": str(build.timing_cache) if build.timing_cache else None,
            "power_profile": power,
            "power_observed": now,
            "power_mode_matches": matches,
        }
        return TrtPrepared(
            path, profile, runner, build, info, runner.input_name, runner.input_shape
        )

    @staticmethod
    def _load(trt: Any, build: EngineBuild, profile: DeviceProfile, backend: Any) -> TrtRunner:
        runtime = trt.Runtime(make_logger(trt))
        assert profile.tensorrt is not None
        if profile.tensorrt.dla_core is not None:
            runtime.DLA_core = profile.tensorrt.dla_core
        engine = runtime.deserialize_cuda_engine(build.path.read_bytes())
        if engine is None:
            raise TensorRTBuildError(
                f"cannot load engine {build.path} (corrupt, or from another TensorRT/GPU): "
                "delete it and prepare again"
            )
        return TrtRunner(trt, engine, profile.full_input_shape, backend)

    def settings_of(self, prepared: TrtPrepared) -> dict[str, Any]:
        """What changes a TensorRT figure, recorded alongside it (power state included)."""
        prof, cfg = prepared.profile, prepared.profile.tensorrt
        assert cfg is not None
        return {
            "runtime": "tensorrt",
            **prepared.info,
            "profile": prof.name,
            "precision": prof.precision,
            "batch": prof.batch,
            "input_shape": list(prof.full_input_shape),
            "workspace_mb": cfg.workspace_mb,
            "builder_optimization_level": cfg.builder_optimization_level,
            "dla_core": cfg.dla_core,
            "data_transfers": cfg.data_transfers,
            "cuda_graph": cfg.cuda_graph,
            "spin_wait": cfg.spin_wait,
            "latency_clock": "host (H2D + compute + D2H + sync)"
            if cfg.data_transfers
            else "host (compute + sync)",
        }

    def measure_all(
        self,
        prepared: Prepared,
        inputs: np.ndarray | None,
        settings: MeasurementSettings,
        *,
        warmup: bool = True,
        seed: int = 0,
    ) -> TrtMeasurement:
        """Every trtexec metric of one timed run (see :mod:`.tensorrt_run`)."""
        if not isinstance(prepared, TrtPrepared):
            raise TypeError(f"TrtTarget.measure needs a TrtPrepared, got {type(prepared)}")
        cfg = prepared.profile.tensorrt
        assert cfg is not None
        # Values do not change a CNN's latency, but time the caller's inputs when given.
        x = inputs if inputs is not None else random_input(prepared.input_shape, seed)
        prepared.run(x)  # leaves x in the bound input buffer that the timed loop copies
        m = prepared.runner.measure(settings, cfg, warmup=warmup, batch=prepared.profile.batch)
        return TrtMeasurement(m.stats, m.throughput_qps, m.batch, self.settings_of(prepared))

    def measure(
        self,
        prepared: Prepared,
        inputs: np.ndarray | None,
        settings: MeasurementSettings,
        *,
        warmup: bool = True,
        seed: int = 0,
    ) -> LatencyStats:
        """Host-clock Latency; the other trtexec metrics are in ``settings["metrics"]``."""
        return self.measure_all(prepared, inputs, settings, warmup=warmup, seed=seed).latency


def profile_available(profile: DeviceProfile) -> tuple[bool, str]:
    """For `edgeprune profiles`: can this TensorRT profile be measured on this machine?"""
    return TrtTarget().available_for(profile)
