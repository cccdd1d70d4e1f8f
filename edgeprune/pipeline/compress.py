"""``edgeprune compress``: prune step by step until the measured latency meets the budget.

The loop (DESIGN.md "The algorithm"): each step the searcher proposes candidates (channels
kept per dependency group); each is pruned on a copy, its BatchNorm statistics re-estimated
on a few training batches, scored on a validation subset, its latency predicted by the
per-layer lookup table, and rewarded. The chosen candidate is applied, fine-tuned by
distillation, and measured for real against the baseline (interleaved blocks, so machine
noise cancels in the ratio); those measurements also correct the lookup table. A step is
committed to ``checkpoint/`` before the next begins, so ``--resume`` never redoes one.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from edgeprune.calibration.bn import reestimate_bn_
from edgeprune.config import RunConfig
from edgeprune.data import DataSplits, iterate_batches, load_data
from edgeprune.errors import SearchError
from edgeprune.models import ModelSpec, load_model
from edgeprune.pipeline.groups import GroupSet, build_groups
from edgeprune.pipeline.importance import TaylorImportance, get_importance
from edgeprune.pipeline.prune import apply_removed
from edgeprune.pipeline.reward import Metrics, RewardSettings, make_reward
from edgeprune.pipeline.run_dir import RunDir
from edgeprune.pipeline.search import Searcher
from edgeprune.pipeline.train import evaluate, train
from edgeprune.profiles import DeviceProfile, load_profile
from edgeprune.targets.base import require_available, target_for
from edgeprune.targets.oracle import LatencyOracle


@dataclass
class _Run:
    """Everything a run needs that is not in its checkpoint (rebuilt on resume)."""

    config: RunConfig
    run: RunDir
    data: DataSplits
    profile: DeviceProfile
    spec: ModelSpec
    base: nn.Module  # the unpruned model: teacher and latency reference
    base_groups: GroupSet
    example: torch.Tensor
    oracle: LatencyOracle
    predictor: Any  # LatencyLUT or None
    multiple: int
    bn_inputs: list[torch.Tensor]
    val_x: torch.Tensor
    val_y: torch.Tensor
    console: Console
    timings: dict[str, float] = field(default_factory=dict)

    def proxy_accuracy(self, model: nn.Module) -> float:
        """Top-1 on the validation subset after adaptive BN re-estimation (EagleEye)."""
        if self.bn_inputs:
            reestimate_bn_(model, self.bn_inputs)
        return evaluate(model, self.val_x, self.val_y, self.data.mean, self.data.std)


def compress(
    config: RunConfig, out_dir: Path, *, resume: bool = False, console: Console | None = None
) -> dict[str, Any]:
    """Run (or resume) a compress job in ``out_dir``; return the report dict.

    Raises:
        SearchError: bad budget, no validation data, a run directory already in use.
    """
    console = console or Console(stderr=True)
    run = RunDir(out_dir)
    if resume:
        config = run.read_config()
    else:
        run.start(config)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    t0 = time.perf_counter()
    ctx = _setup(config, run, console)
    checkpoint = run.load_checkpoint() if resume else None
    state = _search(ctx, checkpoint)
    from edgeprune.pipeline.finish import finish

    return finish(ctx, state, wall_s=time.perf_counter() - t0 + state.get("wall_s_before", 0.0))


# ----------------------------------------------------------------------------- setup


def _setup(config: RunConfig, run: RunDir, console: Console) -> _Run:
    data = load_data(
        config.data.source,
        val_fraction=config.data.val_fraction,
        seed=config.data.seed,
        limit=config.data.limit,
    )
    if data.val_x.shape[0] == 0:
        raise SearchError(
            f"data '{config.data.source}' gave no validation images; the search scores "
            "candidates on a validation split — raise data.val_fraction or add images"
        )
    profile = load_profile(config.profile)
    require_available(target_for(profile), profile)
    if tuple(profile.input_shape) != tuple(data.input_shape):
        raise SearchError(
            f"profile {profile.name} expects input {list(profile.input_shape)} but the data "
            f"is {list(data.input_shape)}; use a profile with input_shape {list(data.input_shape)}"
        )
    num_classes = config.model.num_classes or data.num_classes
    spec = ModelSpec(config.model.name, num_classes)
    base = _baseline(config, run, data, spec, console)
    example = torch.zeros(1, *profile.input_shape)
    t = time.perf_counter()
    groups = build_groups(base, example)
    if not groups.prunable:
        raise SearchError(f"{spec.name} has no prunable channel groups; nothing to compress")
    multiple = config.search.channel_multiple or profile.channel_multiple
    oracle = LatencyOracle(profile, run.oracle_cache, workdir=run.onnx_workdir)
    predictor = None
    if config.search.use_lut:
        from edgeprune.calibration.latency_lut import LatencyLUT

        console.print(f"[bold]latency lookup table[/] for {spec.name} on {profile.name} ...")
        predictor = LatencyLUT.build(base, profile, progress=True)
        if config.search.channel_multiple is None and profile.channel_multiple == 1:
            multiple = predictor.channel_multiple
    if not config.search.round_to_multiple:
        multiple = 1
    gen = torch.Generator().manual_seed(config.seed)
    bn_inputs = [
        x
        for x, _ in iterate_batches(
            data.train_x[: 64 * config.search.bn_batches],
            data.train_y[: 64 * config.search.bn_batches],
            64,
            shuffle=False,
            augment=False,
            generator=gen,
            mean=data.mean,
            std=data.std,
        )
    ]
    n_val = min(config.search.val_subset, data.val_x.shape[0])
    ctx = _Run(
        config=config,
        run=run,
        data=data,
        profile=profile,
        spec=spec,
        base=base,
        base_groups=groups,
        example=example,
        oracle=oracle,
        predictor=predictor,
        multiple=multiple,
        bn_inputs=bn_inputs,
        val_x=data.val_x[:n_val],
        val_y=data.val_y[:n_val],
        console=console,
    )
    ctx.timings["setup_s"] = time.perf_counter() - t
    return ctx


def _baseline(
    config: RunConfig, run: RunDir, data: DataSplits, spec: ModelSpec, console: Console
) -> nn.Module:
    """The unpruned model: the user's weights, or a baseline trained once into the run dir."""
    weights = config.model.weights
    if weights is None and run.baseline_weights.is_file():
        weights = run.baseline_weights  # trained by an earlier (interrupted) attempt
    if weights is not None:
        return load_model(spec.name, spec.num_classes, weights, config.model.trust_pickle)
    model = load_model(spec.name, spec.num_classes)
    console.print(
        f"[bold]training a {spec.name} baseline[/] on {data.name} "
        f"({config.model.baseline_epochs} epochs; pass --weights to skip)"
    )
    train(
        model,
        data,
        epochs=config.model.baseline_epochs,
        seed=config.seed,
        out=run.baseline_weights,
    )
    return model.eval()


# ---------------------------------------------------------------------------- search


def budget_from(config: RunConfig, baseline_ms: float) -> float | None:
    """The latency budget in ms (None for sparsity / FLOPs goals without one)."""
    goal = config.goal
    if goal.budget_ms is not None:
        return goal.budget_ms
    if goal.speedup is not None:
        return baseline_ms / goal.speedup
    return None


def _reward_fn(
    ctx: _Run,
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


def _importance(ctx: _Run) -> Any:
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


def _search(ctx: _Run, checkpoint: tuple[dict[str, Any], dict[str, Any]] | None) -> dict[str, Any]:
    from edgeprune.pipeline.search_loop import search_loop

    return search_loop(ctx, checkpoint)


def rebuild(ctx: _Run, removed_base: dict[int, list[int]], weights: dict[str, Any]) -> nn.Module:
    """The pruned model of a checkpoint: base + removed channels (base coordinates) + weights."""
    removed = {int(g): tuple(ix) for g, ix in removed_base.items() if ix}
    model = (
        apply_removed(ctx.base, ctx.base_groups, removed) if removed else copy.deepcopy(ctx.base)
    )
    model.load_state_dict(weights)
    return model.eval()
