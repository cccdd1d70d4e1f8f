"""The prune-step loop of ``edgeprune compress``, the same for every searcher.

A step: the step's cost target comes from the schedule (:mod:`.schedule`); the searcher
proposes candidates that all meet it by the cost model; each is evaluated (prune a copy,
BN re-estimation, validation-subset accuracy, reward, see :mod:`.evaluator`); the chosen
plan is then *landed*: measured for real (latency: interleaved with the baseline), the
cost model corrected with the measurement, and re-planned (pruned further, or channels
grown back by importance per ms) until the measurement falls in the step's window — for
the last step, within ``landing_tolerance`` below the goal. Then the plan is applied,
recovered by a short distillation, and the step is committed to the checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from edgeprune.errors import SearchError
from edgeprune.pipeline.pruning.groups import GroupSet, build_groups, count_macs_params
from edgeprune.pipeline.pruning.importance import TaylorImportance, get_importance
from edgeprune.pipeline.pruning.plan import PruningPlan
from edgeprune.pipeline.pruning.prune import prune
from edgeprune.pipeline.run_context import RunContext, rebuild
from edgeprune.pipeline.search import Outcome, Searcher, make_searcher
from edgeprune.pipeline.search.base import Candidate
from edgeprune.pipeline.search.depth import choose_depth, depth_floor, droppable_blocks, reduce
from edgeprune.pipeline.search.evaluator import base_grid, step_task
from edgeprune.pipeline.search.knapsack import project
from edgeprune.pipeline.search.landing import fine_move, pick_landing, step_aim, step_window
from edgeprune.pipeline.search.parallel import CandidateScorer
from edgeprune.pipeline.search.reward import Metrics, RewardSettings, make_reward
from edgeprune.pipeline.search.schedule import Goal, goal_from
from edgeprune.pipeline.search.state import SearchState, StepRecord, kd_left
from edgeprune.pipeline.search.task import StepTask

Keep = dict[int, int]


def _reward_fn(ctx: RunContext, searcher: Searcher, budget_ms: float | None) -> Any:
    cfg = ctx.config.search.reward
    rl_family = ("rl", "random", "cluster-rl")
    kind = cfg.kind if ctx.config.search.searcher in rl_family else searcher.reward_kind
    if kind == "accuracy":
        return lambda m: float(m.accuracy)
    if kind == "latency" and budget_ms is None:
        raise SearchError(
            "search.reward.kind 'latency' needs a latency goal (--budget-ms or --speedup); "
            "use reward kind 'accuracy' or 'flops' with sparsity / flops_ratio goals"
        )
    settings = RewardSettings(
        kind=kind,
        budget_ms=budget_ms,
        w=cfg.w,
        mode=cfg.mode,
        flops_coef=cfg.coef,
        params_coef=cfg.coef,
        base_macs=ctx.base_groups.macs,
        base_params=ctx.base_groups.params,
    )
    return make_reward(settings)


def _importance(ctx: RunContext) -> Any:
    # cluster-rl's action is a number of clusters: one representative of each is kept
    cluster = ctx.config.search.searcher == "cluster-rl"
    name = "cluster" if cluster else ctx.config.search.criterion
    if name != "taylor":
        return get_importance(name)
    return TaylorImportance(ctx.task.importance_batches)


def _check_same_groups(base: GroupSet, now: GroupSet) -> None:
    if [g.name for g in base.prunable] != [g.name for g in now.prunable]:
        raise SearchError(
            "the pruned model's channel groups no longer match the base model's; "
            "this model is not supported by multi-step pruning (please report it)"
        )


def _copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def _measure(ctx: RunContext, goal: Goal, model: nn.Module, keep: Keep, st: SearchState) -> float:
    """The goal's metric of ``model``: measured latency (ms) or counted MACs / channels."""
    if goal.kind == "latency":
        return _measure_latency(ctx, model, st)
    if goal.kind == "macs":
        return float(count_macs_params(model, ctx.example)[0])
    return float(sum(keep.values()))


def _goal(ctx: RunContext, baseline_ms: float) -> Goal:
    prunable = sum(g.width for g in ctx.base_groups.prunable)
    return goal_from(ctx.config, baseline_ms, ctx.base_groups.macs, prunable)


def _initial_state(ctx: RunContext) -> SearchState:
    stats = ctx.oracle.measure(ctx.base)
    # The profile's decision statistic (p50 unless measured otherwise) sets the budget.
    baseline_ms = stats.figure(ctx.profile.measurement.statistic)
    goal = _goal(ctx, baseline_ms)
    base_keep = {g.id: g.width for g in ctx.base_groups.prunable}
    ctx.cost.calibration.add(ctx.cost.raw(base_keep), goal.start)
    _check_reachable(ctx, goal)
    base_acc = ctx.proxy_accuracy(_copy(ctx.base))
    return SearchState(
        phase="search",
        step=0,
        redos=0,
        baseline_ms=baseline_ms,
        baseline_stats=stats.summary(),
        budget_ms=goal.value if goal.kind == "latency" else None,
        goal_kind=goal.kind,
        goal_value=goal.value,
        value=goal.start,
        latency_ms=baseline_ms,
        macs=ctx.base_groups.macs,
        params=ctx.base_groups.params,
        sparsity=0.0,
        accuracy=base_acc,
        baseline_proxy_accuracy=base_acc,
        removed_base={},
        survivors={str(g.id): list(range(g.width)) for g in ctx.base_groups.prunable},
        multiple=ctx.multiple,
        calibration=tuple(ctx.cost.calibration.pairs),
    )


def _check_reachable(ctx: RunContext, goal: Goal) -> None:
    """Refuse, before touching the model, a goal below what pruning can reach: channels
    alone, or with the most residual blocks depth pruning may drop."""
    floor = {g.id: base_grid(ctx, g.id)[0] for g in ctx.base_groups.prunable}
    reachable = ctx.cost.predict(floor)
    ctx.timings["predicted_floor"] = reachable
    if reachable <= goal.value:
        return
    if goal.kind != "latency":
        raise SearchError(
            f"the {goal.kind} goal {goal.value:.4g} is below what pruning can reach "
            f"({reachable:.4g} with every group at its narrowest); loosen the goal"
        )
    blocks = droppable_blocks(ctx)
    deep = depth_floor(ctx, blocks) if blocks else None
    ctx.timings["predicted_depth_floor"] = deep if deep is not None else reachable
    if deep is not None and deep <= goal.value:
        return
    if deep is not None:
        depth = (
            f" and {deep:.3f} ms with the {len(blocks)} droppable residual blocks replaced by "
            "their shortcut"
        )
        more = ""
    else:
        depth = ""
        more = (
            ", depth pruning (search.depth: auto; this model has no residual blocks it can drop)"
            if ctx.config.search.depth == "auto"
            else ", depth pruning (--set search.depth=auto)"
        )
    raise SearchError(
        f"the budget {goal.value:.3f} ms is below the fastest this model gets on "
        f"{ctx.profile.name}: {reachable:.3f} ms predicted with every channel group at its "
        f"narrowest{depth}. Options: a looser budget (>= that floor), FP16/INT8 where the "
        f"profile allows it{more}, or a smaller architecture"
    )


def _depth_phase(ctx: RunContext, st: SearchState, goal: Goal, importance: Any) -> SearchState:
    """Weigh dropping residual blocks at the goal; start the channel search from the choice."""
    if goal.kind != "latency" or ctx.config.search.depth == "off":
        return st
    t = time.perf_counter()
    ctx.console.print("[bold]depth[/]: weighing residual blocks against channels at the goal")
    choice = choose_depth(ctx, goal.value, importance, st.baseline_proxy_accuracy)
    st = st.replace(depth=choice.to_dict(), kd_epochs=st.kd_epochs + choice.kd_epochs)
    if not choice.dropped:
        if choice.blocks:
            ctx.console.print("depth: channels alone do best by proxy; no block dropped")
        return st
    dropped = choice.dropped
    floor_ms = (1 - ctx.config.search.landing_tolerance) * goal.value
    while True:  # ends: each pass keeps one block fewer, and no blocks is always a start
        r = reduce(ctx, dropped)
        measured = _measure_latency(ctx, r.model, st) if dropped else goal.start
        if dropped:
            r.cost.calibration.add(r.cost.raw(r.full()), measured)  # r.cost: its groups
        if measured >= floor_ms or not dropped:
            break
        # The blocks alone land under the final window, and channels cannot grow past
        # their full width: keep the last block the choice would drop, and measure again.
        ctx.console.print(
            f"depth: {len(dropped)} blocks alone run {measured:.3f} ms, under the budget's "
            f"window ({floor_ms:.3f} ms); keeping {dropped[-1]}"
        )
        dropped = dropped[:-1]
    if dropped != choice.dropped:
        st = st.replace(
            depth={
                **(st.depth or {}),
                "dropped": list(dropped),
                "kept_to_land": list(choice.dropped[len(dropped) :]),
            }
        )
    if not dropped:
        return st
    ctx.console.print(
        f"depth: dropped {len(r.dropped)} blocks ({', '.join(r.dropped)}): {measured:.3f} ms "
        f"measured, {time.perf_counter() - t:.0f} s"
    )
    return _start_from(ctx, st, r, measured)


def _start_from(ctx: RunContext, st: SearchState, r: Any, measured: float) -> SearchState:
    """The channel search starts from ``r`` (the base without its blocks), measured."""
    ctx.use_start(r.dropped, r.model, r.groups, r.cost)
    macs, params = count_macs_params(r.model, ctx.example)
    return st.replace(
        dropped_blocks=r.dropped,
        start_value=measured,
        value=measured,
        latency_ms=measured,
        macs=macs,
        params=params,
        accuracy=ctx.proxy_accuracy(_copy(r.model)),
        removed_base={},
        survivors={str(g.id): list(range(g.width)) for g in r.groups.prunable},
        calibration=tuple(ctx.cost.calibration.pairs),
    )


def search(
    ctx: RunContext, checkpoint: tuple[dict[str, Any], dict[str, Any]] | None
) -> tuple[SearchState, nn.Module]:
    """Run prune steps until the goal is met (or nothing is left); return the final state
    and model."""
    cfg = ctx.config
    importance = _importance(ctx)
    if checkpoint is None:
        st = _initial_state(ctx)
        st = _depth_phase(ctx, st, _goal(ctx, st.baseline_ms), importance)
        model = _copy(ctx.start).eval()
        ctx.run.save_checkpoint(st.to_dict(), model.state_dict())
    else:
        st = SearchState.from_dict(checkpoint[0])
        if st.dropped_blocks:
            r = reduce(ctx, tuple(st.dropped_blocks))
            ctx.use_start(r.dropped, r.model, r.groups, r.cost)
        model = rebuild(ctx, dict(st.removed_base), checkpoint[1])
        ctx.run.truncate_log(st.log_rows)  # drop candidates of the unfinished step
        ctx.multiple = st.multiple
        for raw, value in st.calibration:
            ctx.cost.calibration.add(raw, value)
        ctx.console.print(f"[bold]resuming[/] after step {st.step} ({st.phase})")
    if st.phase != "search":
        return st, model
    goal = _goal(ctx, st.baseline_ms)
    if st.start_value is not None:  # blocks dropped: the schedule starts where they left it
        revisits = (st.depth or {}).get("revisits") or [{"after_step": 0}]
        goal = dataclasses.replace(
            goal, start=st.start_value, offset=int(revisits[-1]["after_step"])
        )
    settings = {**cfg.search.model_dump(), "total_steps_estimate": goal.steps}
    searcher = make_searcher(cfg.search.searcher, settings, seed=cfg.seed)
    if st.searcher is not None:
        searcher.load_state_dict(st.searcher)
    reward = _reward_fn(ctx, searcher, st.budget_ms)
    t_search = time.perf_counter()
    stop_reason = None
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=ctx.console,
        transient=False,
    ) as bar:
        task_id = bar.add_task("search", total=goal.steps, completed=st.step, info="")
        while True:  # ends: each pass either meets the goal, stops, or drops more blocks
            stop_reason, out_of_reach = None, False
            while st.value > goal.value * (1 + 1e-9):
                if st.step >= cfg.goal.max_steps:
                    stop_reason = f"max_steps ({cfg.goal.max_steps}) reached before the goal"
                    break
                done = _one_step(ctx, st, model, searcher, reward, importance, goal, (bar, task_id))
                if done is None:
                    out_of_reach = True
                    stop_reason = (
                        "nothing left to remove that the cost model says is faster: the goal "
                        "is out of reach for this model and channel grid; kept the smallest "
                        "model found"
                    )
                    break
                st, model = done
                bar.update(task_id, completed=st.step, total=max(goal.steps, st.step))
            deeper = _deeper_option(st) if out_of_reach else None
            if deeper is None:
                break
            # The channels cannot reach the goal from the chosen depth: start again from
            # the base with more blocks dropped (the depth choice's next reachable option).
            st, model, goal = _deepen(ctx, st, goal, deeper)
            searcher = make_searcher(cfg.search.searcher, settings, seed=cfg.seed + st.step)
            reward = _reward_fn(ctx, searcher, st.budget_ms)
    st = st.replace(
        search_s=st.search_s + time.perf_counter() - t_search,
        stop_reason=stop_reason or "goal met",
        phase="finetune",
    )
    ctx.run.save_checkpoint(st.to_dict(), model.state_dict())
    return st, model


def _deeper_option(st: SearchState) -> list[str] | None:
    """The depth choice's next reachable option with more blocks than dropped now."""
    options = (st.depth or {}).get("options", [])
    now = len(st.dropped_blocks)
    more = [o for o in options if o.get("reachable") and o["blocks"] > now]
    return list(min(more, key=lambda o: o["blocks"])["dropped"]) if more else None


def _deepen(
    ctx: RunContext, st: SearchState, goal: Goal, dropped: list[str]
) -> tuple[SearchState, nn.Module, Goal]:
    """Restart the channel search from the base without ``dropped`` (more blocks than
    before); the steps so far stay in the log, their KD epochs stay spent."""
    r = reduce(ctx, tuple(dropped))
    measured = _measure_latency(ctx, r.model, st)
    r.cost.calibration.add(r.cost.raw(r.full()), measured)  # r.cost: its groups
    revisits = [*(st.depth or {}).get("revisits", []),
                {"after_step": st.step, "from_blocks": len(st.dropped_blocks),
                 "to_blocks": len(dropped), "start_ms": measured}]  # fmt: skip
    ctx.console.print(
        f"depth: channels cannot reach the goal from {len(st.dropped_blocks)} dropped blocks;"
        f" starting again with {len(dropped)} ({measured:.3f} ms measured)"
    )
    st = _start_from(ctx, st, r, measured).replace(
        depth={**(st.depth or {}), "revisits": revisits, "dropped": list(dropped)},
        searcher=None,
        lut_samples=(),  # they describe plans of the old start
    )
    model = _copy(r.model).eval()
    ctx.run.save_checkpoint(st.to_dict(), model.state_dict())
    return st, model, dataclasses.replace(goal, start=measured, offset=st.step)


def _land(
    ctx: RunContext,
    st: SearchState,
    model: nn.Module,
    groups: GroupSet,
    task: StepTask,
    keep: Keep,
    goal: Goal,
    window: tuple[float, float],
) -> tuple[Keep, float, float, list[dict[str, Any]]]:
    """Measure ``keep``; correct the cost model and re-plan until it lands in ``window``.

    Returns the plan, its measured value, its prediction before measuring, and the tries.
    A plan above the window is pruned further (greedy by least importance per ms); one
    below it grows back the channels with the most importance per ms that still fit.
    """
    lo, hi = window
    tol = ctx.config.search.landing_tolerance
    tries: list[dict[str, Any]] = []
    for _ in range(ctx.config.search.landing_tries):
        predicted = ctx.cost.predict(keep)
        arch = prune(model, groups, PruningPlan(keep=keep), "l1", verify=False).model
        measured = _measure(ctx, goal, arch, keep, st)
        if goal.kind == "latency" and abs(measured / predicted - 1) > 2 * tol:
            # A surprise is measured again before it re-plans anything: on a shared host a
            # narrow model ran ~0.23 or ~0.30 ms by the minute (bench/results/latency_stat_*),
            # and a slow spell of the host is not the model's latency. Both measurements
            # count (their geometric mean): the lower one alone biased every accept low.
            measured = _measure_latency(ctx, arch, st, fresh=True)
        raw = ctx.cost.raw(keep)
        ctx.cost.calibration.add(raw, measured)
        tries.append({"keep": dict(keep), "predicted": predicted, "measured": measured})
        if lo <= measured <= hi:
            break
        # Local correction: the model missed this plan by measured/predicted; aim the next
        # plan's prediction so that the same miss lands it on the target.
        miss = measured / max(ctx.cost.predict(keep), 1e-12)
        nxt: Keep | None = project(dataclasses.replace(task, target=task.target / miss), keep)
        if nxt == keep or any(t["keep"] == nxt for t in tries):
            # Re-planning cycles (one grid step jumps the window): one group's step from a
            # measured try, predicted inside it, if there is one.
            nxt = fine_move(task, tries, window)
        if nxt is None:
            break
        keep = nxt
    best, inside = pick_landing(tries, window)
    if not inside:
        ctx.console.print(
            f"[yellow]landing:[/] no plan of {len(tries)} measured fell in "
            f"[{lo:.4g}, {hi:.4g}]; kept {best['measured']:.4g} "
            f"({'under' if best['measured'] <= hi else 'over'} the window)"
        )
    return best["keep"], best["measured"], best["predicted"], tries


def _rescore(
    ctx: RunContext,
    model: nn.Module,
    groups: GroupSet,
    importance: Any,
    reward: Any,
    seen: dict[Any, tuple[Outcome, dict[str, Any]]],
    chosen: Candidate,
) -> tuple[Candidate, list[dict[str, Any]]]:
    """Screen, then confirm: the step's ``search.rescore_top`` best plans by the proxy (and
    the searcher's own choice) are scored again on a disjoint validation draw, and the plan
    with the best reward on both draws together is kept.

    The best of twenty noisy scores is partly the best plan and partly the luckiest draw
    (the winner's curse); a second draw the screening never saw takes the luck out of the
    final comparison. Returns the searcher's choice unchanged when the task has no second
    draw or fewer than two distinct plans were scored.
    """
    top = ctx.config.search.rescore_top
    if top <= 0 or ctx.task.rescore_size() == 0:
        return chosen, []
    scored = sorted(
        (o for o, _ in seen.values() if math.isfinite(o.reward)), key=lambda o: -o.reward
    )
    finalists = scored[:top]
    own = seen.get(chosen.key())
    if own is not None and all(o.candidate.key() != chosen.key() for o in finalists):
        finalists.append(own[0])
    if len(finalists) < 2:
        return chosen, []
    rows, best = [], None
    for o in finalists:
        plan = PruningPlan(keep=dict(o.candidate.keep), channel_multiple=1)
        second = ctx.task.rescore(prune(model, groups, plan, importance).model)
        if second is None:
            return chosen, []
        both = ctx.task.both_draws(o.accuracy, second)
        r = reward_of(reward, both, o.latency_ms, o.macs, o.params)  # type: ignore[arg-type]
        rows.append(
            {"tag": o.candidate.tag, "proxy": o.accuracy, "rescore": second, "both": both,
             "reward": r}
        )  # fmt: skip
        if best is None or r > best[0]:
            best = (r, o.candidate)
    assert best is not None
    return (chosen if best[1].key() == chosen.key() else best[1]), rows


def _outcomes(
    ctx: RunContext,
    step: int,
    batch: list[Candidate],
    seen: dict[Any, tuple[Outcome, dict[str, Any]]],
) -> list[Outcome]:
    """The batch's outcomes in proposal order, each logged (a repeated plan reuses its
    score under its own tag)."""
    outs = []
    for cand in batch:
        out, row = seen[cand.key()]
        outs.append(dataclasses.replace(out, candidate=cand))
        ctx.run.log_candidate({"step": step, **row, "tag": cand.tag})
    return outs


def _one_step(
    ctx: RunContext,
    st: SearchState,
    model: nn.Module,
    searcher: Any,
    reward: Any,
    importance: Any,
    goal: Goal,
    progress: tuple[Progress, Any],
) -> tuple[SearchState, nn.Module] | None:
    """One prune step, committed; the new state and model, or None when nothing is left."""
    cfg = ctx.config
    bar, task_id = progress
    groups = build_groups(model, ctx.example, ignored_layers=cfg.search.ignored_layers)
    _check_same_groups(ctx.start_groups, groups)
    step = st.step + 1
    tol = cfg.search.landing_tolerance
    # An intermediate step whose window the model is already in would remove nothing.
    index = goal.first_open(st.step, st.value, slack=tol)
    final = goal.is_final(index)
    target = goal.target(index)
    aim = step_aim(target, final, tol)
    window = step_window(target, goal.value, final, tol)
    task = step_task(ctx, model, groups, importance, aim, index, final)
    prev_acc = st.accuracy
    log_rows, redos = st.log_rows, st.redos
    while True:  # repeated only when the collapse guard asks to redo the step
        searcher.start_step(task)
        seen: dict[Any, tuple[Outcome, dict[str, Any]]] = {}
        best = float("-inf")
        n = 0
        with CandidateScorer(ctx, model, groups, importance, reward, cfg.search.workers) as sc:
            while batch := searcher.propose():
                fresh: dict[Any, Candidate] = {}
                for cand in batch:  # each unseen plan once, in proposal order
                    if cand.key() not in seen:
                        fresh.setdefault(cand.key(), cand)
                seen.update(zip(fresh, sc.score(list(fresh.values())), strict=True))
                outs = _outcomes(ctx, step, batch, seen)
                log_rows += len(batch)
                n += len(batch)
                best = max([best, *(o.reward for o in outs)])
                bar.update(
                    task_id,
                    description=f"step {step}",
                    info=f"{n} cand | best reward {best:.4f} | target {aim:.4g} {goal.kind}",
                )
                searcher.observe(outs)
        kept, rescored = _rescore(ctx, model, groups, importance, reward, seen, searcher.choose())
        keep, measured, predicted, tries = _land(
            ctx, st, model, groups, task, dict(kept.keep), goal, window
        )
        if keep == task.widths:
            return None
        res = prune(model, groups, PruningPlan(keep=keep), importance)
        new = res.model
        scored = seen.get(tuple(sorted(keep.items())))
        if scored is not None:  # scored this step: reuse (pruning and BN are deterministic)
            out = scored[0]
            ctx.task.reestimate_bn(new)  # the scored BN state, without evaluating again
            acc, macs, params = out.accuracy, out.macs, out.params
        else:
            acc = ctx.proxy_accuracy(new)
            macs, params = count_macs_params(new, ctx.example)
        accepted = Outcome(kept, reward_of(reward, acc, predicted, macs, params), acc, None, macs)
        if searcher.end_step(accepted, prev_acc):
            break
        redos += 1
        ctx.console.print(
            f"step {step}: accuracy collapsed ({prev_acc:.3f} -> {acc:.3f}); policy reset, "
            "redoing the step"
        )
    ft = None
    # A step's recovery never spends past the run's one KD budget (the final gets the rest).
    step_epochs = min(cfg.finetune.step_epochs, kd_left(cfg.finetune.total_epochs, st.kd_epochs))
    kd_epochs = st.kd_epochs
    if step_epochs > 0:
        ft = ctx.task.recover(new, ctx.base, step_epochs, seed=cfg.seed + step)
        kd_epochs += step_epochs
    latency_ms = measured if goal.kind == "latency" else _measure_latency(ctx, new, st)
    survivors = dict(st.survivors)
    for gid, ix in res.removed.items():
        gone = set(ix)
        survivors[str(gid)] = [s for i, s in enumerate(survivors[str(gid)]) if i not in gone]
    removed_base = {
        str(g.id): sorted(set(range(g.width)) - set(survivors[str(g.id)]))
        for g in ctx.start_groups.prunable
    }
    total = sum(g.width for g in ctx.start_groups.prunable)
    kept_total = sum(len(v) for v in survivors.values())
    accuracy = ctx.proxy_accuracy(_copy(new))
    record = StepRecord(
        step=step,
        target=target,
        final=final,
        candidates=n,
        best_reward=best,
        chosen=kept.tag,
        chosen_reward=accepted.reward,
        landing_tries=tuple(
            {"predicted": t["predicted"], "measured": t["measured"]} for t in tries
        ),
        proxy_accuracy_before_ft=acc,
        val_accuracy_after_ft=ft,
        proxy_accuracy_after_ft=accuracy,
        predicted_ms=predicted if goal.kind == "latency" else None,
        latency_ms=latency_ms,
        value=measured,
        macs=macs,
        params=params,
        widths={str(g): k for g, k in keep.items()},
        sensitivity=None if task.sensitivity is None else task.sensitivity.summary(),
        rescored=tuple(rescored),
    )
    lut_samples = st.lut_samples
    if goal.kind == "latency":
        sample = {"removed_base": removed_base, "latency_ms": measured, "predicted_ms": predicted}
        lut_samples = (*lut_samples, sample)
    new_st = st.replace(
        step=step,
        redos=redos,
        value=measured,
        latency_ms=latency_ms,
        macs=macs,
        params=params,
        sparsity=1 - kept_total / total,
        accuracy=accuracy,
        survivors=survivors,
        removed_base=removed_base,
        searcher=searcher.state_dict(),
        calibration=tuple(ctx.cost.calibration.pairs),
        kd_epochs=kd_epochs,
        log_rows=log_rows,
        steps=(*st.steps, record),
        lut_samples=lut_samples,
    )
    ctx.run.save_checkpoint(new_st.to_dict(), new.state_dict())
    unit = "ms" if goal.kind == "latency" else goal.kind
    ctx.console.print(
        f"step {step}: {n} candidates, kept {kept.tag} | proxy acc {accuracy:.3f} | "
        f"{measured:.4g} {unit} (predicted {predicted:.4g}, {len(tries)} measured) vs target "
        f"{target:.4g} | MACs {macs / 1e6:.1f}M"
    )
    return new_st, new


def reward_of(reward: Any, acc: float, latency: float, macs: int, params: int) -> float:
    return float(reward(Metrics(acc, latency, macs, params)))


def _measure_latency(
    ctx: RunContext, model: nn.Module, st: SearchState, *, fresh: bool = False
) -> float:
    ratio = ctx.oracle.measure_vs_baseline(model, ctx.base, fresh=fresh).ratio
    return st.baseline_ms * ratio
