"""The target contract: an ONNX file + a device profile -> latency figures.

Targets are small classes registered by name; heavy runtime imports (onnxruntime,
tensorrt, pycuda) happen inside their own modules, never here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgeprune.errors import TargetUnavailableError
from edgeprune.profiles.schema import DeviceProfile, MeasurementSettings
from edgeprune.targets.stats import nearest_rank, statistic_ms


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model on one profile, built from raw per-iteration times.

    ``settings`` records what changes the figure (threads, spinning, optimisation level,
    runtime version, CPU model, data transfers, CUDA graph, ...).
    """

    times_ms: tuple[float, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)
    metric: str = "Latency"
    block_sizes: tuple[int, ...] = ()  # iterations per interleaved block; () = one block

    def __post_init__(self) -> None:
        if not self.times_ms:
            raise ValueError("LatencyStats needs at least one time")
        if self.block_sizes and sum(self.block_sizes) != len(self.times_ms):
            raise ValueError("block_sizes must add up to the number of times")

    @classmethod
    def from_times(
        cls, times_ms: Sequence[float], settings: Mapping[str, Any] | None = None, **kw: Any
    ) -> LatencyStats:
        return cls(tuple(float(t) for t in times_ms), dict(settings or {}), **kw)

    def merged(self, other: LatencyStats) -> LatencyStats:
        """Times of both (interleaved blocks of the same model), settings of ``self``."""
        sizes = (self.block_sizes or (self.count,)) + (other.block_sizes or (other.count,))
        return LatencyStats(self.times_ms + other.times_ms, self.settings, self.metric, sizes)

    def blocks(self) -> list[tuple[float, ...]]:
        """The times split into their interleaved blocks (one block when unknown)."""
        out, i = [], 0
        for n in self.block_sizes or (self.count,):
            out.append(self.times_ms[i : i + n])
            i += n
        return out

    def figure(self, statistic: str) -> float:
        """The figure decisions use (:mod:`edgeprune.targets.stats`, e.g. ``p50``)."""
        return statistic_ms(self.blocks(), statistic)

    @property
    def count(self) -> int:
        return len(self.times_ms)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    @property
    def max_ms(self) -> float:
        return max(self.times_ms)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.times_ms)

    @property
    def std_ms(self) -> float:
        return statistics.pstdev(self.times_ms) if self.count > 1 else 0.0

    @property
    def cov(self) -> float:
        """Coefficient of variation (std / mean); trtexec warns above 0.025."""
        return self.std_ms / self.mean_ms if self.mean_ms > 0 else math.nan

    def percentile(self, pct: float) -> float:
        return nearest_rank(sorted(self.times_ms), pct)

    @property
    def median_ms(self) -> float:
        return float(statistics.median(self.times_ms))

    @property
    def p50_ms(self) -> float:
        return self.percentile(50)

    @property
    def p90_ms(self) -> float:
        return self.percentile(90)

    @property
    def p95_ms(self) -> float:
        return self.percentile(95)

    @property
    def p99_ms(self) -> float:
        return self.percentile(99)

    def summary(self) -> dict[str, Any]:
        """The reported fields, without the raw times."""
        return {
            "metric": self.metric,
            "count": self.count,
            "min_ms": self.min_ms,
            "max_ms": self.max_ms,
            "mean_ms": self.mean_ms,
            "std_ms": self.std_ms,
            "cov": self.cov,
            "median_ms": self.median_ms,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "settings": dict(self.settings),
        }

    def to_dict(self) -> dict[str, Any]:
        """Summary plus raw times (for plots and re-analysis)."""
        return {
            **self.summary(),
            "times_ms": list(self.times_ms),
            "block_sizes": list(self.block_sizes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyStats:
        return cls(
            tuple(float(t) for t in d["times_ms"]),
            dict(d.get("settings", {})),
            d.get("metric", "Latency"),
            tuple(int(n) for n in d.get("block_sizes", ())),
        )


class Prepared(Protocol):
    """A model loaded on a target, ready to run. Opaque beyond this surface."""

    input_name: str
    input_shape: tuple[int, ...]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one batch and return the first output (used for accuracy checks)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Target(Protocol):
    """Turns an ONNX file + profile into latency figures on one runtime."""

    name: str

    def available(self) -> tuple[bool, str]:
        """(True, "") when usable here, else (False, what is missing and how to get it)."""
        ...

    def prepare(self, onnx_path: Path, profile: DeviceProfile) -> Prepared: ...

    def measure(
        self,
        prepared: Prepared,
        inputs: np.ndarray | None,
        settings: MeasurementSettings,
    ) -> LatencyStats:
        """Time ``prepared`` on ``inputs`` (random of the input shape when None)."""
        ...


_REGISTRY: dict[str, Callable[[], Target]] = {}


def register_target(name: str) -> Callable[[Callable[[], Target]], Callable[[], Target]]:
    """Class decorator / factory registration: ``@register_target("onnxruntime")``."""

    def deco(factory: Callable[[], Target]) -> Callable[[], Target]:
        _REGISTRY[name] = factory
        return factory

    return deco


def _load_builtin_targets() -> None:
    # Importing the modules registers them; their heavy imports are deferred inside.
    import importlib

    for mod in ("onnxruntime", "tensorrt", "remote"):
        try:
            importlib.import_module(f"edgeprune.targets.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"edgeprune.targets.{mod}":
                raise


def get_target(name: str) -> Target:
    """A target instance by runtime name (``onnxruntime``, ``tensorrt``, ``remote``)."""
    _load_builtin_targets()
    if name not in _REGISTRY:
        raise TargetUnavailableError(
            f"unknown target runtime '{name}'; known: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]()


def target_for(profile: DeviceProfile) -> Target:
    """The target a profile measures on (``remote`` when the profile names agents)."""
    return get_target("remote" if profile.remote is not None else profile.runtime)


def require_available(target: Target, profile: DeviceProfile) -> None:
    """Raise TargetUnavailableError naming what is missing for ``profile`` on ``target``."""
    check = getattr(target, "available_for", None)
    ok, reason = check(profile) if callable(check) else target.available()
    if not ok:
        raise TargetUnavailableError(f"profile '{profile.name}' needs {target.name}: {reason}")
