"""Depth pruning: which residual blocks to replace by their shortcut before the channel search.

Below a few channels per layer the cost is no longer in the channels (on ORT a 3x3 conv at
16x16 costs ~8 us with one channel, ~20 us with eight), so a tight budget needs fewer
layers. The depth choice weighs blocks against channels at the goal itself:

1. the droppable blocks (:func:`~edgeprune.pipeline.pruning.blocks.find_blocks`) are priced
   exactly by the cost model (their layers vanish) and valued by a measured proxy: the
   validation-subset accuracy lost with the block bypassed, after BN re-estimation;
2. they are ranked by accuracy lost per millisecond saved;
3. for each of up to ``search.depth_options`` block counts ``n`` (0 and the most allowed
   included), the first ``n`` blocks are dropped and the channel knapsack fills the rest of
   the way to the goal; the plan is pruned, recovered by a short distillation
   (``search.depth_recovery_images``, at most one epoch) and scored by the same proxy.
   Without that recovery the proxy misled: on digits (143 validation images) it picked 4
   blocks at a 2x speedup, and the run ended 5.6 test points below channels alone. Counts
   whose channel floor is above the goal cannot reach it and are skipped;
4. with validation images beyond the proxy's, the ``search.rescore_top`` best options and
   channels alone are scored again on a disjoint draw, and only they compete, by both draws
   together (:func:`rescore_options`);
5. the count with the best proxy accuracy wins (exact ties: fewer blocks; with
   ``search.depth_ties: more``, the most blocks scoring within the margin of the
   best), provided the best beats channels alone (when they can reach the goal) by more
   than the margin: the proxy's standard error times sqrt(2 ln N) for N options (the best
   of N noisy scores beats a fair one by about that much by chance); the channel search
   then runs its latency schedule from the model without those blocks, and drops more
   blocks (the next reachable option) when the channels cannot reach the goal from there.

``n = 0`` is always weighed, so a budget channels can meet drops blocks only when the proxy
says it pays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from edgeprune.pipeline.pruning.blocks import BlockInfo, drop_blocks, find_blocks
from edgeprune.pipeline.pruning.groups import GroupSet, build_groups
from edgeprune.pipeline.pruning.plan import PruningPlan, limited_grid
from edgeprune.pipeline.pruning.prune import prune
from edgeprune.pipeline.run_context import RunContext
from edgeprune.pipeline.search.cost import CostModel, latency_cost_model, macs_cost_model
from edgeprune.pipeline.search.evaluator import step_task
from edgeprune.pipeline.search.knapsack import solve_knapsack
from edgeprune.pipeline.search.sensitivity import by_name


@dataclass(frozen=True)
class Reduced:
    """The base without some blocks: model, its groups and its cost model."""

    dropped: tuple[str, ...]
    model: nn.Module
    groups: GroupSet
    cost: CostModel

    def full(self) -> dict[int, int]:
        return {g.id: g.width for g in self.groups.prunable}

    def floor(self, multiple: int, min_keep: Mapping[str, float] | None = None) -> dict[int, int]:
        """Every prunable group at its narrowest grid width (within ``min_keep``)."""
        return {g.id: limited_grid(g, multiple, min_keep)[0] for g in self.groups.prunable}


@dataclass
class DepthChoice:
    """What the depth choice weighed and picked (``report.json``'s ``depth``)."""

    dropped: tuple[str, ...] = ()
    blocks: list[dict[str, Any]] = field(default_factory=list)
    options: list[dict[str, Any]] = field(default_factory=list)
    recovery_epochs: float = 0.0
    margin: float | None = None  # what dropping blocks had to beat channels alone by
    ties: str = "fewer"  # search.depth_ties: which count a near-tie goes to

    @property
    def kd_epochs(self) -> float:
        """KD epochs the options' recoveries spent (drawn from the run's one KD budget)."""
        return self.recovery_epochs * sum(1 for o in self.options if o.get("reachable"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "dropped": list(self.dropped),
            "blocks": self.blocks,
            "options": self.options,
            "recovery_epochs": self.recovery_epochs,
            "kd_epochs": self.kd_epochs,
            "margin": self.margin,
            "ties": self.ties,
        }


def droppable_blocks(ctx: RunContext) -> tuple[BlockInfo, ...]:
    """Blocks depth pruning may drop: none with ``search.depth: off`` or a non-latency goal;
    blocks holding an ignored layer stay."""
    cfg = ctx.config
    if cfg.search.depth == "off" or cfg.goal.sparsity is not None or cfg.goal.flops_ratio:
        return ()
    ignored = set(cfg.search.ignored_layers)
    blocks = find_blocks(ctx.base, ctx.example)
    return tuple(b for b in blocks if not ignored & set(b.layers) and b.name not in ignored)


def reduce(ctx: RunContext, dropped: tuple[str, ...]) -> Reduced:
    """The base without ``dropped``, its groups, and a cost model on the run's calibration."""
    if not dropped:
        return Reduced((), ctx.base, ctx.base_groups, ctx.cost)
    model = drop_blocks(ctx.base, dropped)
    names = {n for n, _ in model.named_modules()}
    ignored = [n for n in ctx.config.search.ignored_layers if n in names]
    groups = build_groups(model, ctx.example, ignored_layers=ignored)
    if ctx.predictor is not None:
        cost = latency_cost_model(groups, ctx.predictor, model)
    else:
        cost = macs_cost_model(groups, model, ctx.profile.full_input_shape)
        cost.kind = "latency"
    cost.calibration = ctx.cost.calibration  # one raw -> ms map for every architecture
    return Reduced(tuple(dropped), model, groups, cost)


def depth_floor(ctx: RunContext, blocks: tuple[BlockInfo, ...]) -> float:
    """Predicted ms of the smallest reachable model: the most blocks dropped, channels at
    their narrowest."""
    limit = ctx.config.search.depth_max_blocks
    if limit is not None and limit < len(blocks):  # ranking needs a trace per block
        blocks = tuple(sorted(blocks, key=lambda b: -saved_ms(ctx, reduce(ctx, (b.name,)))))
        blocks = blocks[:limit]
    r = reduce(ctx, tuple(b.name for b in blocks))
    return r.cost.predict(r.floor(ctx.multiple, ctx.config.search.min_keep))


def saved_ms(ctx: RunContext, r: Reduced) -> float:
    """Predicted ms the base saves by dropping ``r``'s blocks (full widths both sides)."""
    full = ctx.cost.predict({g.id: g.width for g in ctx.base_groups.prunable})
    return full - r.cost.predict(r.full())


def choose_depth(
    ctx: RunContext, goal_ms: float, importance: Any, base_accuracy: float
) -> DepthChoice:
    """Weigh dropping blocks against channels alone at ``goal_ms`` (see the module doc)."""
    blocks = droppable_blocks(ctx)
    choice = DepthChoice()
    if not blocks:
        return choice
    ranked = []
    for b in blocks:
        r = reduce(ctx, (b.name,))
        saved = saved_ms(ctx, r)
        acc = ctx.proxy_accuracy(r.model)
        lost = base_accuracy - acc
        ranked.append((lost / saved if saved > 0 else float("inf"), b, saved, acc))
        choice.blocks.append(
            {"name": b.name, "stage": b.stage, "saved_ms": saved, "proxy_accuracy": acc}
        )
    order = [b for _, b, saved, _ in sorted(ranked, key=lambda t: t[0]) if saved > 0]
    cfg = ctx.config
    limit = cfg.search.depth_max_blocks
    order = order[: limit if limit is not None else None]
    options = []
    for n in option_counts(len(order), ctx.config.search.depth_options):
        dropped = tuple(b.name for b in order[:n])
        r = reduce(ctx, dropped)
        floor = r.cost.predict(r.floor(ctx.multiple, ctx.config.search.min_keep))
        row: dict[str, Any] = {"blocks": n, "dropped": list(dropped), "floor_ms": floor}
        if floor > goal_ms:
            choice.options.append({**row, "reachable": False})
        else:
            options.append((n, r, row))
    # The recoveries come out of the run's one KD budget: at most search.depth_kd_share of
    # finetune.total_epochs over all options (none with --kd-epochs 0).
    share = cfg.search.depth_kd_share * cfg.finetune.total_epochs / max(1, len(options))
    epochs = round(min(ctx.task.epochs_for(cfg.search.depth_recovery_images), share), 6)
    choice.recovery_epochs = epochs
    # The options differ from the base by dropped blocks only: their groups' sensitivities
    # are measured once, on the base at the goal (the channels-alone option), and reused by
    # group name (a group a drop changed the name of is measured in its option).
    base_task = step_task(ctx, ctx.base, ctx.base_groups, importance, goal_ms, 0, True,
                          start=ctx.base_groups)  # fmt: skip
    known = (
        None if base_task.sensitivity is None else by_name(base_task.sensitivity, ctx.base_groups)
    )
    # Screen, then confirm (as every step does): the best options by the proxy and channels
    # alone are scored again on a disjoint validation draw when the task has one.
    confirm = cfg.search.rescore_top > 0 and ctx.task.rescore_size() > 0 and len(options) > 1
    models: dict[int, nn.Module] = {}
    for n, r, row in options:
        task = base_task
        if n > 0:
            task = step_task(
                ctx, r.model, r.groups, importance, goal_ms, 0, True, start=r.groups,
                cost=r.cost, known=known,
            )  # fmt: skip
        keep = solve_knapsack(task.with_raw_scores())
        pruned = prune(r.model, r.groups, PruningPlan(keep=keep), importance, verify=False).model
        if epochs > 0:  # a short recovery first: depth and width recover differently
            ctx.task.reestimate_bn(pruned)
            ctx.task.recover(pruned, ctx.base, epochs, seed=cfg.seed + 20_000)
        acc = ctx.proxy_accuracy(pruned)
        choice.options.append(
            {**row, "reachable": True, "predicted_ms": r.cost.predict(keep), "proxy_accuracy": acc}
        )
        if confirm:
            models[n] = pruned
    if models:
        rescore_options(ctx, choice.options, models)
    if options:
        count, choice.margin = pick_count(choice.options, ctx.task.score_se, cfg.search.depth_ties)
        choice.dropped = tuple(b.name for b in order[:count])
    choice.ties = cfg.search.depth_ties
    return choice


def rescore_options(
    ctx: RunContext, options: list[dict[str, Any]], models: Mapping[int, nn.Module]
) -> None:
    """Adds ``rescore`` (the disjoint draw's accuracy) and ``score`` (both draws, weighted
    by their sizes) to the ``search.rescore_top`` best reachable options by the proxy and to
    channels alone; :func:`pick_count` then picks among those by ``score``. The best of N
    proxy scores is partly the luckiest draw; a draw the screening never saw takes the luck
    out of the final comparison."""
    reachable = sorted(
        (o for o in options if o["reachable"] and o["blocks"] in models),
        key=lambda o: (-o["proxy_accuracy"], o["blocks"]),
    )
    finalists = reachable[: ctx.config.search.rescore_top]
    finalists += [o for o in reachable if o["blocks"] == 0 and o not in finalists]
    for o in finalists:
        second = ctx.task.rescore(models[o["blocks"]])
        if second is None:
            return
        o["rescore"] = second
        o["score"] = ctx.task.both_draws(o["proxy_accuracy"], second)


def pick_count(
    options: list[dict[str, Any]], score_se: Any, ties: str = "fewer"
) -> tuple[int, float | None]:
    """The block count to drop from the scored ``options``, and the margin dropping blocks
    had to beat channels alone by (None without a channels-alone option or blocks to drop).

    The margin is what the best of N noisy scores beats a fair one by, by chance: one
    standard error of the proxy (``score_se(p)``, binomial over the validation subset) times
    sqrt(2 ln N) for N options with blocks, the expected maximum of N standard normals
    (about 2 for 7). Options re-scored on a second draw (:func:`rescore_options`) compete
    by ``score``, the others not at all (N still counts every option the finalists were
    screened from). The best-scoring count wins (``ties="more"``: the most blocks scoring
    within that margin of the best), and depth only when the best beats channels alone by
    more than the margin.
    """
    reachable = [o for o in options if o["reachable"]]
    n = sum(1 for o in reachable if o["blocks"] > 0)
    z = max(1.0, math.sqrt(2 * math.log(max(n, 1))))
    key = "proxy_accuracy"
    if any("score" in o for o in reachable):  # re-scored: the finalists compete, on both draws
        reachable, key = [o for o in reachable if "score" in o], "score"
    if not reachable:
        return 0, None
    best = max(reachable, key=lambda o: (o[key], -o["blocks"]))
    top = best[key]
    count = best["blocks"]
    if ties == "more":
        tie = score_se(top) * z
        count = max(o["blocks"] for o in reachable if top - o[key] <= tie)
    if best["blocks"] == 0:
        return 0, None
    width = next((o for o in reachable if o["blocks"] == 0), None)
    if width is None:
        return count, None
    margin = score_se(width[key]) * z
    return (0 if top - width[key] <= margin else count), margin


def option_counts(n_blocks: int, options: int) -> list[int]:
    """Up to ``options`` block counts from 0 to ``n_blocks``, evenly spread, ends included."""
    if n_blocks + 1 <= options:
        return list(range(n_blocks + 1))
    return sorted({round(i * n_blocks / (options - 1)) for i in range(options)})
