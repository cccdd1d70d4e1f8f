"""What a compress run holds besides its checkpoint (rebuilt on resume), and replay helpers."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.console import Console
from torch import nn

from edgeprune.config import RunConfig
from edgeprune.latency.oracle import LatencyOracle
from edgeprune.models import ModelSpec
from edgeprune.pipeline.pruning.groups import GroupSet
from edgeprune.pipeline.pruning.prune import apply_removed
from edgeprune.pipeline.run_dir import RunDir
from edgeprune.pipeline.search.cost import CostModel
from edgeprune.pipeline.tasks import Task
from edgeprune.profiles import DeviceProfile


@dataclass
class RunContext:
    """Everything a run needs that is not in its checkpoint (rebuilt on resume)."""

    config: RunConfig
    run: RunDir
    task: Task  # scores, recovers and calibrates pruned models (the user's metric)
    profile: DeviceProfile
    spec: ModelSpec
    base: nn.Module  # the unpruned model: teacher and latency reference
    base_groups: GroupSet
    example: torch.Tensor
    oracle: LatencyOracle
    predictor: Any  # LatencyLUT or None
    cost: CostModel  # the goal's cost of a channel plan (latency in ms, MACs or channels)
    multiple: int
    console: Console
    timings: dict[str, float] = field(default_factory=dict)
    # The base is the caller's model object (edgeprune.compress), not buildable from spec.
    base_is_object: bool = False
    # Where the channel search starts: the base without the residual blocks depth pruning
    # dropped (the base itself when none were). Group ids and removed channels refer to it.
    start: nn.Module = None  # type: ignore[assignment]
    start_groups: GroupSet = None  # type: ignore[assignment]
    dropped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.start is None:
            self.start = self.base
        if self.start_groups is None:
            self.start_groups = self.base_groups

    def use_start(
        self, dropped: tuple[str, ...], model: nn.Module, groups: GroupSet, cost: CostModel
    ) -> None:
        """Start the channel search from ``model`` (the base without ``dropped`` blocks)."""
        self.dropped, self.start, self.start_groups, self.cost = dropped, model, groups, cost

    def proxy_accuracy(self, model: nn.Module) -> float:
        """The task's proxy (top-1 on the validation subset, or the user's metric) after
        adaptive BN re-estimation (EagleEye)."""
        return self.task.score(model)


def rebuild(
    ctx: RunContext, removed_base: dict[str, list[int]], weights: dict[str, Any]
) -> nn.Module:
    """The pruned model of a checkpoint: start + removed channels (its coordinates) + weights."""
    removed = {int(g): tuple(ix) for g, ix in removed_base.items() if ix}
    model = (
        apply_removed(ctx.start, ctx.start_groups, removed) if removed else copy.deepcopy(ctx.start)
    )
    model.load_state_dict(weights)
    return model.eval()


def rebuild_arch(ctx: RunContext, removed_base: dict[str, list[int]]) -> nn.Module:
    """Architecture only (base weights) of a pruned state, for LUT re-calibration."""
    removed = {int(g): tuple(ix) for g, ix in removed_base.items() if ix}
    return apply_removed(ctx.start, ctx.start_groups, removed, verify=False)
