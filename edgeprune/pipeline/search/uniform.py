"""Uniform baseline: the same keep ratio of the base width in every group.

One knob, ``rho`` (fraction of each group's *base* width removed): every group keeps the
width on its channel grid nearest ``base_width * (1 - rho)``, clamped to ``[floor, current
width]``. The step's ``rho`` is the smallest one (bisection) whose plan meets the step's
cost target, so uniform lands where every other searcher lands.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgeprune.pipeline.search.base import Candidate, OneShotSearcher, candidate_from_keep
from edgeprune.pipeline.search.task import Keep, StepTask, smallest_fitting


def uniform_keep(task: StepTask, base_widths: Mapping[int, int], rho: float) -> Keep:
    """Each group at the grid width nearest ``base * (1 - rho)`` (<= its current width)."""
    keep = {}
    for g, w in task.widths.items():
        target = base_widths.get(g, w) * (1.0 - rho)
        allowed = [k for k in task.grids[g] if k <= w]
        keep[g] = min(allowed, key=lambda k: (abs(k - target), -k))
    return keep


def uniform_plan(task: StepTask, base_widths: Mapping[int, int]) -> Keep:
    """The smallest ``rho`` whose uniform plan fits the target (the floor plan if none)."""
    return smallest_fitting(task, lambda rho: uniform_keep(task, base_widths, rho), 1.0)


class UniformSearcher(OneShotSearcher):
    """Same ratio everywhere, one candidate per step, found by bisection on the target."""

    name = "uniform"

    def __init__(self) -> None:
        super().__init__()
        self.base_widths: dict[int, int] | None = None

    def _make_candidate(self, task: StepTask, tag: str) -> Candidate:
        if self.base_widths is None:
            self.base_widths = dict(task.widths)
        return candidate_from_keep(task, uniform_plan(task, self.base_widths), tag)

    def state_dict(self) -> dict:
        base = None if self.base_widths is None else [[g, w] for g, w in self.base_widths.items()]
        return {**super().state_dict(), "base_widths": base}

    def load_state_dict(self, state: Mapping) -> None:
        super().load_state_dict(state)
        base = state.get("base_widths")
        self.base_widths = None if base is None else {int(g): int(w) for g, w in base}
