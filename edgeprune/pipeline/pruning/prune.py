"""Apply a PruningPlan: pick the channels to remove, then cut them out of a fresh copy.

The search applies thousands of plans to one base model, so this path never re-traces the
model: each group's operations were recorded by name in :func:`build_groups`, and removal
indices (in the base model's coordinates) are merged per layer and applied once. Merging is
what keeps concat-fed layers right: two groups can cut different input channels of the same
conv, and applying them one after the other would shift the second group's indices.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import torch
from torch import nn

from edgeprune.errors import PruningError
from edgeprune.outputs import output_shapes
from edgeprune.pipeline.pruning.importance import get_importance
from edgeprune.pipeline.pruning.surgery import RemovedMap, apply_removed_

if TYPE_CHECKING:
    from edgeprune.pipeline.pruning.groups import GroupInfo, GroupSet
    from edgeprune.pipeline.pruning.plan import PruningPlan

__all__ = ["PruneResult", "apply_removed", "prune", "removed_from_scores"]


@dataclass(frozen=True)
class PruneResult:
    """A pruned copy and how it was made.

    Attributes:
        model: The new, pruned model (eval mode); the input model is untouched.
        plan: The plan applied.
        removed: Group id -> removed channel indices (base-model coordinates), sorted.
        prune_ms: Wall time of the copy + surgery + verification.
    """

    model: nn.Module
    plan: PruningPlan
    removed: Mapping[int, tuple[int, ...]]
    prune_ms: float


def prune(
    model: nn.Module,
    groups: GroupSet,
    plan: PruningPlan,
    importance: Callable[[GroupInfo, nn.Module, int], torch.Tensor] | str = "l1",
    *,
    verify: bool = True,
) -> PruneResult:
    """Return a pruned copy of ``model`` that keeps ``plan.kept(group)`` channels per group.

    Args:
        model: The model ``groups`` was built from (same architecture and channel counts).
        groups: From :func:`edgeprune.pipeline.pruning.groups.build_groups`.
        plan: Channels kept per group (see :func:`plan_from_ratios`).
        importance: A criterion name (``l1``, ``l2``, ``taylor`` needs data so pass an
            object, ``bn_scale``, ``random``, ``cluster``) or a callable
            ``(group, model, n_keep) -> scores`` (higher = more important).
        verify: Run the pruned copy once and check its output shape.

    Raises:
        PruningError: The plan does not fit ``groups`` or ``model`` does not match them.
    """
    t0 = time.perf_counter()
    plan.validate(groups)
    _check_matches(model, groups)
    score = get_importance(importance) if isinstance(importance, str) else importance
    removed: dict[int, tuple[int, ...]] = {}
    for gid, keep in plan.keep.items():
        info = groups.groups[gid]
        if keep < info.width:
            scores = score(info, model, keep)
            if tuple(scores.shape) != (info.width,):
                raise PruningError(
                    f"importance returned shape {tuple(scores.shape)} for group {gid} "
                    f"({info.name}), expected ({info.width},) — one score per channel"
                )
            removed[gid] = removed_from_scores(info, scores, keep)
    new = apply_removed(model, groups, removed, verify=verify)
    ms = (time.perf_counter() - t0) * 1e3
    return PruneResult(new, plan, MappingProxyType(removed), ms)


def apply_removed(
    model: nn.Module, groups: GroupSet, removed: RemovedMap, *, verify: bool = True
) -> nn.Module:
    """Return a copy of ``model`` without the given channels (no importance scoring).

    Used to replay a saved pruning exactly.

    Raises:
        PruningError: Unknown group, indices out of range or duplicated, a frozen group, all
            channels removed, or (``verify``) a pruned model whose output shape changed.
    """
    by_id: dict[int, GroupInfo] = {}
    for gid, idxs in removed.items():
        info = groups[gid]
        bad = [i for i in idxs if not 0 <= int(i) < info.width]
        if bad or len(set(idxs)) != len(idxs) or len(idxs) >= info.width:
            raise PruningError(
                f"removed channels for group {gid} ({info.name}) must be distinct indices in "
                f"[0, {info.width}) leaving at least one — got {sorted(idxs)[:8]}..."
            )
        if idxs and info.frozen:
            raise PruningError(
                f"group {gid} ({info.name}) is frozen ({info.frozen_reason}) — "
                "do not remove its channels"
            )
        by_id[gid] = info
    new = copy.deepcopy(model).eval()
    apply_removed_(new, by_id, removed)
    if verify:
        x = groups.example_input()
        try:
            with torch.no_grad():
                out = new(x)
            shape = output_shapes(out)
        except Exception as exc:
            raise PruningError(
                f"pruned {groups.model_class} no longer runs ({type(exc).__name__}: {exc}) — "
                "a group was not traced correctly; pass its layers in ignored_layers"
            ) from exc
        if shape != groups.output_shapes:
            raise PruningError(
                f"pruned {groups.model_class} returns shapes {list(shape)}, expected "
                f"{list(groups.output_shapes)} — pass the output layers in ignored_layers"
            )
    return new


def _check_matches(model: nn.Module, groups: GroupSet) -> None:
    modules = dict(model.named_modules())
    for info in groups.prunable:
        layer = modules.get(info.name)
        width = getattr(layer, "out_channels", getattr(layer, "out_features", None))
        if width != info.width:
            raise PruningError(
                f"model does not match its groups: layer {info.name!r} has {width} output "
                f"channels, groups say {info.width} — build_groups() on this model (prune the "
                "unpruned base, not an already pruned copy)"
            )


def removed_from_scores(info: GroupInfo, scores: torch.Tensor, n_keep: int) -> tuple[int, ...]:
    """Indices to remove: the lowest-scoring channels (ties: lower index goes first).

    In a group with a grouped conv the same positions go from every channel block (scores
    are averaged over blocks), so the conv's groups stay equal.
    """
    n_remove = info.width - n_keep
    if n_remove <= 0:
        return ()
    step = info.channel_step
    block = info.width // step
    per_pos = scores.detach().double().cpu().reshape(step, block).mean(0).tolist()
    order = sorted(range(block), key=lambda i: (per_pos[i], i))
    drop = order[: n_remove // step]
    return tuple(sorted(p + b * block for b in range(step) for p in drop))
