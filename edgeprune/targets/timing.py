"""Runtime-agnostic timing: the warm-up + measurement loop, seeded inputs, and host facts.

The loop follows trtexec: warm up until both a minimum count and a minimum wall time have
passed (caches, thread pools and CPU clocks settle), then time iterations until both a
minimum count and a minimum duration are met, capped by ``max_iters``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.profiles.schema import MeasurementSettings

_NS_PER_MS = 1e6


def time_loop(
    fn: Callable[[], object], settings: MeasurementSettings, *, warmup: bool = True
) -> list[float]:
    """Call ``fn`` repeatedly and return the wall time of each timed call, in ms.

    Args:
        fn: One inference (inputs already bound, so only the run itself is timed).
        settings: Warm-up and stopping rules; both minimums of a pair must be met.
        warmup: Run the warm-up phase first (off for later blocks of an interleaved run,
            where the model was warmed up once before the first block).

    Returns:
        Per-iteration times in milliseconds, in call order.
    """
    if warmup:
        start = time.perf_counter_ns()
        done = 0
        warmup_ns = settings.warmup_ms * _NS_PER_MS
        while done < settings.warmup_iters or time.perf_counter_ns() - start < warmup_ns:
            fn()
            done += 1
    times_ms: list[float] = []
    min_ns = settings.min_duration_ms * _NS_PER_MS
    start = time.perf_counter_ns()
    while len(times_ms) < settings.max_iters:
        t0 = time.perf_counter_ns()
        fn()
        t1 = time.perf_counter_ns()
        times_ms.append((t1 - t0) / _NS_PER_MS)
        if len(times_ms) >= settings.min_iters and t1 - start >= min_ns:
            break
    return times_ms


def random_input(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """Seeded standard-normal float32 input (latency does not depend on values for CNNs)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(tuple(shape)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's marketing name ("model name" in /proc/cpuinfo), else platform.processor()."""
    try:
        fields = [
            (key.strip().lower(), value.strip())
            for key, _, value in (
                line.partition(":")
                for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
            )
        ]
    except OSError:
        fields = []
    # x86 says "model name" (its "model" is a number); Raspberry Pi kernels say "Model" or
    # "Hardware" instead.
    for wanted in ("model name", "model", "hardware"):
        for key, value in fields:
            if key == wanted and value and not value.isdigit():
                return value
    return platform.processor() or platform.machine() or "unknown"


def package_version(module: str, dists: Sequence[str]) -> str | None:
    """Version of an installed package (the imported module's if loaded), or None."""
    # Prefer the module already imported (the version actually in use); otherwise read the
    # installed metadata so that host_info never pays for importing torch.
    mod = sys.modules.get(module)
    if mod is not None and getattr(mod, "__version__", None):
        return str(mod.__version__)
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _cpu_governor() -> str | None:
    try:
        path = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def host_info() -> dict[str, Any]:
    """Facts about this machine that change latency figures, for reports.

    Returns:
        cpu_model, logical_cores, machine, os, python, onnxruntime / torch / numpy versions
        (None when not installed), cpu_governor (None when unreadable) and the 1-minute load
        average at the time of the call (None where the OS has none).
    """
    try:
        load_1m: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):
        load_1m = None
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": package_version(
            "onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")
        ),
        "torch": package_version("torch", ("torch",)),
        "numpy": package_version("numpy", ("numpy",)),
        "cpu_governor": _cpu_governor(),
        "load_avg_1m": load_1m,
    }


def block_settings(settings: MeasurementSettings, blocks: int) -> MeasurementSettings:
    """One interleaved block's share of a measurement: 1/blocks of the minimums, no warm-up.

    Warm each model up once with :func:`warmup_settings` before the first block.
    """
    return settings.model_copy(
        update={
            "warmup_iters": 0,
            "warmup_ms": 0.0,
            "min_iters": max(1, math.ceil(settings.min_iters / blocks)),
            "min_duration_ms": settings.min_duration_ms / blocks,
            "max_iters": max(1, math.ceil(settings.max_iters / blocks)),
        }
    )


def warmup_settings(settings: MeasurementSettings) -> MeasurementSettings:
    """The profile's warm-up followed by a single timed iteration (to be discarded)."""
    return settings.model_copy(update={"min_iters": 1, "min_duration_ms": 0.0, "max_iters": 1})


def load_avg_1m() -> float | None:
    """The host's 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy ticks of the whole host, ticks of this process) from /proc (Linux), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()[1:]
        with open("/proc/self/stat", encoding="ascii") as fh:
            own = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy, int(own[11]) + int(own[12])  # utime + stime of this process


class OthersCpu:
    """How many cores *other* processes kept busy between :meth:`start` and :meth:`stop`.

    The 1-minute load average lags a 10-second measurement by a minute and counts the
    measuring process itself; this reads the host's busy ticks and this process's own from
    /proc around the interval, so a neighbour is seen while it runs. None where /proc is
    not available.
    """

    def __init__(self) -> None:
        self._t0: float | None = None
        self._ticks: tuple[int, int] | None = None

    def start(self) -> None:
        self._t0, self._ticks = time.perf_counter(), _cpu_ticks()

    def stop(self) -> float | None:
        end = _cpu_ticks()
        if self._t0 is None or self._ticks is None or end is None:
            return None
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        elapsed = time.perf_counter() - self._t0
        if elapsed <= 0:
            return None
        others = (end[0] - self._ticks[0]) - (end[1] - self._ticks[1])
        return max(0.0, others / hz / elapsed)


@contextlib.contextmanager
def pinned(enabled: bool) -> Iterator[dict[str, Any]]:
    """Pin this thread to one core while measuring (Linux), restoring the mask afterwards.

    Yields what was done, for the measurement's settings: ``{"pinned_core": n}``, or
    ``{"pinned_core": None, "pin": reason}`` when pinning was off or not possible. The core
    is the last one allowed: the scheduler tends to put other work on the first.
    """
    if not enabled:
        yield {"pinned_core": None, "pin": "off"}
        return
    getter = getattr(os, "sched_getaffinity", None)
    setter = getattr(os, "sched_setaffinity", None)
    if getter is None or setter is None:
        yield {"pinned_core": None, "pin": "not supported by this OS"}
        return
    before = getter(0)
    core = max(before)
    try:
        setter(0, {core})
    except OSError as exc:
        yield {"pinned_core": None, "pin": f"refused: {exc}"}
        return
    try:
        yield {"pinned_core": core}
    finally:
        setter(0, before)
