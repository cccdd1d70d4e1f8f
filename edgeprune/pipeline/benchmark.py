"""Compare ONNX models on device profiles, measured in interleaved blocks.

On a shared or thermally throttling machine, timing model A for 3 s and then model B for
3 s lets a burst of background load land on one of them only. Here every model is warmed
up first, then measured in ``blocks`` rounds; each round gives every model 1/blocks of the
profile's iterations and duration, in an order rotated round by round. Noise then hits
all models alike, and the medians compare fairly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from edgeprune._io import atomic_write_json, sha256_file
from edgeprune.errors import OnnxModelError, TargetUnavailableError
from edgeprune.profiles.schema import DeviceProfile
from edgeprune.report.terminal import benchmark_table
from edgeprune.targets.base import LatencyStats, Prepared, Target, target_for
from edgeprune.targets.stats import block_ratio
from edgeprune.targets.timing import (
    block_settings,
    host_info,
    pinned,
    random_input,
    warmup_settings,
)

RESULT_VERSION = 1
BENCHMARK_FILE = "benchmark.json"


@dataclass(frozen=True)
class BenchmarkEntry:
    """One model measured on one profile.

    Attributes:
        model: Short model name (the file name without ``.onnx``).
        onnx_path: The ONNX file.
        onnx_sha256: Its hash, so a figure can be tied to exact weights and graph.
        profile: Profile name.
        profile_settings: The full profile, as validated.
        latency: All timed iterations of all blocks, merged.
        speedup_vs_first: p50 of the first model on this profile / p50 of this one.
        block_counts: Iterations timed in each block, in round order.
        block_positions: This model's position in each round (shows the rotation).
        statistic: The profile's decision statistic (``measurement.statistic``).
        figure_ms: This model's latency by that statistic.
        speedup_by_statistic: The first model / this one by that statistic, from the blocks
            measured side by side in each round (the figure decisions use).
    """

    model: str
    onnx_path: Path
    onnx_sha256: str
    profile: str
    profile_settings: Mapping[str, Any]
    latency: LatencyStats
    speedup_vs_first: float
    block_counts: tuple[int, ...]
    block_positions: tuple[int, ...]
    statistic: str = "p50"
    figure_ms: float | None = None
    speedup_by_statistic: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "model": self.model,
            "onnx_path": str(self.onnx_path),
            "onnx_sha256": self.onnx_sha256,
            "profile": self.profile,
            "profile_settings": dict(self.profile_settings),
            "latency": self.latency.to_dict(),
            "speedup_vs_first": self.speedup_vs_first,
            "block_counts": list(self.block_counts),
            "block_positions": list(self.block_positions),
            "statistic": self.statistic,
            "figure_ms": self.figure_ms,
            "speedup_by_statistic": self.speedup_by_statistic,
        }


@dataclass(frozen=True)
class BenchmarkResult:
    """Every (model, profile) measurement of one benchmark run.

    Attributes:
        created: ISO 8601 time (UTC) the run finished.
        host: :func:`edgeprune.targets.timing.host_info` of the measuring machine.
        entries: One per (profile, model), profiles in the order given, models likewise.
    """

    created: str
    host: Mapping[str, Any]
    entries: tuple[BenchmarkEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        """The ``benchmark.json`` document."""
        return {
            "version": RESULT_VERSION,
            "kind": "benchmark",
            "created": self.created,
            "host": dict(self.host),
            "entries": [e.to_dict() for e in self.entries],
        }


def _model_names(paths: Sequence[Path]) -> list[str]:
    stems = [p.stem for p in paths]
    # Same stem in two folders (run1/model.onnx, run2/model.onnx): keep them apart.
    return [s if stems.count(s) == 1 else str(p) for s, p in zip(stems, paths, strict=True)]


def _check_available(target: Target, profile: DeviceProfile) -> None:
    available_for = getattr(target, "available_for", None)
    ok, reason = available_for(profile) if callable(available_for) else target.available()
    if not ok:
        raise TargetUnavailableError(f"profile '{profile.name}' needs {target.name}: {reason}")


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    """Yield a ``tick()`` that advances a progress bar on stderr (a no-op when disabled)."""
    if not enabled:
        yield lambda: None
        return
    console = Console(stderr=True)
    if not console.is_terminal:
        # Live bars draw nothing into a file (CI logs, nohup): one plain line per block.
        done = [0]
        start = time.perf_counter()

        def line() -> None:
            done[0] += 1
            console.print(
                f"benchmark: {done[0]}/{total} measurements, {time.perf_counter() - start:.0f} s",
                soft_wrap=True,
            )

        yield line
        return
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("benchmark", total=total)
        yield lambda: bar.advance(task)


def _measure_profile(
    paths: Sequence[Path],
    names: Sequence[str],
    hashes: Sequence[str],
    profile: DeviceProfile,
    blocks: int,
    tick: Callable[[], None],
) -> list[BenchmarkEntry]:
    target = target_for(profile)
    _check_available(target, profile)
    prepared: list[Prepared] = []
    with pinned(profile.measurement.pin_core) as pin:
        try:
            for path in paths:
                prepared.append(target.prepare(path, profile))
            x = random_input(profile.full_input_shape, seed=0)  # same input for every model
            for p in prepared:
                target.measure(p, x, warmup_settings(profile.measurement))
                tick()
            per_block = block_settings(profile.measurement, blocks)
            stats: list[LatencyStats | None] = [None] * len(paths)
            counts: list[list[int]] = [[] for _ in paths]
            positions: list[list[int]] = [[] for _ in paths]
            n = len(paths)
            for rnd in range(blocks):
                order = [(rnd + k) % n for k in range(n)]
                for pos, i in enumerate(order):
                    s = target.measure(prepared[i], x, per_block)
                    prev = stats[i]
                    stats[i] = s if prev is None else prev.merged(s)
                    counts[i].append(s.count)
                    positions[i].append(pos)
                    tick()
        finally:
            for p in prepared:
                p.close()

    entries: list[BenchmarkEntry] = []
    first_p50: float | None = None
    stat = profile.measurement.statistic
    first = stats[0]
    assert first is not None  # blocks >= 1, so every model was measured
    for i, path in enumerate(paths):
        merged = stats[i]
        assert merged is not None  # blocks >= 1, so every model was measured
        latency = LatencyStats(
            merged.times_ms,
            {**merged.settings, "blocks": blocks, "interleaved_models": n, **pin},
            merged.metric,
            merged.block_sizes,
        )
        if first_p50 is None:
            first_p50 = latency.p50_ms
        entries.append(
            BenchmarkEntry(
                model=names[i],
                onnx_path=path,
                onnx_sha256=hashes[i],
                profile=profile.name,
                profile_settings=profile.model_dump(mode="json"),
                latency=latency,
                speedup_vs_first=first_p50 / latency.p50_ms,
                block_counts=tuple(counts[i]),
                block_positions=tuple(positions[i]),
                statistic=stat,
                figure_ms=latency.figure(stat),
                speedup_by_statistic=1.0 / block_ratio(latency.blocks(), first.blocks(), stat),
            )
        )
    return entries


def models_input_shape(paths: Sequence[Path]) -> tuple[int | None, int, int, int] | None:
    """The (batch, C, H, W) input every model takes (batch None when dynamic), read from the
    ONNX graphs; None when a file is unreadable or a size is not fixed (the target then
    says what is wrong with it).

    Raises:
        OnnxModelError: The models take different image sizes (benchmark them apart).
    """
    import onnx

    shapes: dict[tuple[int | None, ...], Path] = {}
    for path in paths:
        try:
            graph = onnx.load(str(path), load_external_data=False).graph
        except Exception:  # not ONNX: prepare() names the problem
            return None
        inits = {i.name for i in graph.initializer}
        inputs = [i for i in graph.input if i.name not in inits]
        if len(inputs) != 1:
            return None
        dims = inputs[0].type.tensor_type.shape.dim
        sizes = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        if len(sizes) != 4 or any(v is None for v in sizes[1:]):
            return None
        shapes.setdefault(sizes, path)
    chw = {k[1:] for k in shapes}
    if len(chw) > 1:
        listed = "; ".join(f"{p.name}: {list(k)}" for k, p in shapes.items())
        raise OnnxModelError(
            f"the models take different input shapes ({listed}); benchmark each size apart"
        )
    batches = {k[0] for k in shapes}
    if not shapes:
        return None
    c, h, w = (int(v) for v in next(iter(chw)))  # type: ignore[arg-type]
    return (batches.pop() if len(batches) == 1 else None, c, h, w)


def with_input_shape(
    profile: DeviceProfile, shape: tuple[int | None, int, int, int]
) -> DeviceProfile:
    """``profile`` feeding ``shape`` (a dynamic batch keeps the profile's)."""
    batch, *chw = shape
    update: dict[str, Any] = {"input_shape": tuple(chw)}
    if batch is not None:
        update["batch"] = batch
    return profile.model_copy(update=update)


def benchmark(
    onnx_paths: Sequence[Path],
    profiles: Sequence[DeviceProfile],
    *,
    out_dir: Path | None = None,
    blocks: int | None = None,
    progress: bool = True,
) -> BenchmarkResult:
    """Measure every ONNX model on every profile, in interleaved blocks.

    Args:
        onnx_paths: Models to compare; the first is the reference for ``speedup_vs_first``.
        profiles: Device profiles, measured one after the other.
        out_dir: When given, ``benchmark.json`` is written there atomically.
        blocks: Rounds per profile; default each profile's ``measurement.blocks``.
        progress: Show a progress bar on stderr.

    Raises:
        TargetUnavailableError: A profile's runtime is not usable here.
        OnnxModelError: A file is not ONNX, or the models take different input shapes.
            The input shape comes from the models themselves (a 96-px model is measured at
            96 px on any profile); the profile gives the runtime and its settings.
        ValueError: No models, no profiles, or blocks < 1.
    """
    paths = [Path(p) for p in onnx_paths]
    if not paths or not profiles:
        raise ValueError("benchmark needs at least one ONNX file and one profile")
    if blocks is not None and blocks < 1:
        raise ValueError(f"blocks must be >= 1, got {blocks}")
    names = _model_names(paths)
    hashes = [sha256_file(p) if p.is_file() else "" for p in paths]
    shape = models_input_shape(paths)
    if shape is not None:  # the models' own input size, not the profile's default
        profiles = [with_input_shape(prof, shape) for prof in profiles]
    rounds = [blocks or prof.measurement.blocks for prof in profiles]
    total = sum(len(paths) * (r + 1) for r in rounds)
    entries: list[BenchmarkEntry] = []
    with _progress(progress, total) as tick:
        for prof, rnd in zip(profiles, rounds, strict=True):
            entries.extend(_measure_profile(paths, names, hashes, prof, rnd, tick))
    result = BenchmarkResult(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        host=host_info(),
        entries=tuple(entries),
    )
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / BENCHMARK_FILE, result.to_dict())
    return result


def render_table(result: BenchmarkResult) -> Table:
    """The terminal table of a benchmark (see :func:`edgeprune.report.terminal.benchmark_table`)."""
    return benchmark_table(result.to_dict())
