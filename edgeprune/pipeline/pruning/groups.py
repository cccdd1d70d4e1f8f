"""Prunable channel groups of a model, found with Torch-Pruning's dependency graph.

A *group* is a set of channels that must go together: a conv's outputs, its BN, the next
layer's inputs, and everything tied to them by residual adds, concats or depthwise convs.
:func:`build_groups` traces the model once (Torch-Pruning 1.6.1), then stores each group as
plain data: for every member layer, *by name*, which pruning function touches which indices.
Pruning a fresh copy then needs no new trace (a trace of ResNet-56 costs more than applying a
plan), and the result is the same on any copy of the architecture.

Torch-Pruning's traps, handled here rather than trusted:

* groups are listed with our own deterministic ids and names (definition order of the layer
  that produces the channels), one plan entry per group, never per conv;
* the group that feeds the model output (the classifier) is frozen, as are groups holding a
  caller's ``ignored_layers``;
* some groups are wrong (``F.pad`` zero-pad shortcuts are traced as elementwise): every group
  is probed by removing a few channels on a float64 copy and comparing the output with the
  original whose same channels are zeroed; a group that fails is frozen with the reason;
* a model whose forward branches on data is refused (one trace sees one path).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from edgeprune.errors import EdgepruneError, PruningError
from edgeprune.outputs import output_shapes
from edgeprune.pipeline.pruning.surgery import MemberOp, find_unsafe_groups, reached_layers

__all__ = ["GroupInfo", "GroupSet", "MemberOp", "build_groups", "count_macs_params"]

# Tolerance of the probe, relative to the output's largest magnitude: float32 rounding stays
# near 1e-6 of it; a wrongly cut channel changes the output by far more.
_PROBE_RTOL = 1e-4


@dataclass(frozen=True)
class GroupInfo:
    """One prunable channel group.

    Attributes:
        id: Stable index (definition order of the layer that produces the channels).
        name: That layer's name.
        members: Names of every layer whose weights the group touches (outputs or inputs).
        width: Channels in the group.
        macs_share: Fraction of the model's MACs in conv/linear layers whose input or output
            channels are this group (a layer counts for both its groups, so shares sum to ~2).
        frozen_reason: Why the group must keep all channels, or None when it is prunable.
        channel_step: Channels are removed in multiples of this (the ``groups`` of a grouped,
            non-depthwise conv among the members; 1 otherwise).
        ops: The pruning operations, by layer name (used by prune and importance).
    """

    id: int
    name: str
    members: tuple[str, ...]
    width: int
    macs_share: float
    frozen_reason: str | None = None
    channel_step: int = 1
    ops: tuple[MemberOp, ...] = field(default=(), repr=False, compare=False)

    @property
    def frozen(self) -> bool:
        """True when the group may not be pruned."""
        return self.frozen_reason is not None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (without the pruning operations)."""
        return {
            "id": self.id,
            "name": self.name,
            "members": list(self.members),
            "width": self.width,
            "macs_share": self.macs_share,
            "frozen_reason": self.frozen_reason,
            "channel_step": self.channel_step,
        }


@dataclass(frozen=True)
class GroupSet:
    """All channel groups of one architecture, plus what pruning needs to verify a result.

    Attributes:
        groups: Every group, frozen ones included, ordered by id.
        input_shape: Shape of the example input the groups were traced with.
        output_shapes: Shape of every model output tensor for that input (one for a
            classifier; a detector's heads or a dict of maps give several).
        macs: MACs of the unpruned model for ``input_shape``.
        params: Parameters of the unpruned model.
        model_class: Class name of the model, for messages.
        ignored_layers: Layer names the caller asked to keep unpruned.
    """

    groups: tuple[GroupInfo, ...]
    input_shape: tuple[int, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    macs: int
    params: int
    model_class: str
    ignored_layers: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.groups)

    def __iter__(self) -> Iterator[GroupInfo]:
        return iter(self.groups)

    def __getitem__(self, group_id: int) -> GroupInfo:
        if not isinstance(group_id, int) or not 0 <= group_id < len(self.groups):
            raise PruningError(
                f"unknown group id {group_id!r} for {self.model_class} "
                f"(valid ids: 0..{len(self.groups) - 1}) — take ids from build_groups()"
            )
        return self.groups[group_id]

    @property
    def prunable(self) -> tuple[GroupInfo, ...]:
        """Groups that may lose channels."""
        return tuple(g for g in self.groups if not g.frozen)

    @property
    def frozen(self) -> tuple[GroupInfo, ...]:
        """Groups that keep all channels, each with its ``frozen_reason``."""
        return tuple(g for g in self.groups if g.frozen)

    def example_input(self) -> torch.Tensor:
        """A deterministic input of ``input_shape`` (for forward checks and MAC counts)."""
        gen = torch.Generator().manual_seed(0)
        return torch.randn(self.input_shape, generator=gen)


def count_macs_params(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """MACs and parameters of ``model`` for one forward of ``example_input``.

    Uses ``tp.utils.count_ops_and_params`` (which runs on a copy; ``model`` is untouched).
    """
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example_input)
    return int(macs), int(params)


def build_groups(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    ignored_layers: Sequence[str] | None = None,
) -> GroupSet:
    """List the prunable channel groups of ``model``.

    Args:
        model: Any ``nn.Module`` whose forward runs on ``example_input``; not modified.
        example_input: One input batch (batch size 1 is enough).
        ignored_layers: Names of layers whose output channels must not be pruned.

    Returns:
        The groups; frozen ones carry the reason.

    Raises:
        PruningError: The model does not run on the input, branches on data, or names in
            ``ignored_layers`` are not layers of the model.
    """
    name = type(model).__name__
    ignored = tuple(ignored_layers or ())
    names = dict(model.named_modules())
    unknown = [n for n in ignored if n not in names]
    if unknown:
        raise PruningError(
            f"ignored_layers {unknown} are not layers of {name} — use names from "
            "model.named_modules()"
        )
    work = copy.deepcopy(model).eval()
    x = example_input.detach()
    try:
        first_calls, out = reached_layers(work, x)
    except Exception as exc:
        raise PruningError(
            f"{name} does not run on an input of shape {tuple(x.shape)}: {exc} — "
            "pass an example input the model accepts"
        ) from exc
    try:
        output_shapes(out)
    except EdgepruneError as exc:
        raise PruningError(f"{name}: {exc}") from exc
    _check_static_control_flow(work, x, first_calls, name)
    unmapped: dict[Any, str] = {}
    with _tolerant_index_mapping(unmapped):
        try:
            with torch.enable_grad():
                graph = tp.DependencyGraph().build_dependency(work, x, verbose=False)
        except Exception as exc:
            raise PruningError(
                f"Torch-Pruning cannot trace {name} ({type(exc).__name__}: {_first_line(exc)})"
                " — make the forward traceable by autograd, or prune a submodule"
            ) from exc
        _check_all_layers_traced(work, graph, x, name)
        raw = _trace_groups(work, graph, ignored, unmapped)
    macs, params, layer_macs = _layer_macs(work, x)
    infos = [
        GroupInfo(
            id=i,
            name=r.name,
            members=r.members,
            width=r.width,
            macs_share=sum(layer_macs.get(m, 0) for m in r.macs_layers) / max(macs, 1),
            frozen_reason=r.frozen_reason,
            channel_step=r.step,
            ops=r.ops,
        )
        for i, r in enumerate(raw)
    ]
    # A group already at its narrowest (one channel step) has nothing left to remove, so
    # there is nothing to probe: removing its last channels would fail for the wrong reason
    # and mark a pruned-down group "unsafe" (seen when re-tracing a model pruned to 1 channel).
    probe = [g for g in infos if not g.frozen and g.width > g.channel_step]
    unsafe = find_unsafe_groups(model, probe, x.shape, _PROBE_RTOL)
    infos = [
        dataclasses.replace(g, frozen_reason=f"unsafe to prune: {unsafe[g.id]}")
        if g.id in unsafe
        else g
        for g in infos
    ]
    return GroupSet(
        groups=tuple(infos),
        input_shape=tuple(x.shape),
        output_shapes=output_shapes(out),
        macs=macs,
        params=params,
        model_class=name,
        ignored_layers=ignored,
    )


@contextlib.contextmanager
def _tolerant_index_mapping(failed: dict[Any, str]) -> Iterator[None]:
    """Torch-Pruning's index mapping, with each op's mapping tried on its own.

    Torch-Pruning maps channel indices through concat, split, reshape, ... at the end of
    ``build_dependency`` and again in every ``get_pruning_group``; on some graphs one of those
    raises (ShuffleNetV2's channel shuffle: ``ZeroDivisionError`` in its reshape mapping) and
    takes the whole model down. Inside this context an op whose mapping fails is recorded in
    ``failed`` (node -> what failed) and skipped, so the groups through it are frozen with
    that reason and the rest of the model still prunes. Equal to Torch-Pruning's own loop
    (Torch-Pruning 1.6.1) when nothing fails.
    """
    mapping = tp.dependency.index_mapping
    strict = mapping.update_index_mapping
    kinds = {
        tp.ops.OPTYPE.CONCAT: mapping.update_concat_index_mapping,
        tp.ops.OPTYPE.SPLIT: mapping.update_split_index_mapping,
        tp.ops.OPTYPE.RESHAPE: mapping.update_reshape_index_mapping,
        tp.ops.OPTYPE.UNBIND: mapping.update_unbind_index_mapping,
        tp.ops.OPTYPE.EXPAND: mapping.update_expand_index_mapping,
        tp.ops.OPTYPE.SLICE: mapping.update_slice_index_mapping,
    }

    def tolerant(graph: tp.DependencyGraph) -> None:
        for node in graph.module2node.values():
            update = kinds.get(node.type)
            if update is None or node in failed:
                continue
            try:
                update(graph, node)
            except Exception as exc:
                failed[node] = f"its {node.type.name.lower()} op ({_first_line(exc)})"

    mapping.update_index_mapping = tolerant
    try:
        yield
    finally:
        mapping.update_index_mapping = strict


@dataclass(frozen=True)
class _RawGroup:
    name: str
    members: tuple[str, ...]
    width: int
    step: int
    ops: tuple[MemberOp, ...]
    macs_layers: tuple[str, ...]
    frozen_reason: str | None


def _trace_groups(
    model: nn.Module,
    graph: tp.DependencyGraph,
    ignored: tuple[str, ...],
    unmapped: Mapping[Any, str] | None = None,
) -> list[_RawGroup]:
    """Walk candidate roots in definition order (not trace order) so ids and names are stable."""
    unmapped = unmapped or {}
    module_names = {m: n for n, m in model.named_modules()}
    visited: set[nn.Module] = set()
    raw: list[_RawGroup] = []
    for root_name, root in model.named_modules():
        if root in visited or root not in graph.module2node:
            continue
        if not isinstance(root, (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR)):
            continue
        pruner = graph.get_pruner_of_module(root)
        width = None if pruner is None else pruner.get_out_channels(root)
        if not width:
            continue
        group = graph.get_pruning_group(root, pruner.prune_out_channels, list(range(width)))
        ops: list[MemberOp] = []
        reasons: list[str] = []
        out_of_range: list[str] = []
        for item in group:
            dep, node = item.dep, item.dep.target
            if node in unmapped:
                reasons.append(f"Torch-Pruning cannot map channels through {unmapped[node]}")
            is_out = graph.is_out_channel_pruning_fn(dep.handler)
            if is_out and not node.outputs:
                reasons.append("produces a model output (classifier or head)")
            if isinstance(node.module, nn.Parameter):
                layer = graph._param_to_name.get(node.module, "?")
            elif node.module in module_names:
                layer = module_names[node.module]
            else:
                continue  # Torch-Pruning's placeholder ops (add, cat, ...): nothing to prune
            if is_out:
                visited.add(node.module)
            if any(r is None for r in item.root_idxs):
                reasons.append(f"index mapping through {layer} is not traceable")
                continue
            size = _dim_size(graph, node, is_out)
            if size is not None and any(not 0 <= int(i) < size for i in item.idxs):
                # Torch-Pruning maps indices through a split/chunk feeding a concat (YOLOv8's
                # C2f) or a reshape past the layer's own channels: cutting them would fail.
                out_of_range.append(layer)
                continue
            ops.append(
                MemberOp(
                    layer=layer,
                    handler=dep.handler,
                    is_out=is_out,
                    is_param=isinstance(node.module, nn.Parameter),
                    pruning_dim=node.pruning_dim,
                    idxs=tuple(int(i) for i in item.idxs),
                    root_idxs=tuple(int(i) for i in item.root_idxs),
                )
            )
        if out_of_range:
            names = list(dict.fromkeys(out_of_range))
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            reasons.append(
                "Torch-Pruning maps its channels out of range through a split/concat or "
                f"reshape ({', '.join(names[:3])}{more})"
            )
        hit = sorted({op.layer for op in ops if op.is_out and op.layer in ignored})
        if hit:
            reasons.append(f"contains ignored layer(s) {', '.join(hit)}")
        members = tuple(dict.fromkeys(op.layer for op in ops))
        step = _channel_step(model, ops)
        # A group at its narrowest (width <= step) stays prunable with nothing left to
        # remove: multi-step pruning needs the same group list at every step.
        raw.append(
            _RawGroup(
                name=root_name,
                members=members,
                width=width,
                step=step,
                ops=tuple(ops),
                macs_layers=tuple(
                    m for m in members if isinstance(_get(model, m), (nn.Conv2d, nn.Linear))
                ),
                frozen_reason="; ".join(dict.fromkeys(reasons)) or None,
            )
        )
    return raw


def _dim_size(graph: tp.DependencyGraph, node: Any, is_out: bool) -> int | None:
    """Channels of the dimension a member op cuts (None when Torch-Pruning cannot say)."""
    mod = node.module
    if isinstance(mod, nn.Parameter):
        return int(mod.shape[node.pruning_dim % mod.dim()]) if mod.dim() else None
    pruner = graph.get_pruner_of_module(mod)
    if pruner is None:
        return None
    try:
        size = pruner.get_out_channels(mod) if is_out else pruner.get_in_channels(mod)
    except Exception:  # a pruner without channels for this layer type
        return None
    return int(size) if size else None


def _get(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _channel_step(model: nn.Module, ops: Sequence[MemberOp]) -> int:
    """A grouped (non-depthwise) conv keeps its groups equal only if each loses as many."""
    step = 1
    for op in ops:
        layer = _get(model, op.layer)
        if isinstance(layer, nn.modules.conv._ConvNd) and layer.groups > 1:
            depthwise = layer.groups == layer.out_channels
            if not depthwise:
                step = math.lcm(step, layer.groups)
    return step


def _layer_macs(model: nn.Module, x: torch.Tensor) -> tuple[int, int, dict[str, int]]:
    with torch.no_grad():
        macs, params, per_layer, _ = tp.utils.count_ops_and_params(model, x, layer_wise=True)
    names = {m: n for n, m in model.named_modules()}
    by_name = {names[m]: int(v) for m, v in per_layer.items() if m in names and v}
    return int(macs), int(params), by_name


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _check_static_control_flow(
    model: nn.Module, x: torch.Tensor, first: tuple[str, ...], name: str
) -> None:
    """A second, very different input must run the same layers in the same order."""
    gen = torch.Generator().manual_seed(1)
    other = -3.0 * torch.randn(x.shape, generator=gen, dtype=x.dtype) - 1.0
    second, _ = reached_layers(model, other)
    if first != second:
        diff = sorted(set(first) ^ set(second)) or ["(same layers, different order)"]
        raise PruningError(
            f"model {name} has data-dependent control flow (layers {', '.join(diff[:5])} run "
            "for some inputs only); Torch-Pruning traces one path; make the forward static"
        )


def _check_all_layers_traced(
    model: nn.Module, graph: tp.DependencyGraph, x: torch.Tensor, name: str
) -> None:
    """Layers with weights the trace never reached would keep stale channel counts."""
    # A module that owns a bare parameter beside its children (ConvNeXt's layer scale
    # ``gamma``) is no node itself: Torch-Pruning traces the parameter as its own node.
    missed = [
        n
        for n, m in model.named_modules()
        if n
        and any(True for _ in m.parameters(recurse=False))
        and m not in graph.module2node
        and not all(p in graph.module2node for p in m.parameters(recurse=False))
    ]
    if not missed:
        return
    detail = _fx_control_flow_error(model)
    why = f"; torch.fx: {detail}" if detail else ""
    raise PruningError(
        f"model {name} has data-dependent control flow or unused layers (layers "
        f"{', '.join(missed[:5])} never run for the example input{why}); Torch-Pruning traces "
        "one path; make the forward static and remove unused layers"
    )


def _fx_control_flow_error(model: nn.Module) -> str | None:
    """torch.fx names the control-flow statement that depends on a tensor, when there is one."""
    try:
        torch.fx.symbolic_trace(model)
    except Exception as exc:
        return _first_line(exc)
    return None
