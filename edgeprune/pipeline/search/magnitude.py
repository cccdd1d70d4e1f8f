"""Global magnitude baseline: Torch-Pruning's ``global_pruning=True``, driven to a cost target.

What Torch-Pruning 1.6.1 does with ``global_pruning=True`` and a magnitude importance: each
group's per-channel importance is divided by that group's mean importance (``normalizer=
"mean"``), the normalised scores of all groups are concatenated, and the globally smallest
ones go; with ``round_to`` each pruned group's remaining width is rounded *down* to a
multiple. Here the per-channel scores are the step's (the run's one criterion, normalised
the same way by the driver), rounding is the step's channel grid (no rounding: a grid of
every count), and the number of channels removed is the smallest (bisection) whose plan
meets the step's cost target. Ties break by group order, then channel index.
"""

from __future__ import annotations

import numpy as np

from edgeprune.pipeline.search.base import Candidate, OneShotSearcher, candidate_from_keep
from edgeprune.pipeline.search.task import Keep, StepTask, smallest_fitting, snap_down


def _ranking(task: StepTask) -> tuple[np.ndarray, np.ndarray]:
    groups = list(task.widths)
    flat = np.concatenate([np.asarray(task.scores[g], dtype=np.float64) for g in groups])
    group_of = np.concatenate([np.full(task.widths[g], i) for i, g in enumerate(groups)])
    channel = np.concatenate([np.arange(task.widths[g]) for g in groups])
    order = np.lexsort((channel, group_of, flat))  # last key is the primary one
    return order, group_of


def magnitude_keep(task: StepTask, n_remove: int, ranking: tuple | None = None) -> Keep:
    """Remove the ``n_remove`` globally smallest channels, then round down to the grid."""
    order, group_of = ranking or _ranking(task)
    groups = list(task.widths)
    floors = [task.grids[g][0] for g in groups]
    removed = [0] * len(groups)
    left = int(n_remove)
    for idx in order:
        if left <= 0:
            break
        i = int(group_of[idx])
        if task.widths[groups[i]] - removed[i] > floors[i]:
            removed[i] += 1
            left -= 1
    return {
        g: snap_down(task, g, task.widths[g] - r) if r else task.widths[g]
        for g, r in zip(groups, removed, strict=True)
    }


def magnitude_plan(task: StepTask) -> Keep:
    """The fewest globally smallest channels whose removal meets the target."""
    ranking = _ranking(task)
    total = sum(task.widths.values())
    return smallest_fitting(
        task, lambda n: magnitude_keep(task, int(n), ranking), total, integer=True
    )


class MagnitudeSearcher(OneShotSearcher):
    """Global magnitude ranking, one candidate per step."""

    name = "magnitude"

    def _make_candidate(self, task: StepTask, tag: str) -> Candidate:
        return candidate_from_keep(task, magnitude_plan(task), tag)
