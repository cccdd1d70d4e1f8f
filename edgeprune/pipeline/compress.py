"""``edgeprune compress``: prune step by step until the measured latency meets the budget.

The loop (docs/ARCHITECTURE.md, "The search"): depth pruning is weighed first; then each
step the searcher proposes candidates (channels kept per dependency group), every one
projected onto the step's latency target by the lookup table; each is pruned on a copy,
its BatchNorm statistics re-estimated on a few training batches, scored on a validation
subset and rewarded. The chosen plan is landed (measured against the baseline in
interleaved blocks, the lookup table corrected, re-planned until it falls in the step's
window), then applied and recovered by a short distillation from the one KD budget. A
step is committed to ``checkpoint/`` before the next begins, so ``--resume`` never redoes
one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from edgeprune.config import RunConfig
from edgeprune.data import DataSplits, StreamingSplits, open_data
from edgeprune.errors import SearchError
from edgeprune.latency.oracle import LatencyOracle
from edgeprune.models import ModelSpec, load_model
from edgeprune.pipeline.export import export_onnx
from edgeprune.pipeline.finish import finish
from edgeprune.pipeline.pruning.groups import GroupSet, build_groups
from edgeprune.pipeline.run_context import RunContext
from edgeprune.pipeline.run_dir import RunDir
from edgeprune.pipeline.search.cost import (
    CostModel,
    channels_cost_model,
    latency_cost_model,
    macs_cost_model,
)
from edgeprune.pipeline.search.driver import search
from edgeprune.pipeline.tasks import ClassifierTask, Task
from edgeprune.pipeline.train import train
from edgeprune.profiles import DeviceProfile, load_profile, represents_this_host
from edgeprune.targets.base import require_available, target_for


def compress(
    config: RunConfig, out_dir: Path, *, resume: bool = False, console: Console | None = None
) -> dict[str, Any]:
    """Run (or resume) a compress job on ``config``'s model and data; return the report."""
    return compress_run(config, out_dir, resume=resume, console=console)[0]


def compress_run(
    config: RunConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    console: Console | None = None,
    model: nn.Module | None = None,
    task: Task | None = None,
) -> tuple[dict[str, Any], nn.Module]:
    """Run (or resume) a compress job in ``out_dir``; return the report and the model.

    Args:
        config: The run config (ignored on resume: the run's own is read back).
        out_dir: The run directory.
        resume: Continue the run in ``out_dir`` from its checkpoint.
        console: Where progress goes (stderr by default).
        model: The trained model to compress (the user's object). None: build
            ``config.model`` (zoo name or factory) with its weights, or train a baseline.
        task: What scores and recovers pruned models. None: top-1 and distillation on
            ``config.data``, an in-memory image dataset.

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
    ctx = _setup(config, run, console, model=model, task=task)
    checkpoint = run.load_checkpoint() if resume else None
    state, pruned = search(ctx, checkpoint)
    # Every process's share: a resumed run's total is not just its last process's.
    return finish(ctx, state, pruned, wall_s=run.elapsed_s()), pruned


# ----------------------------------------------------------------------------- setup


def run_data(config: RunConfig, profile: DeviceProfile) -> DataSplits | StreamingSplits:
    """The run's data, decoded at the profile's input size (or streamed)."""
    return open_data(
        config.data.source,
        image_size=int(profile.input_shape[-1]),
        val_fraction=config.data.val_fraction,
        seed=config.data.seed,
        limit=config.data.limit,
        loader=config.data.loader,
        workers=config.data.workers,
        memory_limit_mb=config.data.memory_limit_mb,
    )


def run_profile(config: RunConfig) -> DeviceProfile:
    """The run's profile, with the config's ``input_shape`` when it sets one."""
    profile = load_profile(config.profile)
    if config.input_shape is not None:
        profile = profile.model_copy(update={"input_shape": tuple(config.input_shape)})
    return profile


def follow(config: RunConfig) -> None:
    """A rank > 0 under torchrun: take a share of every training job rank 0 broadcasts
    (:mod:`edgeprune.pipeline.distributed`) until it says the run is done."""
    from edgeprune.pipeline import distributed
    from edgeprune.pipeline.finetune import distill_

    torch.set_num_threads(config.threads)
    data = run_data(config, run_profile(config))

    def run_job(job: dict[str, Any]) -> None:
        if job["kind"] == "distill":
            distill_(
                job["student"], job["teacher"], data, config.finetune, job["epochs"],
                seed=job["seed"], description=job["description"],
            )  # fmt: skip
        elif job["kind"] == "train":
            train(job["model"], data, epochs=job["epochs"], seed=job["seed"], progress=False)

    distributed.follow(run_job)


def _setup(
    config: RunConfig,
    run: RunDir,
    console: Console,
    *,
    model: nn.Module | None = None,
    task: Task | None = None,
) -> RunContext:
    profile = run_profile(config)
    require_available(target_for(profile), profile)
    fits, why = represents_this_host(profile)
    if not fits and not config.allow_foreign_profile:
        raise SearchError(
            f"{why}; or pass --allow-foreign-profile to search against this host anyway"
        )
    if not fits:
        console.print(f"[bold yellow]warning:[/] {why}", soft_wrap=True)
    if task is None:
        data = run_data(config, profile)
        if data.size("val") == 0:
            raise SearchError(
                f"data '{config.data.source}' gave no validation images; the search scores "
                "candidates on a validation split — raise data.val_fraction or add images"
            )
        if tuple(profile.input_shape) != tuple(data.input_shape):
            raise SearchError(
                f"profile {profile.name} expects input {list(profile.input_shape)} but the "
                f"data is {list(data.input_shape)}; use a profile with input_shape "
                f"{list(data.input_shape)} or --set input_shape={list(data.input_shape)}"
            )
        task = ClassifierTask.from_config(data, config)
        spec = ModelSpec(config.model.name, config.model.num_classes or data.num_classes)
        base = model if model is not None else _baseline(config, run, data, spec, console)
    else:
        if model is None:
            raise SearchError("a task needs the model it scores; pass model=")
        spec = ModelSpec(config.model.name, config.model.num_classes or 1)
        base = model
    base = base.eval()
    layers = dict(base.named_modules())
    unknown = sorted(k for k in config.search.min_keep if k not in layers)
    if unknown:
        raise SearchError(
            f"search.min_keep names {unknown}, which are not layers of {spec.name} — use names "
            "from model.named_modules()"
        )
    example = torch.zeros(1, *profile.input_shape)
    t = time.perf_counter()
    groups = build_groups(base, example, ignored_layers=config.search.ignored_layers)
    if not groups.prunable:
        raise SearchError(no_prunable_groups(spec.name, groups, config.search.ignored_layers))
    multiple = config.search.channel_multiple or profile.channel_multiple
    oracle = LatencyOracle(
        profile, run.oracle_cache, workdir=run.onnx_workdir, export_fn=export_onnx
    )
    predictor = None
    if config.search.use_lut:
        from edgeprune.latency.lut import LatencyLUT

        console.print(f"[bold]latency lookup table[/] for {spec.name} on {profile.name} ...")
        # A multiple the config or the profile sets is the LUT's too; else it discovers one.
        predictor = LatencyLUT.build(
            base,
            profile,
            channel_multiple=multiple if multiple > 1 else None,
            progress=console.print,
        )
        multiple = predictor.channel_multiple
    if not config.search.round_to_multiple:
        multiple = 1
    cost = _cost_model(config, groups, predictor, base, profile.full_input_shape)
    ctx = RunContext(
        config=config,
        run=run,
        task=task,
        profile=profile,
        spec=spec,
        base=base,
        base_groups=groups,
        example=example,
        oracle=oracle,
        predictor=predictor,
        cost=cost,
        multiple=multiple,
        console=console,
        base_is_object=model is not None,
    )
    ctx.timings["setup_s"] = time.perf_counter() - t
    return ctx


def _cost_model(
    config: RunConfig, groups: Any, lut: Any, base: nn.Module, input_shape: Any
) -> CostModel:
    """The goal's cost: LUT latency (MACs scaled to ms without a LUT), MACs or channels."""
    goal = config.goal
    if goal.sparsity is not None:
        return channels_cost_model(groups)
    if goal.flops_ratio is not None:
        return macs_cost_model(groups, base, input_shape)
    if lut is not None:
        return latency_cost_model(groups, lut, base)
    cost = macs_cost_model(groups, base, input_shape)
    cost.kind = "latency"  # MACs, calibrated to the measured baseline (no LUT)
    return cost


def _baseline(
    config: RunConfig,
    run: RunDir,
    data: DataSplits | StreamingSplits,
    spec: ModelSpec,
    console: Console,
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
    from edgeprune.pipeline import distributed

    if distributed.world() > 1:
        distributed.broadcast_job(
            {"kind": "train", "model": model, "epochs": config.model.baseline_epochs,
             "seed": config.seed}
        )  # fmt: skip
    train(
        model,
        data,
        epochs=config.model.baseline_epochs,
        seed=config.seed,
        out=run.baseline_weights,
    )
    return model.eval()


# ---------------------------------------------------------------------------- search


def no_prunable_groups(name: str, groups: GroupSet, ignored: Sequence[str]) -> str:
    """Why nothing can be pruned, group by group, and what would help."""
    why = "; ".join(f"{g.name}: {g.frozen_reason}" for g in groups.frozen[:4])
    more = f" (and {len(groups.frozen) - 4} more)" if len(groups.frozen) > 4 else ""
    if ignored:
        fix = f"take layers out of ignored_layers ({', '.join(ignored)})"
    else:
        fix = (
            "the model's output layers are never pruned; prune a larger model, or a backbone "
            "whose outputs feed heads (pass the heads' layers in ignored_layers)"
        )
    return (
        f"{name} has no prunable channel groups ({len(groups.frozen)} frozen: {why}{more}); "
        f"nothing to compress — {fix}"
    )
