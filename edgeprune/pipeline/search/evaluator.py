"""One candidate's evaluation: prune a copy, re-estimate BatchNorm, score, predict its cost."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import nn

from edgeprune.errors import PruningError
from edgeprune.pipeline.pruning.groups import GroupSet, count_macs_params
from edgeprune.pipeline.pruning.plan import PruningPlan, limited_grid
from edgeprune.pipeline.pruning.prune import prune
from edgeprune.pipeline.run_context import RunContext
from edgeprune.pipeline.search import sensitivity
from edgeprune.pipeline.search.base import Candidate, Outcome
from edgeprune.pipeline.search.cost import CostModel
from edgeprune.pipeline.search.reward import Metrics
from edgeprune.pipeline.search.task import StepTask, normalize_scores


def evaluate_candidate(
    ctx: RunContext,
    model: nn.Module,
    groups: GroupSet,
    cand: Candidate,
    importance: Any,
    reward: Any,
) -> tuple[Outcome, dict[str, Any]]:
    """Score ``cand`` on a pruned copy of ``model``; a plan the engine rejects scores -inf.

    Only :class:`PruningError` (the engine refusing or failing to verify a plan) marks a
    candidate failed; any other exception is a bug and propagates.
    """
    plan = PruningPlan(keep=dict(cand.keep), channel_multiple=1)
    try:
        res = prune(model, groups, plan, importance)
    except PruningError as exc:
        row: dict[str, Any] = {"tag": cand.tag, "error": str(exc).splitlines()[0][:300]}
        return Outcome(cand, float("-inf"), 0.0), row
    acc = ctx.proxy_accuracy(res.model)
    predicted = ctx.cost.predict(dict(cand.keep))
    latency = predicted if ctx.cost.kind == "latency" else None
    macs, params = count_macs_params(res.model, ctx.example)
    r = reward(Metrics(acc, latency, macs, params))
    row = {
        "tag": cand.tag,
        "keep": {str(g): k for g, k in cand.keep.items()},
        "removed_channels": cand.removed_channels,
        "accuracy": acc,
        "latency_ms": latency,
        "latency_source": "lut" if ctx.predictor is not None else "macs-fit",
        "predicted_cost": predicted,
        "macs": macs,
        "params": params,
        "reward": r,
    }
    return Outcome(cand, r, acc, latency, macs, params), row


def base_grid(ctx: RunContext, gid: int) -> tuple[int, ...]:
    """Widths group ``gid`` may keep: the device's channel grid over its width in the model
    the channel search started from."""
    return limited_grid(ctx.start_groups[gid], ctx.multiple, ctx.config.search.min_keep)


def step_task(
    ctx: RunContext,
    model: nn.Module,
    groups: GroupSet,
    importance: Any,
    target: float,
    index: int,
    final: bool,
    *,
    start: GroupSet | None = None,
    cost: CostModel | None = None,
    known: Mapping[str, tuple[float, float]] | None = None,
) -> StepTask:
    """The step's question: widths, channel grids, normalised importance, cost and target.

    ``start`` (the groups the grids are defined over) and ``cost`` default to the run's;
    ``known`` reuses group sensitivities by name (see :func:`.sensitivity.measure`).
    """
    start = ctx.start_groups if start is None else start
    widths = {g.id: g.width for g in groups.prunable}
    grids = {}
    for g in groups.prunable:
        s = start[g.id]
        full = limited_grid(s, ctx.multiple, ctx.config.search.min_keep)
        grids[g.id] = tuple(k for k in full if k <= g.width) or (g.width,)
    raw = {
        g.id: np.asarray(importance(g, model, g.width), dtype=np.float64) for g in groups.prunable
    }
    scale = float(np.mean([v.mean() for v in raw.values()])) or 1.0
    task = StepTask(
        widths,
        grids,
        {g: normalize_scores(v) for g, v in raw.items()},
        cost or ctx.cost,
        target,
        index=index,
        final=final,
        raw_scores={g: v / scale for g, v in raw.items()},
    )
    if ctx.config.search.values != "sensitivity" or not task.widths:
        return task
    sens = sensitivity.measure(ctx, model, groups, importance, task, known)
    return dataclasses.replace(
        task, tables=sensitivity.value_tables(task, sens), sensitivity=sens, _values={}
    )
