"""Running and timing a TensorRT engine, reported in trtexec's vocabulary.

Buffers, stream and events come from torch (CUDA tensors, when torch has CUDA) or pycuda.
Inference is ``set_tensor_address`` once per buffer + ``execute_async_v3(stream)``.

Timing, per iteration (``data_transfers`` on):
``[H2D copy] -> execute_async_v3 -> [D2H copy] -> wait``, with CUDA events between the
stages and the host clock around the whole. Metrics (trtexec names):

- ``Latency``: host clock from before the H2D copy to the end of the wait: what an
  application sees, so it also holds launch and synchronisation overhead that trtexec's
  event-based Latency leaves out.
- ``GPU Compute Time``, ``H2D Latency``, ``D2H Latency``: CUDA events on the stream.
- ``Enqueue Time``: host time of the ``execute_async_v3`` call (or the graph launch).
- ``Throughput``: timed iterations / host wall time of the timed loop (qps); images/s is
  qps x batch.

``cuda_graph`` replays a captured ``execute_async_v3`` (torch backend only); ``spin_wait``
busy-polls the last event instead of a blocking wait. Both are recorded with the figures
because TensorRT 11's trtexec flipped their defaults.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeprune.errors import OnnxModelError, TargetUnavailableError
from edgeprune.profiles.schema import MeasurementSettings, TensorRTSettings
from edgeprune.targets.base import LatencyStats

METRICS = ("Latency", "GPU Compute Time", "H2D Latency", "D2H Latency", "Enqueue Time")
COV_WARN = 0.025  # trtexec warns when GPU Compute Time's CoV exceeds 2.5%
_NS_PER_MS = 1e6


def summarize_metrics(
    stats: Mapping[str, LatencyStats], throughput_qps: float, batch: int
) -> dict[str, Any]:
    """trtexec-style summary: per metric min/max/mean/median/p90/p95/p99/CoV, throughput."""
    out: dict[str, Any] = {}
    for name, s in stats.items():
        out[name] = {
            k: v for k, v in s.summary().items() if k not in ("metric", "settings", "std_ms")
        }
    out["Throughput"] = {"qps": throughput_qps, "images_per_s": throughput_qps * batch}
    gpu = stats.get("GPU Compute Time")
    if gpu is not None and gpu.cov > COV_WARN:
        out["warnings"] = [
            f"GPU Compute Time CoV {gpu.cov:.1%} > {COV_WARN:.1%}: the GPU clock or load "
            "varied; lock clocks (jetson_clocks) and measure longer"
        ]
    return out


@dataclass(frozen=True)
class TrtMeasurement:
    """All trtexec metrics of one timed run; ``latency`` is what ``measure()`` returns."""

    stats: Mapping[str, LatencyStats]
    throughput_qps: float
    batch: int
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.throughput_qps * self.batch

    def metrics(self) -> dict[str, Any]:
        return summarize_metrics(self.stats, self.throughput_qps, self.batch)

    @property
    def latency(self) -> LatencyStats:
        """Host-clock Latency, with every other metric summarised in ``settings["metrics"]``."""
        s = self.stats["Latency"]
        return LatencyStats(s.times_ms, {**self.settings, "metrics": self.metrics()}, "Latency")


@dataclass
class Buffer:
    """A pinned host array and its device twin."""

    host: np.ndarray
    device_ptr: int
    keep: tuple[Any, ...] = ()  # backend objects that own the memory


class TorchCuda:
    """Buffers/stream/events from torch's CUDA runtime (shares TensorRT's primary context)."""

    name = "torch"

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.stream = torch.cuda.Stream()
        self.stream_handle = int(self.stream.cuda_stream)

    def gpu_name(self) -> str:
        return str(self.torch.cuda.get_device_name(0))

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with self.torch.cuda.stream(self.stream):
            yield

    def alloc(self, shape: tuple[int, ...], dtype: Any) -> Buffer:
        tdtype = self.torch.from_numpy(np.empty(0, dtype)).dtype
        host = self.torch.empty(shape, dtype=tdtype, pin_memory=True)
        dev = self.torch.empty(shape, dtype=tdtype, device="cuda")
        return Buffer(host.numpy(), int(dev.data_ptr()), (host, dev))

    def h2d(self, buf: Buffer) -> None:
        buf.keep[1].copy_(buf.keep[0], non_blocking=True)

    def d2h(self, buf: Buffer) -> None:
        buf.keep[0].copy_(buf.keep[1], non_blocking=True)

    def event(self, blocking: bool) -> Any:
        return self.torch.cuda.Event(enable_timing=True, blocking=blocking)

    def record(self, ev: Any) -> None:
        ev.record(self.stream)

    @staticmethod
    def elapsed_ms(start: Any, end: Any) -> float:
        return float(start.elapsed_time(end))

    @staticmethod
    def query(ev: Any) -> bool:
        return bool(ev.query())

    @staticmethod
    def wait(ev: Any) -> None:
        ev.synchronize()

    def capture(self, enqueue: Callable[[], Any]) -> Callable[[], Any]:
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            enqueue()
        return graph.replay

    def close(self) -> None:
        self.stream.synchronize()


class PyCuda:
    """Buffers/stream/events from pycuda, on the device's primary context."""

    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as cuda

        cuda.init()
        self.cuda = cuda
        # The primary context is the one the CUDA runtime (and so TensorRT) uses.
        self.ctx = cuda.Device(0).retain_primary_context()
        self.ctx.push()
        self.stream = cuda.Stream()
        self.stream_handle = int(self.stream.handle)

    def gpu_name(self) -> str:
        return str(self.cuda.Device(0).name())

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        yield

    def alloc(self, shape: tuple[int, ...], dtype: Any) -> Buffer:
        host = self.cuda.pagelocked_empty(shape, dtype)
        dev = self.cuda.mem_alloc(max(host.nbytes, 1))
        return Buffer(host, int(dev), (dev,))

    def h2d(self, buf: Buffer) -> None:
        self.cuda.memcpy_htod_async(buf.keep[0], buf.host, self.stream)

    def d2h(self, buf: Buffer) -> None:
        self.cuda.memcpy_dtoh_async(buf.host, buf.keep[0], self.stream)

    def event(self, blocking: bool) -> Any:
        return self.cuda.Event(self.cuda.event_flags.BLOCKING_SYNC if blocking else 0)

    def record(self, ev: Any) -> None:
        ev.record(self.stream)

    @staticmethod
    def elapsed_ms(start: Any, end: Any) -> float:
        return float(end.time_since(start))

    @staticmethod
    def query(ev: Any) -> bool:
        return bool(ev.query())

    @staticmethod
    def wait(ev: Any) -> None:
        ev.synchronize()

    def capture(self, enqueue: Callable[[], Any]) -> Callable[[], Any]:
        raise TargetUnavailableError(
            "tensorrt.cuda_graph needs the torch CUDA backend (a CUDA build of torch); "
            "set cuda_graph: false in the profile or install CUDA torch"
        )

    def close(self) -> None:
        self.stream.synchronize()
        self.ctx.pop()


class TrtRunner:
    """A deserialized engine with its context, bound buffers and stream."""

    def __init__(self, trt: Any, engine: Any, input_shape: tuple[int, ...], backend: Any) -> None:
        self.backend = backend
        self.engine = engine
        self.context = engine.create_execution_context()
        inputs: list[str] = []
        outputs: list[str] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(name)
        if len(inputs) != 1:
            raise OnnxModelError(f"the engine has {len(inputs)} inputs; edgeprune feeds one")
        self.input_name, self.output_names = inputs[0], outputs
        if any(d == -1 for d in engine.get_tensor_shape(self.input_name)):
            self.context.set_input_shape(self.input_name, input_shape)
        self.input_shape = tuple(input_shape)
        self.buffers: dict[str, Buffer] = {}
        for name in [*inputs, *outputs]:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = trt.nptype(engine.get_tensor_dtype(name))
            self.buffers[name] = backend.alloc(shape, dtype)
            self.context.set_tensor_address(name, self.buffers[name].device_ptr)

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.backend.stream_handle):
            raise OnnxModelError("execute_async_v3 failed; see the TensorRT log above")

    def run(self, x: np.ndarray) -> np.ndarray:
        """Copy ``x`` in, run once, copy every output back; return the first output."""
        if tuple(x.shape) != self.input_shape:
            raise OnnxModelError(
                f"input of shape {list(x.shape)} does not fit the engine built for "
                f"{list(self.input_shape)}; feed arrays of the profile's batch and input_shape"
            )
        inp = self.buffers[self.input_name]
        np.copyto(inp.host, x, casting="same_kind")
        b = self.backend
        with b.active():
            b.h2d(inp)
            self._enqueue()
            for name in self.output_names:
                b.d2h(self.buffers[name])
            done = b.event(blocking=True)
            b.record(done)
            b.wait(done)
        return np.array(self.buffers[self.output_names[0]].host, copy=True)

    def measure(
        self, settings: MeasurementSettings, cfg: TensorRTSettings, *, warmup: bool, batch: int
    ) -> TrtMeasurement:
        """Time the engine under ``settings`` with the runtime options of ``cfg``."""
        b, transfers, spin = self.backend, cfg.data_transfers, cfg.spin_wait
        inp = self.buffers[self.input_name]
        outs = [self.buffers[n] for n in self.output_names]
        ev = [b.event(blocking=not spin) for _ in range(4)]
        times: dict[str, list[float]] = {m: [] for m in METRICS}

        with b.active():
            self._enqueue()  # first run outside capture/timing: lazy allocations happen here
            launch = b.capture(self._enqueue) if cfg.cuda_graph else self._enqueue

            def once(record: bool) -> None:
                t0 = time.perf_counter_ns()
                if transfers:
                    b.record(ev[0])
                    b.h2d(inp)
                b.record(ev[1])
                e0 = time.perf_counter_ns()
                launch()
                e1 = time.perf_counter_ns()
                b.record(ev[2])
                if transfers:
                    for o in outs:
                        b.d2h(o)
                    b.record(ev[3])
                last = ev[3] if transfers else ev[2]
                if spin:
                    while not b.query(last):
                        pass
                else:
                    b.wait(last)
                t1 = time.perf_counter_ns()
                if record:
                    times["Latency"].append((t1 - t0) / _NS_PER_MS)
                    times["Enqueue Time"].append((e1 - e0) / _NS_PER_MS)
                    times["GPU Compute Time"].append(b.elapsed_ms(ev[1], ev[2]))
                    if transfers:
                        times["H2D Latency"].append(b.elapsed_ms(ev[0], ev[1]))
                        times["D2H Latency"].append(b.elapsed_ms(ev[2], ev[3]))

            if warmup:
                start, n = time.perf_counter_ns(), 0
                while n < settings.warmup_iters or (
                    time.perf_counter_ns() - start < settings.warmup_ms * _NS_PER_MS
                ):
                    once(False)
                    n += 1
            start = time.perf_counter_ns()
            while len(times["Latency"]) < settings.max_iters:
                once(True)
                elapsed = time.perf_counter_ns() - start
                if (
                    len(times["Latency"]) >= settings.min_iters
                    and elapsed >= settings.min_duration_ms * _NS_PER_MS
                ):
                    break
            wall_s = (time.perf_counter_ns() - start) / 1e9
        stats = {m: LatencyStats.from_times(t, metric=m) for m, t in times.items() if t}
        return TrtMeasurement(stats, len(times["Latency"]) / wall_s, batch)

    def close(self) -> None:
        # Context and buffers go before the backend: pycuda frees memory in its context.
        self.context = None
        self.buffers.clear()
        self.engine = None
        self.backend.close()
