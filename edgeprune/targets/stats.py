"""Latency statistics over blocks of per-iteration times, for decisions on a noisy host.

A measurement is ``blocks`` lists of per-iteration times (ms). Every statistic here gives
a model's figure (:func:`statistic_ms`) and a candidate/baseline ratio from interleaved
blocks (:func:`block_ratio`). Which one the search and the budget check use is the
profile's ``measurement.statistic``, chosen by ``bench/bench_latency_stat.py``:

- ``p50``: the median of all iterations (trtexec's figure); ratio: the median over blocks
  of the per-block median ratio.
- ``mean``: the mean of all iterations; ratio: median of per-block mean ratios.
- ``p10``: the 10th percentile (nearest rank) of all iterations: ignores the slow tail that
  other processes add; ratio: median of per-block p10 ratios.
- ``min``: the fastest iteration; ratio: fastest over fastest (per block, median).
- ``min_block_median``: the smallest block median: the least disturbed block; ratio: the
  same for both models.
- ``trimmed_median``: the median after dropping stalls (iterations more than 50% above the
  10th percentile); ratio: median of per-block trimmed-median ratios.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

__all__ = ["STATISTICS", "block_ratio", "nearest_rank", "statistic_ms"]


def nearest_rank(sorted_values: Sequence[float], pct: float) -> float:
    """trtexec's nearest-rank percentile: ``sorted[max(n - 1 - int((1 - p/100) * n), 0)]``."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("no values")
    # Rounding away float noise first: in doubles (1 - 90/100) * 10 is 0.9999999999999998,
    # which int() floors to 0 and would report p90 of 1..10 as 10 instead of 9.
    exclude = int(round((100.0 - pct) * n / 100.0, 9))
    return float(sorted_values[max(n - 1 - exclude, 0)])


Blocks = Sequence[Sequence[float]]


def _p50(t: Sequence[float]) -> float:
    return nearest_rank(sorted(t), 50)


def _p10(t: Sequence[float]) -> float:
    return nearest_rank(sorted(t), 10)


def _trimmed(t: Sequence[float]) -> float:
    cut = 1.5 * _p10(t)
    return float(statistics.median([v for v in t if v <= cut]))


_PER_ITERATION: dict[str, Callable[[Sequence[float]], float]] = {
    "p50": _p50,
    "mean": statistics.fmean,
    "p10": _p10,
    "min": min,
    "trimmed_median": _trimmed,
}

STATISTICS: tuple[str, ...] = (*_PER_ITERATION, "min_block_median")


def _check(blocks: Blocks, statistic: str) -> None:
    if statistic not in STATISTICS:
        raise ValueError(f"unknown latency statistic {statistic!r}; known: {STATISTICS}")
    if not blocks or not all(len(b) for b in blocks):
        raise ValueError("need at least one non-empty block of times")


def statistic_ms(blocks: Blocks, statistic: str) -> float:
    """One model's figure from its blocks of per-iteration times."""
    _check(blocks, statistic)
    if statistic == "min_block_median":
        return min(float(statistics.median(b)) for b in blocks)
    return float(_PER_ITERATION[statistic]([t for b in blocks for t in b]))


def block_ratio(candidate: Blocks, baseline: Blocks, statistic: str) -> float:
    """Candidate / baseline from interleaved blocks (block i of each measured side by side)."""
    _check(candidate, statistic)
    _check(baseline, statistic)
    if len(candidate) != len(baseline):
        raise ValueError("candidate and baseline need the same number of blocks")
    if statistic == "min_block_median":
        return statistic_ms(candidate, statistic) / statistic_ms(baseline, statistic)
    fn = _PER_ITERATION[statistic]
    return float(statistics.median(fn(c) / fn(b) for c, b in zip(candidate, baseline, strict=True)))


def ratio_interval(
    block_ratios: Sequence[float], confidence: float = 0.9, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap interval of the median of per-block ratios (resampling whole blocks: a
    block is one side-by-side measurement, the unit a neighbour's load disturbs). One
    block gives a zero-width interval at its ratio."""
    import numpy as np

    r = np.asarray(block_ratios, dtype=np.float64)
    if r.size == 0:
        raise ValueError("need at least one block ratio")
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(r, size=(resamples, r.size), replace=True), axis=1)
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(medians, [tail, 100 - tail])
    return float(lo), float(hi)
