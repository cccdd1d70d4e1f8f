"""ONNX Runtime target: an ONNX file + a profile's session settings -> measured latency.

``onnxruntime`` is imported inside functions only, so importing ``edgeprune.targets`` stays
cheap and works where onnxruntime is missing (the target then reports itself unavailable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.errors import OnnxModelError, TargetUnavailableError
from edgeprune.profiles.schema import DeviceProfile, MeasurementSettings, OrtSettings
from edgeprune.targets.base import LatencyStats, Prepared, register_target
from edgeprune.targets.timing import cpu_model, random_input, time_loop

_GRAPH_OPT = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_NP_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_INSTALL_HINT = "install it with `pip install onnxruntime` (or onnxruntime-gpu for CUDA/TensorRT)"


def _ort_version() -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return str(ort.__version__)


def session_options(settings: OrtSettings) -> Any:
    """``onnxruntime.SessionOptions`` for a profile's ORT settings."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.intra_op_threads
    opts.inter_op_num_threads = settings.inter_op_threads
    # inter-op threads only act in parallel execution mode; a CNN is a chain of ops, so
    # sequential mode is the fast default and parallel is used only when asked for.
    opts.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL
        if settings.inter_op_threads > 1
        else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    opts.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, _GRAPH_OPT[settings.graph_optimization]
    )
    opts.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0"
    )
    opts.log_severity_level = 3  # errors only: ORT's warnings would flood search logs
    return opts


def _shape_fits(model_shape: Sequence[Any], wanted: Sequence[int]) -> bool:
    # Symbolic (str) or unknown (None) dims accept any size; static dims must match.
    if len(model_shape) != len(wanted):
        return False
    return all(not isinstance(m, int) or m == w for m, w in zip(model_shape, wanted, strict=True))


@dataclass
class OrtPrepared:
    """An onnxruntime session loaded with a profile's settings, ready to run.

    Attributes:
        path: The ONNX file.
        profile: The profile it was prepared for.
        session: The ``onnxruntime.InferenceSession``.
        input_name: Name of the single graph input.
        input_shape: Shape fed to it (the profile's batch + input shape).
        output_name: Name of the first graph output (the one returned by :meth:`run`).
        input_dtype: numpy dtype the graph input expects.
    """

    path: Path
    profile: DeviceProfile
    session: Any
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    input_dtype: Any = np.float32
    _closed: bool = field(default=False, repr=False)

    def _check(self, x: np.ndarray) -> np.ndarray:
        if self._closed:
            raise OnnxModelError(f"session for {self.path} is closed; prepare it again")
        if tuple(x.shape) != self.input_shape:
            raise OnnxModelError(
                f"input of shape {list(x.shape)} does not fit {self.path.name}, prepared for "
                f"{list(self.input_shape)} (profile '{self.profile.name}'); "
                "feed arrays of the profile's batch and input_shape"
            )
        return np.ascontiguousarray(x, dtype=self.input_dtype)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one batch and return the first output (for accuracy checks)."""
        feed = {self.input_name: self._check(x)}  # first: raises cleanly once closed
        out = self.session.run([self.output_name], feed)
        return np.asarray(out[0])

    def close(self) -> None:
        """Release the session (its memory and thread pool)."""
        self.session = None
        self._closed = True


@register_target("onnxruntime")
class OrtTarget:
    """Measures ONNX models with onnxruntime, on the execution provider a profile names."""

    name = "onnxruntime"

    def available(self) -> tuple[bool, str]:
        """Whether onnxruntime with its CPU execution provider is importable here."""
        return self._ep_available("CPUExecutionProvider")

    def available_for(self, profile: DeviceProfile) -> tuple[bool, str]:
        """Whether onnxruntime and the profile's execution provider are usable here."""
        return self._ep_available(profile.onnxruntime.execution_provider)

    def _ep_available(self, ep: str) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return False, f"onnxruntime is not importable ({exc}); {_INSTALL_HINT}"
        eps = ort.get_available_providers()
        if ep not in eps:
            return False, (
                f"execution provider {ep} is not in this onnxruntime {ort.__version__} "
                f"(available: {', '.join(eps)}); install the onnxruntime build that has it "
                "or pick a profile with another execution_provider"
            )
        return True, ""

    def prepare(self, onnx_path: Path, profile: DeviceProfile) -> OrtPrepared:
        """Load ``onnx_path`` in a session configured by ``profile.onnxruntime``.

        Raises:
            TargetUnavailableError: onnxruntime or the profile's execution provider missing.
            OnnxModelError: Missing file, not ONNX, rejected by onnxruntime, or a graph
                input that does not take the profile's shape.
        """
        ok, reason = self.available_for(profile)
        if not ok:
            raise TargetUnavailableError(f"profile '{profile.name}' needs onnxruntime: {reason}")
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.is_file():
            raise OnnxModelError(
                f"{path} does not exist or is not a file; export one with `edgeprune export`"
            )
        ep = profile.onnxruntime.execution_provider
        providers = [ep] if ep == "CPUExecutionProvider" else [ep, "CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(
                str(path), sess_options=session_options(profile.onnxruntime), providers=providers
            )
        except Exception as exc:  # ORT raises its own pybind exception types (not exported)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OnnxModelError(
                f"{path} is not a valid ONNX model or onnxruntime rejects it: {reason}; "
                "export it with `edgeprune export`"
            ) from exc
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            raise OnnxModelError(
                f"{path} has {len(inputs)} graph inputs ({', '.join(i.name for i in inputs)}); "
                "edgeprune measures single-input image models"
            )
        wanted = profile.full_input_shape
        if not _shape_fits(inputs[0].shape, wanted):
            raise OnnxModelError(
                f"{path} takes input shape {list(inputs[0].shape)} but profile "
                f"'{profile.name}' feeds {list(wanted)} (batch + input_shape); re-export the "
                "model for this profile or pick a profile whose batch/input_shape match"
            )
        dtype = _NP_DTYPES.get(inputs[0].type)
        if dtype is None:
            raise OnnxModelError(
                f"{path} input '{inputs[0].name}' has type {inputs[0].type}; "
                "edgeprune feeds float32 or float16 images"
            )
        return OrtPrepared(
            path=path,
            profile=profile,
            session=session,
            input_name=inputs[0].name,
            input_shape=tuple(wanted),
            output_name=outputs[0].name,
            input_dtype=dtype,
        )

    def measure(
        self,
        prepared: Prepared,
        inputs: np.ndarray | None,
        settings: MeasurementSettings,
        *,
        warmup: bool = True,
        seed: int = 0,
    ) -> LatencyStats:
        """Time ``session.run`` with inputs bound once outside the loop.

        Args:
            prepared: From :meth:`prepare`.
            inputs: One batch of the prepared shape; seeded random normal when None.
            settings: Warm-up and stopping rules.
            warmup: Warm up first (False for later blocks of an interleaved benchmark).
            seed: Seed of the random inputs.

        Returns:
            Per-iteration wall times with the settings that shape the figure.
        """
        import onnxruntime as ort

        if not isinstance(prepared, OrtPrepared):
            raise TypeError(f"OrtTarget.measure needs an OrtPrepared, got {type(prepared)}")
        x = prepared._check(random_input(prepared.input_shape, seed) if inputs is None else inputs)
        session = prepared.session
        # IOBinding keeps input conversion and feed-dict handling out of the timed call, so
        # the loop times ORT's inference itself.
        binding = session.io_binding()
        binding.bind_ortvalue_input(prepared.input_name, ort.OrtValue.ortvalue_from_numpy(x))
        for out in session.get_outputs():
            binding.bind_output(out.name, "cpu")

        def run_once() -> None:
            session.run_with_iobinding(binding)

        times_ms = time_loop(run_once, settings, warmup=warmup)
        return LatencyStats.from_times(times_ms, self.settings_of(prepared))

    @staticmethod
    def settings_of(prepared: OrtPrepared) -> dict[str, Any]:
        """What changes an ORT figure, recorded alongside it."""
        prof, ort_cfg = prepared.profile, prepared.profile.onnxruntime
        return {
            "runtime": "onnxruntime",
            "onnxruntime_version": _ort_version(),
            "execution_provider": ort_cfg.execution_provider,
            "intra_op_threads": ort_cfg.intra_op_threads,
            "inter_op_threads": ort_cfg.inter_op_threads,
            "execution_mode": "parallel" if ort_cfg.inter_op_threads > 1 else "sequential",
            "allow_spinning": ort_cfg.allow_spinning,
            "graph_optimization": ort_cfg.graph_optimization,
            "io_binding": True,
            "cpu_model": cpu_model(),
            "batch": prof.batch,
            "input_shape": list(prepared.input_shape),
            "precision": prof.precision,
            "profile": prof.name,
        }
