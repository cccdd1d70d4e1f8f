"""Layer surgery by name: cut removed channels out of a model, or zero them, and the safety
probe that compares the two. Knows nothing of how groups are found or scored, so the
group builder can use it without a cycle.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from edgeprune.outputs import relative_max_diff

__all__ = [
    "MemberOp",
    "RemovedMap",
    "apply_removed_",
    "find_unsafe_groups",
    "forward_probe",
    "reached_layers",
    "zero_removed_",
]


@dataclass(frozen=True)
class MemberOp:
    """One Torch-Pruning operation of a group, addressed by layer name.

    Attributes:
        layer: Module name (or parameter name when ``is_param``).
        handler: Torch-Pruning pruning function (e.g. ``tp.prune_conv_out_channels``).
        is_out: True when it removes output channels (the layer produces the group's channels).
        is_param: True for an unwrapped ``nn.Parameter`` (replaced, not edited in place).
        pruning_dim: Dimension Torch-Pruning cuts for parameters (and layer norms).
        idxs: Indices in the layer's own coordinates, parallel to ``root_idxs``.
        root_idxs: Group channel each index belongs to (several when a flatten spreads one
            channel over many features).
    """

    layer: str
    handler: Callable[..., object]
    is_out: bool
    is_param: bool
    pruning_dim: int
    idxs: tuple[int, ...]
    root_idxs: tuple[int, ...]

    def select(self, removed: frozenset[int]) -> list[int]:
        """This layer's indices that carry the removed group channels."""
        return [i for i, r in zip(self.idxs, self.root_idxs, strict=True) if r in removed]


class ChannelGroup(Protocol):
    """What surgery needs of a group (:class:`~edgeprune.pipeline.pruning.groups.GroupInfo`)."""

    @property
    def id(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def channel_step(self) -> int: ...
    @property
    def ops(self) -> tuple[MemberOp, ...]: ...


RemovedMap = Mapping[int, Sequence[int]]


def _merged_ops(
    groups: Mapping[int, ChannelGroup], removed: RemovedMap
) -> dict[tuple[str, Callable[..., object]], tuple[MemberOp, set[int]]]:
    """Union of indices per (layer, handler): each layer dimension is cut exactly once."""
    merged: dict[tuple[str, Callable[..., object]], tuple[MemberOp, set[int]]] = {}
    for gid, idxs in removed.items():
        if not idxs:
            continue
        chosen = frozenset(int(i) for i in idxs)
        for op in groups[gid].ops:
            sel = op.select(chosen)
            if sel:
                entry = merged.setdefault((op.layer, op.handler), (op, set()))
                entry[1].update(sel)
    return merged


def apply_removed_(
    model: nn.Module, groups: Mapping[int, ChannelGroup], removed: RemovedMap
) -> None:
    """Cut the removed channels out of ``model`` in place (indices in its own coordinates)."""
    for (layer, handler), (op, idxs) in _merged_ops(groups, removed).items():
        owner = getattr(handler, "__self__", None)
        if owner is not None and hasattr(owner, "pruning_dim"):
            owner.pruning_dim = op.pruning_dim  # Torch-Pruning's pruners are shared singletons
        if op.is_param:
            parent_name, _, attr = layer.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, handler(getattr(parent, attr), sorted(idxs)))
        else:
            handler(model.get_submodule(layer), sorted(idxs))


@torch.no_grad()
def zero_removed_(
    model: nn.Module, groups: Mapping[int, ChannelGroup], removed: RemovedMap
) -> None:
    """Zero, in place, every weight that produces the removed channels.

    The result computes what the pruned model computes: each removed channel is 0 everywhere
    (conv/linear rows and biases, and the scale *and shift* of every norm layer in the group,
    so a BN after a concat does not turn the zero back into its bias).
    """
    for (layer, _), (op, idxs) in _merged_ops(groups, removed).items():
        if not op.is_out:
            continue
        index = torch.tensor(sorted(idxs))
        if op.is_param:
            param = model.get_parameter(layer)
            param.index_fill_(op.pruning_dim % param.dim(), index, 0.0)
            continue
        module = model.get_submodule(layer)
        dim = 1 if getattr(module, "transposed", False) else 0
        for pname in ("weight", "bias"):
            p = getattr(module, pname, None)
            if isinstance(p, torch.Tensor) and p.dim() > 0:
                p.index_fill_(dim if pname == "weight" else 0, index, 0.0)


def probe_removed(info: ChannelGroup) -> tuple[int, ...]:
    """The channels the safety probe removes: one middle position in each channel block."""
    block = info.width // info.channel_step
    return tuple(block // 2 + b * block for b in range(info.channel_step))


def find_unsafe_groups(
    model: nn.Module, candidates: Sequence[ChannelGroup], input_shape: Sequence[int], rtol: float
) -> dict[int, str]:
    """Groups whose removal is not the same as zeroing their channels, with what went wrong.

    Probes all candidates at once and bisects only when that fails (one bad group among n
    costs about 2 log2(n) probes instead of n).
    """
    if not candidates:
        return {}
    base = copy.deepcopy(model).float().eval()
    # A seeded random input, not the caller's (which may be all zeros): the probe compares
    # functions, so every channel should carry signal. (float32: float64 depthwise convs are
    # 10x slower on CPU; the tolerance is relative to the output's scale.)
    x = torch.randn(tuple(input_shape), generator=torch.Generator().manual_seed(2))
    reasons: dict[int, str] = {}

    def search(part: Sequence[ChannelGroup], known_bad: str | None = None) -> None:
        reason = known_bad if known_bad is not None else _probe(base, part, x, rtol)
        if reason is None:
            return
        if len(part) == 1:
            reasons[part[0].id] = reason
            return
        left, right = part[: len(part) // 2], part[len(part) // 2 :]
        left_reason, right_reason = _probe(base, left, x, rtol), _probe(base, right, x, rtol)
        if left_reason is None and right_reason is None:
            for g in part:  # only the combination fails: test each group on its own
                search([g])
            return
        search(left, left_reason)
        search(right, right_reason)

    # Removing a channel from a LayerNorm/GroupNorm input changes the statistics over the
    # channels, so removal cannot equal zeroing exactly: those groups are probed one at a
    # time against a tolerance of twice the fraction of channels the probe removes (seen:
    # 0.5-1.0x that fraction on ConvNeXt blocks; a wrong mapping moves the output by the size
    # of the signal). Every other group must match to float rounding.
    normed = [g for g in candidates if _normalises_channels(base, g)]
    for g in normed:
        tol = max(rtol, 2.0 * len(probe_removed(g)) / g.width)
        reason = _probe(base, [g], x, tol)
        if reason is not None:
            reasons[g.id] = reason
    search([g for g in candidates if g not in normed])
    return reasons


def _normalises_channels(model: nn.Module, group: ChannelGroup) -> bool:
    for op in group.ops:
        if op.is_param:
            continue
        try:
            layer = model.get_submodule(op.layer)
        except AttributeError:
            continue
        if isinstance(layer, (nn.LayerNorm, nn.GroupNorm)):
            return True
    return False


def _probe(
    base: nn.Module, groups: Sequence[ChannelGroup], x: torch.Tensor, rtol: float
) -> str | None:
    """None when removing the probe channels equals zeroing them; else what went wrong."""
    removed = {g.id: probe_removed(g) for g in groups}
    by_id = {g.id: g for g in groups}
    zeroed = copy.deepcopy(base)
    pruned = copy.deepcopy(base)
    try:
        zero_removed_(zeroed, by_id, removed)
        apply_removed_(pruned, by_id, removed)
    except Exception as exc:  # a mapping Torch-Pruning got wrong: the group is unsafe
        first = str(exc).strip().splitlines()
        return f"layer surgery failed ({type(exc).__name__}: {first[0][:200] if first else ''})"
    return forward_probe(zeroed, pruned, x, rtol)


def forward_probe(
    reference: nn.Module, candidate: nn.Module, x: torch.Tensor, rtol: float
) -> str | None:
    """None when ``candidate(x)`` matches ``reference(x)``; else a short description."""
    with torch.no_grad():
        ref = reference(x)
        try:
            out = candidate(x)
        except Exception as exc:
            first = str(exc).strip().splitlines()
            return f"forward fails ({type(exc).__name__}: {first[0][:200] if first else ''})"
    diff = relative_max_diff(ref, out)
    if isinstance(diff, str):
        return diff
    err, scale = diff
    tol = rtol * scale
    if not err <= tol:
        return f"output changes by {err:.3g} (more than zeroing the channels does)"
    return None


def reached_layers(model: nn.Module, x: torch.Tensor) -> tuple[tuple[str, ...], object]:
    """Run ``model(x)`` once; return the names of the layers with weights it ran, in call
    order, and the output."""
    calls: list[str] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o, n=n: calls.append(n))
        for n, m in model.named_modules()
        if n and any(True for _ in m.parameters(recurse=False))
    ]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return tuple(calls), out
