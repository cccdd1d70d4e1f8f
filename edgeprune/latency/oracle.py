"""The latency oracle: measured latency of a candidate architecture, cached by its signature.

Latency depends on channel counts, not on weight values, so a measurement is keyed by an
architecture signature (layer types, channel counts, kernels, strides, groups, padding and the
input shape) plus the profile, and reused for every candidate with the same shape - within a
run and, through an append-only JSON-lines file, across resumed runs.

On a noisy shared machine a lone absolute figure drifts with the load of other processes by
more than the differences the search cares about. :meth:`LatencyOracle.measure_vs_baseline`
therefore interleaves candidate and baseline blocks (A B A B ...) and returns the median
per-block ratio; a budget check should compare ``baseline_p50_at_start * ratio`` with the
budget instead of the candidate's own absolute p50.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from edgeprune._io import append_jsonl, sha256_file
from edgeprune.calibration.int8 import needs_int8, quantize_for_latency
from edgeprune.errors import OnnxModelError
from edgeprune.profiles.schema import DeviceProfile, MeasurementSettings
from edgeprune.targets.base import LatencyStats, Prepared, Target, require_available, target_for
from edgeprune.targets.stats import block_ratio
from edgeprune.targets.timing import (
    OthersCpu,
    block_settings,
    cpu_model,
    load_avg_1m,
    package_version,
    pinned,
    warmup_settings,
)

CACHE_VERSION = 1
_SIG_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.modules.batchnorm._BatchNorm)

ExportFn = Callable[[nn.Module, DeviceProfile, Path], Any]


def _layer_row(name: str, mod: nn.Module) -> list[Any]:
    if isinstance(mod, nn.modules.conv._ConvNd):
        return [
            name,
            type(mod).__name__,
            mod.in_channels,
            mod.out_channels,
            list(mod.kernel_size),
            list(mod.stride),
            mod.groups,
            list(mod.padding) if not isinstance(mod.padding, str) else mod.padding,
            list(mod.dilation),
        ]
    if isinstance(mod, nn.Linear):
        return [name, "Linear", mod.in_features, mod.out_features]
    return [name, type(mod).__name__, getattr(mod, "num_features", None)]


def arch_signature(model: nn.Module, input_shape: tuple[int, ...] | list[int]) -> str:
    """A sha256 over a model's shape-defining layers and the input shape, independent of weights.

    The ordered rows are (name, type, in/out channels, kernel, stride, groups, padding,
    dilation) of every conv, (name, "Linear", in, out) of every linear layer and (name, type,
    features) of every batch norm; two models that differ only in weight values share a
    signature, a changed channel count changes it.

    Args:
        model: The torch model (a pruned candidate or a baseline).
        input_shape: The shape fed to it (batch, C, H, W), e.g. ``profile.full_input_shape``.

    Returns:
        64 hex characters.
    """
    rows = [_layer_row(n, m) for n, m in model.named_modules() if isinstance(m, _SIG_LAYERS)]
    payload = {"model": type(model).__qualname__, "input": list(input_shape), "layers": rows}
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


def profile_fingerprint(profile: DeviceProfile, *, host: bool = True) -> str:
    """A short hash of the profile fields that change a latency figure.

    Included: runtime, precision, batch, input shape, ORT / TensorRT / power / remote settings
    and, for local runtimes with ``host=True``, this machine's CPU model and runtime version
    (a cache copied to another machine must not be trusted). The measurement loop settings,
    name and description are left out: they change the noise of a figure, not what it
    estimates.

    Returns:
        16 hex characters.
    """
    fields = profile.model_dump(
        mode="json", exclude={"name", "description", "measurement", "latency_budget_ms"}
    )
    if host and profile.remote is None:
        fields["host_cpu"] = cpu_model()
        fields["runtime_version"] = _runtime_version(profile.runtime)
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _runtime_version(runtime: str) -> str | None:
    if runtime == "onnxruntime":
        return package_version("onnxruntime", ("onnxruntime", "onnxruntime-gpu"))
    return package_version("tensorrt", ("tensorrt",))


@dataclass(frozen=True)
class BaselineComparison:
    """Candidate vs. baseline measured in interleaved blocks.

    Attributes:
        candidate: All candidate times (blocks merged).
        baseline: All baseline times (blocks merged).
        ratio: Median over blocks of candidate median / baseline median.
        block_ratios: One ratio per block, in order.
        contention: What disturbed the measurement: ``retaken`` (disturbed block pairs
            measured again), ``disturbed_kept`` (disturbed pairs kept once the retakes ran
            out), ``load_1m`` and ``others_cores`` (cores other processes kept busy) per
            kept block.
    """

    candidate: LatencyStats
    baseline: LatencyStats
    ratio: float
    block_ratios: tuple[float, ...]
    contention: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        # Unpacks as (candidate, baseline, ratio), the form the search uses.
        return iter((self.candidate, self.baseline, self.ratio))


class LatencyOracle:
    """Measures candidates on a profile's target, caching by (signature, profile).

    Args:
        profile: Where and how to measure.
        cache_path: Append-only JSON-lines cache (created on first write); ``None`` keeps the
            cache in memory only. Rows of other profiles or fingerprints are ignored.
        workdir: Where exported ONNX files go (a temporary directory when ``None``).
        settings: Loop settings; the profile's ``measurement`` when ``None``.
        export_fn: ``(model, profile, out_path) -> ...`` writing an ONNX file, needed to
            measure torch models (the pipeline passes
            :func:`edgeprune.pipeline.export.export_onnx`); ONNX paths need none.

    Attributes:
        hits: Measurements answered from the cache.
        misses: Measurements that ran on the target.
    """

    def __init__(
        self,
        profile: DeviceProfile,
        cache_path: Path | None = None,
        *,
        workdir: Path | None = None,
        settings: MeasurementSettings | None = None,
        export_fn: ExportFn | None = None,
    ) -> None:
        self.profile = profile
        self.settings = settings or profile.measurement
        self.cache_path = Path(cache_path) if cache_path is not None else None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edgeprune-oracle-")
            workdir = Path(self._tmp.name)
        self.workdir = Path(workdir)
        self.fingerprint = profile_fingerprint(profile)
        self._export_fn = export_fn
        self._target: Target | None = None
        self._cache: dict[str, dict[str, Any]] = {}
        self.hits = 0
        self.misses = 0
        self._load()

    # ---- cache -------------------------------------------------------------------------
    def _key(self, kind: str, *sigs: str) -> str:
        return "|".join((kind, self.profile.name, self.fingerprint, *sigs))

    def _load(self) -> None:
        if self.cache_path is None or not self.cache_path.is_file():
            return
        with open(self.cache_path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash; the rest of the file is still good
                mine = row.get("profile") == self.profile.name and (
                    row.get("fingerprint") == self.fingerprint
                )
                if mine and row.get("version") == CACHE_VERSION and "key" in row:
                    self._cache[row["key"]] = row

    def _store(self, key: str, row: dict[str, Any]) -> None:
        row = {
            "version": CACHE_VERSION,
            "key": key,
            "profile": self.profile.name,
            "fingerprint": self.fingerprint,
            "time": time.time(),
            **row,
        }
        self._cache[key] = row
        if self.cache_path is not None:
            append_jsonl(self.cache_path, row)

    def __len__(self) -> int:
        return len(self._cache)

    # ---- measuring ---------------------------------------------------------------------
    @property
    def target(self) -> Target:
        if self._target is None:
            target = target_for(self.profile)
            require_available(target, self.profile)
            self._target = target
        return self._target

    def signature(self, model_or_path: nn.Module | Path | str) -> str:
        """The cache signature: :func:`arch_signature` for a model, ``onnx:<sha256>`` for a file."""
        if isinstance(model_or_path, nn.Module):
            return arch_signature(model_or_path, self.profile.full_input_shape)
        path = Path(model_or_path)
        if not path.is_file():
            raise OnnxModelError(f"{path} does not exist; export the model to ONNX first")
        return "onnx:" + sha256_file(path)

    def onnx_for(self, model_or_path: nn.Module | Path | str, sig: str | None = None) -> Path:
        """The ONNX file of a candidate: exported once per signature into ``workdir``."""
        if not isinstance(model_or_path, nn.Module):
            return Path(model_or_path)
        sig = sig or self.signature(model_or_path)
        path = self.workdir / f"cand-{sig[:20]}.onnx"
        if not path.is_file():
            if self._export_fn is None:
                raise OnnxModelError(
                    "this latency oracle has no ONNX exporter, so it measures ONNX files only; "
                    "build it with export_fn=edgeprune.pipeline.export.export_onnx"
                )
            if needs_int8(self.profile):  # an INT8 profile times the model it ships: INT8
                fp32 = self.workdir / f"cand-{sig[:20]}.fp32.onnx"
                self._export_fn(model_or_path, self.profile, fp32)
                quantize_for_latency(fp32, path, self.profile)
            else:
                self._export_fn(model_or_path, self.profile, path)
        return path

    @contextmanager
    def _prepared(self, path: Path) -> Iterator[Prepared]:
        prepared = self.target.prepare(path, self.profile)
        try:
            yield prepared
        finally:
            prepared.close()

    def measure(self, model_or_path: nn.Module | Path | str) -> LatencyStats:
        """Latency of a model (or ONNX file) on the profile, from the cache when seen before.

        Args:
            model_or_path: A torch model (exported to ``workdir`` on a miss) or an ONNX file
                (keyed by its content hash).

        Returns:
            The stats, measured with the oracle's settings.

        Raises:
            ExportError: The model could not be exported.
            OnnxModelError: The ONNX file is missing or rejected by the runtime.
            TargetUnavailableError: The profile's runtime is not usable here.
        """
        sig = self.signature(model_or_path)
        key = self._key("abs", sig)
        row = self._cache.get(key)
        if row is not None:
            self.hits += 1
            return LatencyStats.from_dict(row["stats"])
        self.misses += 1
        path = self.onnx_for(model_or_path, sig)
        with self._prepared(path) as prepared, pinned(self.settings.pin_core) as pin:
            stats = self._settled_blocks(prepared, {**pin, "load_1m_before": load_avg_1m()})
        self._store(key, {"kind": "abs", "signature": sig, "stats": stats.to_dict()})
        return stats

    def _settled_blocks(self, prepared: Prepared, notes: dict[str, Any]) -> LatencyStats:
        """Warm up, keep warming up until two consecutive blocks agree, then time blocks.

        The start measurement sets the budget, so it waits out a host that is still
        settling (clocks, caches, another process finishing): warm-up blocks are timed until
        two consecutive medians agree within ``settle_tolerance`` (at most
        ``settle_max_blocks``), then ``blocks`` blocks are measured. What was done is in the
        result's settings.
        """
        s = self.settings
        per_block = block_settings(s, s.blocks)
        self.target.measure(prepared, None, warmup_settings(s))
        settle: list[float] = []
        while len(settle) < s.settle_max_blocks:
            settle.append(self.target.measure(prepared, None, per_block).median_ms)
            if len(settle) >= 2 and abs(settle[-1] / settle[-2] - 1) <= s.settle_tolerance:
                break
        runs = [self.target.measure(prepared, None, per_block) for _ in range(s.blocks)]
        stats = runs[0]
        for r in runs[1:]:
            stats = stats.merged(r)
        settled = len(settle) >= 2 and abs(settle[-1] / settle[-2] - 1) <= s.settle_tolerance
        notes = {
            **notes,
            "settle_blocks": len(settle),
            "settled": settled or s.settle_max_blocks == 0,
            "settle_medians_ms": settle,
            "load_1m_after": load_avg_1m(),
            "statistic": s.statistic,
        }
        return LatencyStats(
            stats.times_ms, {**stats.settings, **notes}, stats.metric, stats.block_sizes
        )

    def _blocks(
        self,
        cand: Prepared,
        base: Prepared,
        per_block: Any,
        n_blocks: int,
        cand_runs: list[LatencyStats],
        base_runs: list[LatencyStats],
    ) -> dict[str, Any]:
        """Time ``n_blocks`` interleaved pairs into the lists; a pair where either model's
        block is disturbed (:func:`dispersion` over ``disturbed_dispersion``: a neighbour
        took the core for part of it) is measured again, at most ``max_retakes`` times.
        Returns what was seen: retakes, disturbed pairs kept, and per kept block the load
        average and the cores other processes kept busy meanwhile (:class:`OthersCpu`)."""
        s = self.settings
        limit = n_blocks if s.max_retakes is None else s.max_retakes
        retaken = kept_disturbed = 0
        loads: list[float | None] = []
        others: list[float | None] = []
        sampler = OthersCpu()
        while len(cand_runs) < n_blocks:
            sampler.start()
            c = self.target.measure(cand, None, per_block)
            b = self.target.measure(base, None, per_block)
            busy = sampler.stop()
            worst = max(dispersion(c.times_ms), dispersion(b.times_ms))
            if worst > s.disturbed_dispersion:
                if retaken < limit:
                    retaken += 1
                    continue
                kept_disturbed += 1
            cand_runs.append(c)
            base_runs.append(b)
            loads.append(load_avg_1m())
            others.append(busy)
        return {
            "retaken": retaken,
            "disturbed_kept": kept_disturbed,
            "load_1m": loads,
            "others_cores": others,
        }

    def measure_vs_baseline(
        self,
        model: nn.Module | Path | str,
        baseline_model: nn.Module | Path | str,
        blocks: int | None = None,
        *,
        fresh: bool = False,
    ) -> BaselineComparison:
        """Candidate and baseline in interleaved blocks (A B A B ...), and their median ratio.

        Both are warmed up once, then each block times the candidate and then the baseline
        for ``settings.min_iters / blocks`` iterations and ``min_duration_ms / blocks``.
        Slow drifts of the machine's load hit both alike, so the ratio stays meaningful when
        absolute figures wander: check a budget as ``baseline_p50_at_start * ratio``.
        Comparisons are cached like single measurements (the ratio, not the absolute times,
        is what is reused).

        Args:
            model: The candidate (torch model or ONNX path).
            baseline_model: The reference (usually the unpruned model).
            blocks: Interleaved blocks; the settings' ``blocks`` when ``None``.
            fresh: Measure again even when the cache has this comparison (a confirmation):
                the result combines both measurements (geometric mean of the two ratios,
                all blocks kept), and that is what the cache holds from then on, so a
                resumed run sees the figure this one decided on. Neither the lower nor the
                later one is preferred: keeping the minimum biased every decision low.

        Returns:
            A :class:`BaselineComparison`, which also unpacks as ``(cand, base, ratio)``.
        """
        n_blocks = blocks or self.settings.blocks
        stat = self.settings.statistic
        cand_sig, base_sig = self.signature(model), self.signature(baseline_model)
        kind = f"ratio{n_blocks}" if stat == "p50" else f"ratio{n_blocks}-{stat}"
        key = self._key(kind, cand_sig, base_sig)
        cached = self._cache.get(key)
        row = None if fresh else cached
        if row is not None:
            self.hits += 1
            return BaselineComparison(
                LatencyStats.from_dict(row["candidate"]),
                LatencyStats.from_dict(row["baseline"]),
                float(row["ratio"]),
                tuple(row["block_ratios"]),
                dict(row.get("contention") or {}),
            )
        self.misses += 1
        cand_path = self.onnx_for(model, cand_sig)
        base_path = self.onnx_for(baseline_model, base_sig)
        per_block = block_settings(self.settings, n_blocks)
        cand_runs: list[LatencyStats] = []
        base_runs: list[LatencyStats] = []
        load = load_avg_1m()
        with (
            self._prepared(cand_path) as cand,
            self._prepared(base_path) as base,
            pinned(self.settings.pin_core) as pin,
        ):
            for prepared in (cand, base):
                self.target.measure(prepared, None, warmup_settings(self.settings))
            contention = self._blocks(cand, base, per_block, n_blocks, cand_runs, base_runs)
        notes = {**pin, "load_1m_before": load, "load_1m_after": load_avg_1m()}
        result = compare_blocks(cand_runs, base_runs, stat, notes)
        result = dataclasses.replace(result, contention=contention)
        if cached is not None:  # a confirmation: both measurements count
            before = cached.get("contention") or {}
            result = BaselineComparison(
                result.candidate,
                result.baseline,
                float((float(cached["ratio"]) * result.ratio) ** 0.5),
                (*cached["block_ratios"], *result.block_ratios),
                merge_contention(before, result.contention),
            )
        self._store(
            key,
            {
                "kind": "ratio",
                "signature": cand_sig,
                "baseline_signature": base_sig,
                "ratio": result.ratio,
                "block_ratios": list(result.block_ratios),
                "contention": result.contention,
                "candidate": result.candidate.to_dict(),
                "baseline": result.baseline.to_dict(),
            },
        )
        return result


def dispersion(times_ms: Sequence[float]) -> float:
    """A block's median over its fastest iteration (1.0: every iteration alike)."""
    t = sorted(times_ms)
    if not t or t[0] <= 0:
        return 1.0
    return float(statistics.median(t) / t[0])


def merge_contention(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two comparisons' contention records as one (a confirmation keeps both)."""
    return {
        "retaken": int(a.get("retaken", 0)) + int(b.get("retaken", 0)),
        "disturbed_kept": int(a.get("disturbed_kept", 0)) + int(b.get("disturbed_kept", 0)),
        "load_1m": [*a.get("load_1m", ()), *b.get("load_1m", ())],
        "others_cores": [*a.get("others_cores", ()), *b.get("others_cores", ())],
    }


def compare_blocks(
    cand_runs: list[LatencyStats],
    base_runs: list[LatencyStats],
    statistic: str = "p50",
    notes: dict[str, Any] | None = None,
) -> BaselineComparison:
    """Merge interleaved blocks; the ratio is the statistic's block ratio
    (:func:`edgeprune.targets.stats.block_ratio`: for ``p50``, the median of the per-block
    median ratios)."""
    if not cand_runs or len(cand_runs) != len(base_runs):
        raise ValueError("need the same, non-zero number of candidate and baseline blocks")
    stats = []
    for runs in (cand_runs, base_runs):
        merged = runs[0]
        for r in runs[1:]:
            merged = merged.merged(r)
        sizes = tuple(r.count for r in runs)
        extra = {**(notes or {}), "statistic": statistic}
        stats.append(LatencyStats(merged.times_ms, {**merged.settings, **extra}, merged.metric,
                                  sizes))  # fmt: skip
    per_block = tuple(
        block_ratio([c.times_ms], [b.times_ms], statistic)
        for c, b in zip(cand_runs, base_runs, strict=True)
    )
    ratio = block_ratio([c.times_ms for c in cand_runs], [b.times_ms for b in base_runs], statistic)
    return BaselineComparison(stats[0], stats[1], float(ratio), per_block)


def default_cache_dir() -> Path:
    """``$EDGEPRUNE_CACHE`` or ``~/.cache/edgeprune``: where latency caches and LUTs live."""
    import os

    env = os.environ.get("EDGEPRUNE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgeprune"
