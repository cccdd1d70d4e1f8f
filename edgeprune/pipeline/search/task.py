"""One prune step's question to a searcher: widths, channel grids, importance, cost, target."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeprune.pipeline.search.cost import CostModel

Keep = dict[int, int]


@dataclass(frozen=True)
class StepTask:
    """What one prune step asks of a searcher.

    Attributes:
        widths: Current width of each prunable group (fixed order, same ids every step).
        grids: Widths each group may keep, ascending, each <= its current width.
        scores: Per-channel importance of each group (current model), normalised per group
            (each group's mean is 1, as Torch-Pruning's global ranking normalises).
        raw_scores: The same scores without the per-group normalisation (scaled by one
            global mean), where a group's sum over its member layers still counts: a
            residual channel that feeds six convs outweighs one that feeds one. None: use
            ``scores``.
        cost: Predicts a plan's cost (ms for latency goals).
        target: The cost the step must reach (``cost.predict(plan) <= target``).
        index: Step number (0-based count of accepted steps).
        final: True for the step that targets the goal itself.
        tables: Per group, the value of keeping ``k`` channels (index ``k``), calibrated
            against the proxy's measured accuracy (:mod:`.sensitivity`). When set, they
            are every searcher's value (``scores`` still rank channels inside a group).
    """

    widths: Mapping[int, int]
    grids: Mapping[int, tuple[int, ...]]
    scores: Mapping[int, np.ndarray]
    cost: CostModel
    target: float
    index: int = 0
    final: bool = False
    raw_scores: Mapping[int, np.ndarray] | None = None
    tables: Mapping[int, np.ndarray] | None = None
    sensitivity: Any = field(default=None, repr=False, compare=False)  # what set ``tables``
    _values: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def value(self, group: int, width: int) -> float:
        """Importance retained when ``group`` keeps its ``width`` best channels."""
        if self.tables is not None:
            table = self.tables[group]
            return float(table[min(width, len(table) - 1)])
        cum = self._values.get(group)
        if cum is None:
            s = np.sort(np.asarray(self.scores[group], dtype=np.float64))[::-1]
            cum = np.concatenate([[0.0], np.cumsum(s)])
            self._values[group] = cum
        return float(cum[min(width, len(cum) - 1)])

    def total_value(self, keep: Mapping[int, int]) -> float:
        return sum(self.value(g, keep[g]) for g in self.widths)

    def with_raw_scores(self) -> StepTask:
        """The same step valued by :attr:`raw_scores` (itself when there are none, or when
        calibrated :attr:`tables` value it)."""
        if self.raw_scores is None or self.tables is not None:
            return self
        return StepTask(
            self.widths, self.grids, self.raw_scores, self.cost, self.target, self.index,
            self.final,
        )  # fmt: skip

    def fits(self, keep: Mapping[int, int]) -> bool:
        return self.cost.predict(keep) <= self.target * (1 + 1e-9)

    def floor_plan(self) -> Keep:
        """Every group at its narrowest allowed width."""
        return {g: self.grids[g][0] for g in self.widths}


def normalize_scores(scores: np.ndarray, normalizer: str = "mean") -> np.ndarray:
    """Torch-Pruning's group normalisation (``mean``: divide by the group's mean)."""
    s = np.asarray(scores, dtype=np.float64)
    if normalizer == "none":
        return s
    denom = {"mean": s.mean(), "max": s.max(), "sum": s.sum()}[normalizer]
    return s / denom if denom > 0 else np.ones_like(s)


def lower_width(task: StepTask, g: int, k: int) -> int | None:
    grid = task.grids[g]
    i = bisect.bisect_left(grid, k)
    return grid[i - 1] if i > 0 else None


def higher_width(task: StepTask, g: int, k: int) -> int | None:
    grid = task.grids[g]
    i = bisect.bisect_right(grid, k)
    return grid[i] if i < len(grid) and grid[i] <= task.widths[g] else None


def snap_up(task: StepTask, g: int, k: float) -> int:
    """Smallest allowed width >= ``k`` (the current width at most)."""
    grid = task.grids[g]
    i = bisect.bisect_left(grid, k - 1e-9)
    return grid[min(i, len(grid) - 1)]


def snap_down(task: StepTask, g: int, k: float) -> int:
    """Largest allowed width <= ``k`` (the floor at least)."""
    grid = task.grids[g]
    i = bisect.bisect_right(grid, k + 1e-9)
    return grid[max(i - 1, 0)]


def smallest_fitting(
    task: StepTask, plan_at: Callable[[float], Keep], hi: float, *, integer: bool = False
) -> Keep:
    """``plan_at(x)`` for the smallest ``x`` in ``[0, hi]`` whose plan fits the target.

    For one-knob plans that shrink as the knob grows (a uniform ratio, a number of channels
    removed): bisection, to one unit for integer knobs, to 1e-9 of ``hi`` otherwise. When
    even ``plan_at(hi)`` does not fit, that plan (the smallest) is returned.
    """
    if task.fits(plan_at(0)):
        return plan_at(0)
    if not task.fits(plan_at(hi)):
        return plan_at(hi)
    lo, step = 0.0, 1.0 if integer else 1e-9 * max(hi, 1e-12)
    while hi - lo > step:
        mid = (lo + hi) // 2 if integer else 0.5 * (lo + hi)
        if task.fits(plan_at(mid)):
            hi = mid
        else:
            lo = mid
    return plan_at(hi)
