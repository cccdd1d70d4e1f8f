"""The prune-step loop of ``edgeprune compress`` (see :mod:`edgeprune.pipeline.compress`).

One step: the searcher proposes candidates, each is evaluated (prune a copy, BN
re-estimation, validation-subset accuracy, LUT-predicted latency, MACs, reward), the
chosen one is applied, fine-tuned by distillation and measured against the baseline.
Then the step is committed to the checkpoint.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from edgeprune.calibration.bn import reestimate_bn_
from edgeprune.config import RunConfig
from edgeprune.data import iterate_batches
from edgeprune.errors import SearchError
from edgeprune.pipeline.finetune import distill_
from edgeprune.pipeline.groups import GroupSet, build_groups, count_macs_params
from edgeprune.pipeline.importance import TaylorImportance, get_importance
from edgeprune.pipeline.plan import PruningPlan
from edgeprune.pipeline.prune import prune
from edgeprune.pipeline.reward import Metrics, RewardSettings, make_reward
from edgeprune.pipeline.run_context import RunContext, rebuild, rebuild_arch
from edgeprune.pipeline.search import Candidate, Outcome, Searcher, make_searcher


def budget_from(config: RunConfig, baseline_ms: float) -> float | None:
    """The latency budget in ms (None for sparsity / FLOPs goals without one)."""
    goal = config.goal
    if goal.budget_ms is not None:
        return goal.budget_ms
    if goal.speedup is not None:
        return baseline_ms / goal.speedup
    return None


def _reward_fn(
    ctx: RunContext,
    searcher: Searcher,
    budget_ms: float | None,
    base_macs: int,
    base_params: int,
    baseline_ms: float,
) -> Callable[[Metrics], float]:
    cfg = ctx.config.search.reward
    kind = searcher.reward_kind if ctx.config.search.searcher != "rl" else cfg.kind
    if kind == "latency" and budget_ms is None:
        # Paper-style goals: steer towards the latency the MACs target implies.
        ratio = ctx.config.goal.flops_ratio or (1 - (ctx.config.goal.sparsity or 0.5)) ** 2
        budget_ms = baseline_ms * ratio
    settings = RewardSettings(
        kind=kind,
        budget_ms=budget_ms,
        w=cfg.w,
        mode=cfg.mode,
        flops_coef=cfg.coef,
        params_coef=cfg.coef,
        base_macs=base_macs,
        base_params=base_params,
    )
    return make_reward(settings)


def _importance(ctx: RunContext) -> Any:
    name = ctx.config.search.criterion
    if name != "taylor":
        return get_importance(name)
    gen = torch.Generator().manual_seed(ctx.config.seed)
    n = 64 * max(ctx.config.search.bn_batches, 2)
    return TaylorImportance(
        lambda: iterate_batches(
            ctx.data.train_x[:n],
            ctx.data.train_y[:n],
            64,
            shuffle=False,
            augment=False,
            generator=gen,
            mean=ctx.data.mean,
            std=ctx.data.std,
        )
    )


def estimate_steps(config: RunConfig, budget_ms: float | None, baseline_ms: float) -> int:
    """Rough number of prune steps the goal needs (sets the epsilon decay schedule).

    Conv cost scales with c_in x c_out, so keeping a fraction k of channels everywhere
    costs about k^2: a latency ratio r needs about 1 - sqrt(r) of the channels removed.
    """
    goal = config.goal
    if goal.sparsity is not None:
        frac = goal.sparsity
    elif goal.flops_ratio is not None:
        frac = 1 - goal.flops_ratio**0.5
    else:
        frac = 1 - (min(budget_ms or baseline_ms, baseline_ms) / baseline_ms) ** 0.5
    return max(1, min(goal.max_steps, round(frac / config.search.step_fraction)))


def _widths(groups: GroupSet) -> dict[int, int]:
    return {g.id: g.width for g in groups.prunable}


def _check_same_groups(base: GroupSet, now: GroupSet) -> None:
    if [g.name for g in base.prunable] != [g.name for g in now.prunable]:
        raise SearchError(
            "the pruned model's channel groups no longer match the base model's; "
            "this model is not supported by multi-step pruning (please report it)"
        )


def _goal_met(ctx: RunContext, st: dict[str, Any]) -> bool:
    goal = ctx.config.goal
    if goal.sparsity is not None:
        return st["sparsity"] >= goal.sparsity
    if goal.flops_ratio is not None:
        return st["macs"] <= goal.flops_ratio * ctx.base_groups.macs
    return st["latency_ms"] <= st["budget_ms"]


def _predict_ms(ctx: RunContext, model: nn.Module) -> tuple[float, str]:
    if ctx.predictor is not None:
        return float(ctx.predictor.predict_ms(model)), "lut"
    return ctx.oracle.measure(model).p50_ms, "measured"


def _measure_vs_baseline(ctx: RunContext, model: nn.Module, baseline_ms: float) -> dict[str, Any]:
    """Real latency of ``model``: baseline p50 at the start x the interleaved median ratio."""
    cmp = ctx.oracle.measure_vs_baseline(model, ctx.base)
    if ctx.predictor is not None:
        ctx.predictor.calibrate_one(model, baseline_ms * cmp.ratio)
    return {
        "latency_ms": baseline_ms * cmp.ratio,
        "ratio": cmp.ratio,
        "p50_ms_now": cmp.candidate.p50_ms,
        "baseline_p50_ms_now": cmp.baseline.p50_ms,
    }


def _initial_state(ctx: RunContext) -> dict[str, Any]:
    stats = ctx.oracle.measure(ctx.base)
    baseline_ms = stats.p50_ms
    budget = budget_from(ctx.config, baseline_ms)
    if budget is not None and budget >= baseline_ms:
        raise SearchError(
            f"the budget {budget:.3f} ms is at or above the baseline's measured p50 "
            f"{baseline_ms:.3f} ms on {ctx.profile.name}: nothing to prune — the model "
            "already meets it; lower --budget-ms or raise --speedup"
        )
    base_acc = ctx.proxy_accuracy(_copy(ctx.base))
    return {
        "phase": "search",
        "step": 0,
        "redos": 0,
        "baseline_ms": baseline_ms,
        "baseline_stats": stats.summary(),
        "budget_ms": budget,
        "latency_ms": baseline_ms,
        "macs": ctx.base_groups.macs,
        "params": ctx.base_groups.params,
        "sparsity": 0.0,
        "accuracy": base_acc,
        "baseline_proxy_accuracy": base_acc,
        "removed_base": {},
        "survivors": {str(g.id): list(range(g.width)) for g in ctx.base_groups.prunable},
        "steps": [],
        "log_rows": 0,
        "searcher": None,
        "stop_reason": None,
        "multiple": ctx.multiple,
        "lut_samples": [],
    }


def _copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def search_loop(ctx: RunContext, checkpoint: tuple[dict[str, Any], dict[str, Any]] | None) -> dict:
    """Run prune steps until the goal is met (or nothing is left); return the final state."""
    cfg = ctx.config
    if checkpoint is None:
        st = _initial_state(ctx)
        model = _copy(ctx.base).eval()
        ctx.run.save_checkpoint(st, model.state_dict())
    else:
        st, weights = checkpoint
        model = rebuild(ctx, st["removed_base"], weights)
        ctx.run.truncate_log(st["log_rows"])  # drop candidates of the unfinished step
        ctx.multiple = st["multiple"]
        if ctx.predictor is not None:
            for arch_ms in st["lut_samples"]:
                ctx.predictor.calibrate_one(
                    rebuild_arch(ctx, arch_ms["removed_base"]), arch_ms["latency_ms"]
                )
        ctx.console.print(f"[bold]resuming[/] after step {st['step']} ({st['phase']})")
    if st["phase"] != "search":
        return {**st, "model": model}
    total_prunable = sum(g.width for g in ctx.base_groups.prunable)
    step_channels = max(1, round(cfg.search.step_fraction * total_prunable))
    steps_estimate = estimate_steps(cfg, st["budget_ms"], st["baseline_ms"])
    settings = {**cfg.search.model_dump(), "total_steps_estimate": steps_estimate}
    searcher = make_searcher(cfg.search.searcher, settings, seed=cfg.seed)
    if st["searcher"] is not None:
        searcher.load_state_dict(st["searcher"])
    reward = _reward_fn(
        ctx,
        searcher,
        st["budget_ms"],
        ctx.base_groups.macs,
        ctx.base_groups.params,
        st["baseline_ms"],
    )
    importance = _importance(ctx)
    t_search = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=ctx.console,
        transient=False,
    ) as bar:
        task = bar.add_task("search", total=steps_estimate, completed=st["step"], info="")
        while not _goal_met(ctx, st):
            if st["step"] >= cfg.goal.max_steps:
                st["stop_reason"] = f"max_steps ({cfg.goal.max_steps}) reached before the goal"
                break
            done = _one_step(ctx, st, model, searcher, reward, importance, step_channels, bar, task)
            if done is None:
                st["stop_reason"] = (
                    "every group is at its minimum width: the goal is out of reach for "
                    "this model and channel multiple; kept the smallest model found"
                )
                break
            model = done
            bar.update(task, completed=st["step"], total=max(steps_estimate, st["step"] + 1))
    st["search_s"] = st.get("search_s", 0.0) + time.perf_counter() - t_search
    if st["stop_reason"] is None:
        st["stop_reason"] = "goal met"
    st["phase"] = "finetune"
    ctx.run.save_checkpoint(st, model.state_dict())
    return {**st, "model": model}


def _evaluate(
    ctx: RunContext, model: nn.Module, groups: Any, cand: Candidate, importance: Any, reward: Any
) -> tuple[Outcome, dict[str, Any]]:
    plan = PruningPlan(keep=dict(cand.keep), channel_multiple=1)
    try:
        res = prune(model, groups, plan, importance)
    except Exception as exc:  # a candidate that cannot be built never becomes a choice
        row: dict[str, Any] = {"tag": cand.tag, "error": str(exc).splitlines()[0][:300]}
        return Outcome(cand, float("-inf"), 0.0), row
    acc = ctx.proxy_accuracy(res.model)
    latency, source = _predict_ms(ctx, res.model)
    macs, params = count_macs_params(res.model, ctx.example)
    r = reward(Metrics(acc, latency, macs, params))
    row = {
        "tag": cand.tag,
        "keep": {str(g): k for g, k in cand.keep.items()},
        "removed_channels": cand.removed_channels,
        "accuracy": acc,
        "latency_ms": latency,
        "latency_source": source,
        "macs": macs,
        "params": params,
        "reward": r,
    }
    return Outcome(cand, r, acc, latency, macs, params), row


def _one_step(
    ctx: RunContext,
    st: dict[str, Any],
    model: nn.Module,
    searcher: Any,
    reward: Any,
    importance: Any,
    step_channels: int,
    bar: Progress,
    task: Any,
) -> nn.Module | None:
    """One prune step; returns the new model, or None when nothing is left to prune."""
    groups = build_groups(model, ctx.example)
    _check_same_groups(ctx.base_groups, groups)
    step = st["step"] + 1
    prev_acc = st["accuracy"]
    while True:  # repeated only when the collapse guard asks to redo the step
        searcher.start_step(
            _widths(groups), step_channels, ctx.multiple, base_widths=_widths(ctx.base_groups)
        )
        if getattr(searcher, "needs_scores", False):
            # Torch-Pruning's global magnitude pruning ranks by group L2 importance.
            l2 = get_importance("l2")
            searcher.set_scores({g.id: l2(g, model, g.width).numpy() for g in groups.prunable})
        seen: dict[Any, tuple[Outcome, dict[str, Any]]] = {}
        best = float("-inf")
        n = 0
        while batch := searcher.propose():
            outs = []
            for cand in batch:
                key = cand.key()
                if key not in seen:
                    seen[key] = _evaluate(ctx, model, groups, cand, importance, reward)
                out, row = seen[key]
                out = Outcome(cand, out.reward, out.accuracy, out.latency_ms, out.macs, out.params)
                outs.append(out)
                ctx.run.log_candidate({"step": step, **row, "tag": cand.tag})
                st["log_rows"] += 1
                n += 1
                best = max(best, out.reward)
                bar.update(
                    task,
                    description=f"step {step}",
                    info=(
                        f"{n} cand | best reward {best:.4f} | latency {st['latency_ms']:.3f} ms "
                        f"vs budget {_fmt(st['budget_ms'])}"
                    ),
                )
            searcher.observe(outs)
        kept = searcher.choose()
        if kept.removed_channels == 0:
            return None
        plan = PruningPlan(keep=dict(kept.keep), channel_multiple=1)
        res = prune(model, groups, plan, importance)
        new = res.model
        # The chosen candidate was scored this step: reuse its outcome (pruning and BN
        # re-estimation are deterministic) and only put the new model in that scored state.
        scored, _ = seen[kept.key()]
        if ctx.bn_inputs:
            reestimate_bn_(new, ctx.bn_inputs)
        acc, macs, params = scored.accuracy, scored.macs, scored.params
        assert scored.latency_ms is not None  # failed candidates (no latency) are never kept
        latency = scored.latency_ms
        accepted = Outcome(kept, scored.reward, acc, latency, macs, params)
        if searcher.end_step(accepted, prev_acc):
            break
        st["redos"] += 1
        ctx.console.print(
            f"step {step}: accuracy collapsed ({prev_acc:.3f} -> {acc:.3f}); policy reset, "
            "redoing the step"
        )
    ft = distill_(
        new,
        ctx.base,
        ctx.data,
        ctx.config.finetune,
        ctx.config.finetune.step_epochs,
        seed=ctx.config.seed + step,
    )
    measured = _measure_vs_baseline(ctx, new, st["baseline_ms"])
    # Survivors in base coordinates: what resume and the final save replay on a fresh base.
    for gid, ix in res.removed.items():
        gone = set(ix)
        surv = st["survivors"][str(gid)]
        st["survivors"][str(gid)] = [s for i, s in enumerate(surv) if i not in gone]
    st["removed_base"] = {
        str(g.id): sorted(set(range(g.width)) - set(st["survivors"][str(g.id)]))
        for g in ctx.base_groups.prunable
    }
    total = sum(g.width for g in ctx.base_groups.prunable)
    kept_total = sum(len(v) for v in st["survivors"].values())
    st.update(
        step=step,
        latency_ms=measured["latency_ms"],
        macs=macs,
        params=params,
        sparsity=1 - kept_total / total,
        accuracy=ctx.proxy_accuracy(_copy(new)),
        searcher=searcher.state_dict(),
    )
    st["lut_samples"].append(
        {
            "removed_base": st["removed_base"],
            "latency_ms": measured["latency_ms"],
            "predicted_ms": latency,
        }
    )
    st["steps"].append(
        {
            "step": step,
            "candidates": n,
            "best_reward": best,
            "chosen": kept.tag,
            "chosen_reward": accepted.reward,
            "proxy_accuracy_before_ft": acc,
            "val_accuracy_after_ft": None if ft is None else ft.best_val_acc,
            "predicted_ms": latency,
            **measured,
            "macs": macs,
            "params": params,
            "widths": {str(g): k for g, k in kept.keep.items()},
        }
    )
    ctx.run.save_checkpoint(st, new.state_dict())
    ctx.console.print(
        f"step {step}: {n} candidates, kept {kept.tag} | proxy acc {st['accuracy']:.3f} | "
        f"latency {measured['latency_ms']:.3f} ms (predicted {latency:.3f}) vs budget "
        f"{_fmt(st['budget_ms'])} | MACs {macs / 1e6:.1f}M"
    )
    return new


def _fmt(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.3f} ms"
