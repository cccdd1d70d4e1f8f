"""Projection onto a cost target: the latency knapsack and the moves every searcher shares.

A prune step asks: which width on its channel grid should each group keep so that the
predicted cost (latency) meets the step's target while as much importance as possible
survives? HALP (Shen et al., NeurIPS 2022, "Structural Pruning via Latency-Saliency
Knapsack") answers it as a knapsack over channels. Here:

- A group's *value* at width ``k`` is the sum of its ``k`` most important channels'
  scores (the criterion's per-channel scores, summed over the group's members and
  normalised by the group's mean, as Torch-Pruning's global ranking does).
- A layer's cost depends on the groups on both sides of it, so the cost is not separable.
  :func:`solve_knapsack` linearises it around a point (each group's option costs what it
  changes with every other group held at that point), solves that multiple-choice
  knapsack exactly by dynamic programming over discretised cost, re-linearises around the
  solution and repeats; each solution is repaired with the true cost (:func:`project`) and
  the most valuable plan that meets the target wins. On a separable cost the first round
  is exact (up to the discretisation).
- :func:`project` moves any plan onto the target: while it is over, the group whose next
  grid width down loses the least value per millisecond saved steps down; then, while the
  cost model says it fits, the group whose next width up gains the most value per
  millisecond steps back up ("grow back"). The RL searcher projects its sampled plans this
  way, so all candidates of a step cost the same and compete on accuracy alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from edgeprune.pipeline.search.base import Candidate, OneShotSearcher, candidate_from_keep
from edgeprune.pipeline.search.task import Keep, StepTask, higher_width, lower_width, snap_up


def greedy_down(task: StepTask, keep: Mapping[int, int]) -> Keep:
    """Step groups down, least value lost per cost saved first, until the plan fits."""
    keep = dict(keep)
    cost = task.cost
    raw = cost.raw(keep)
    limit = cost.raw_target(task.target)
    while cost.calibration.ms(raw) > task.target * (1 + 1e-9):
        # Least value lost per cost saved; a move that alone finishes the job beats any
        # that does not, and among those the one losing least value wins.
        best, best_key, best_delta = None, (math.inf, math.inf), 0.0
        for g in task.widths:
            # The next width down that saves anything: on a staircase (a fine grid under a
            # runtime's channel multiple) single steps inside a stair save nothing.
            lower, saved = lower_width(task, g, keep[g]), 0.0
            while lower is not None:
                saved = -cost.delta_raw(keep, g, lower)
                if saved > 0:
                    break
                lower = lower_width(task, g, lower)
            if lower is None or saved <= 0:
                continue
            lost = task.value(g, keep[g]) - task.value(g, lower)
            key = (0.0, lost) if raw - saved <= limit else (1.0, lost / saved)
            if key < best_key:
                best, best_key, best_delta = (g, lower), key, -saved
        if best is None:
            break  # at the floor (or nothing saves cost): infeasible
        keep[best[0]] = best[1]
        raw += best_delta
    return keep


def grow_back(task: StepTask, keep: Mapping[int, int]) -> Keep:
    """Step groups back up, most value per cost added first, while the plan still fits."""
    keep = dict(keep)
    cost = task.cost
    raw = cost.raw(keep)
    limit = cost.raw_target(task.target)
    while True:
        best, best_ratio, best_delta = None, -math.inf, 0.0
        for g in task.widths:
            higher = higher_width(task, g, keep[g])
            if higher is None:
                continue
            added = cost.delta_raw(keep, g, higher)
            if raw + added > limit * (1 + 1e-12):
                continue
            gain = task.value(g, higher) - task.value(g, keep[g])
            ratio = math.inf if added <= 0 else gain / added
            if ratio > best_ratio or (ratio == best_ratio and best is not None and gain > 0):
                best, best_ratio, best_delta = (g, higher), ratio, added
        if best is None:
            return keep
        keep[best[0]] = best[1]
        raw += best_delta


def project(task: StepTask, keep: Mapping[int, int]) -> Keep:
    """Move ``keep`` onto the target: greedy down while over, then grow back while it fits."""
    clipped = {g: min(snap_up(task, g, keep.get(g, w)), w) for g, w in task.widths.items()}
    return grow_back(task, greedy_down(task, clipped))


def _separable_dp(
    options: list[list[tuple[int, float, float]]], capacity: float, bins: int
) -> list[int] | None:
    """Multiple-choice knapsack: one option per group, max value, total cost <= capacity.

    ``options[i]`` lists ``(width, cost >= 0, value)``; costs are rounded *up* to the bin
    size (capacity / bins), so a plan the DP accepts meets the capacity. None when even the
    cheapest options exceed it.
    """
    if capacity < 0:
        return None
    unit = capacity / bins if capacity > 0 else 1.0
    b_max = bins if capacity > 0 else 0
    dp = np.zeros(b_max + 1)
    choices = []
    for opts in options:
        stacked = np.full((len(opts), b_max + 1), -np.inf)
        for j, (_, c, v) in enumerate(opts):
            cb = math.ceil(c / unit - 1e-9) if c > 0 else 0
            if cb <= b_max:
                stacked[j, cb:] = dp[: b_max + 1 - cb] + v
        arg = np.argmax(stacked, axis=0)
        dp = stacked[arg, np.arange(b_max + 1)]
        choices.append((arg, opts))
        if not np.isfinite(dp[b_max]):
            return None
    picks: list[int] = []
    b = b_max
    for arg, opts in reversed(choices):
        j = int(arg[b])
        picks.append(opts[j][0])
        c = opts[j][1]
        b -= math.ceil(c / unit - 1e-9) if c > 0 else 0
    return list(reversed(picks))


def solve_knapsack(task: StepTask, *, rounds: int = 4, bins: int = 2000) -> Keep:
    """Most importance retained with ``cost.predict(plan) <= target`` (see the module doc).

    Returns the floor plan, projected, when nothing fits (the caller checks ``task.fits``).
    """
    cost = task.cost
    groups = list(task.widths)
    limit = cost.raw_target(task.target)
    point: Keep = dict(task.widths)
    best: Keep | None = None
    best_value = -math.inf
    seen: set[tuple[int, ...]] = set()
    for _ in range(max(1, rounds)):
        base_raw = cost.raw(point)
        options = []
        shift = 0.0
        for g in groups:
            opts = [
                (k, cost.delta_raw(point, g, k), task.value(g, k))
                for k in task.grids[g]
                if k <= task.widths[g]
            ]
            low = min(c for _, c, _ in opts)
            shift += low
            options.append([(k, c - low, v) for k, c, v in opts])
        picks = _separable_dp(options, limit - base_raw - shift, bins)
        plan = dict(zip(groups, picks, strict=True)) if picks else task.floor_plan()
        repaired = project(task, plan)
        if task.fits(repaired):
            value = task.total_value(repaired)
            if value > best_value:
                best, best_value = repaired, value
        key = tuple(plan[g] for g in groups)
        if key in seen:
            break
        seen.add(key)
        point = plan
    return best if best is not None else project(task, task.floor_plan())


class KnapsackSearcher(OneShotSearcher):
    """The latency knapsack's plan, one candidate per step.

    Valued like HALP: a channel's importance is the criterion's score summed over the
    group's member layers (``task.raw_scores``), so a residual channel that feeds many
    convs weighs what it feeds. Per-group normalised values (Torch-Pruning's global
    ranking) cut the shared residual channels first: on the shared CIFAR-10 resnet20 at 70%
    latency that plan scored 45.4% proxy accuracy before recovery, the summed one 56.0%.
    """

    name = "knapsack"

    def _make_candidate(self, task: StepTask, tag: str) -> Candidate:
        return candidate_from_keep(task, solve_knapsack(task.with_raw_scores()), tag)
