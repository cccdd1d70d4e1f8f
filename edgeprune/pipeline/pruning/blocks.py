"""Residual blocks a model can do without: found by probing, dropped by name.

Depth pruning replaces a residual block ``y = x + f(x)`` (or ``relu(x + f(x))`` on a
non-negative input) by its shortcut, the identity. That is exact only for blocks whose
output has the input's shape and whose output *is* the input once the residual branch is
zero, so blocks are found by testing exactly that, not by class name:

1. one forward records the input and output of every submodule that holds weights and is
   called once with one tensor;
2. a submodule whose output shape equals its input shape is a candidate;
3. on a copy, the last layer with weights that the candidate runs (the residual branch's
   closing BN or conv) is zeroed; the candidate is a block when its output then equals its
   recorded input (to a relative 1e-5).

A downsampling block (shape changes), a plain conv-BN-ReLU (output 0, not the input), a
squeeze-excite gate (``x * 0.5``), and a stage of several blocks (only its last block's
branch is zeroed) all fail the probe. Of nested blocks only the innermost are offered.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from edgeprune.errors import PruningError
from edgeprune.pipeline.pruning.surgery import reached_layers

__all__ = ["BlockInfo", "drop_blocks", "find_blocks", "stage_of"]

_PROBE_RTOL = 1e-5


@dataclass(frozen=True)
class BlockInfo:
    """One residual block that can be replaced by the identity.

    Attributes:
        name: Module name of the block.
        layers: Names of the layers with weights it runs, in call order.
        shape: Shape of its input (and output) for the example input.
    """

    name: str
    layers: tuple[str, ...]
    shape: tuple[int, ...]

    @property
    def stage(self) -> str:
        """The block's parent module (``layer2`` for ``layer2.1``), for reports."""
        return stage_of(self.name)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "stage": self.stage, "layers": list(self.layers)}


def stage_of(name: str) -> str:
    """Parent module name of a block (``""`` for a top-level one)."""
    return name.rpartition(".")[0]


def find_blocks(model: nn.Module, example_input: torch.Tensor) -> tuple[BlockInfo, ...]:
    """Residual blocks of ``model`` that :func:`drop_blocks` may replace (see module doc).

    The model is not modified. Blocks are listed in call order.
    """
    work = copy.deepcopy(model).float().eval()
    # A seeded random input: every channel should carry signal (the caller's may be zeros).
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(tuple(example_input.shape), generator=gen)
    order, _ = reached_layers(work, x)
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    hooks = []
    for name, module in work.named_modules():
        if not name or not any(True for _ in module.parameters()):
            continue

        def hook(_m: nn.Module, args: tuple, out: object, n: str = name) -> None:
            inp = args[0] if len(args) == 1 else None
            if isinstance(inp, torch.Tensor) and isinstance(out, torch.Tensor):
                seen.setdefault(n, []).append((inp.detach().clone(), out.detach().clone()))
            else:
                seen.setdefault(n, []).extend([(x, x), (x, x)])  # not a candidate

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            work(x)
    finally:
        for h in hooks:
            h.remove()
    found: list[BlockInfo] = []
    for name, calls in seen.items():
        if len(calls) != 1 or calls[0][0].shape != calls[0][1].shape:
            continue
        layers = tuple(n for n in order if n.startswith(name + "."))
        if len(layers) < 2 or len(set(layers)) != len(layers):
            continue  # a block needs a branch with weights, each layer run once
        if _is_identity_when_zeroed(work, name, layers[-1], calls[0][0]):
            found.append(BlockInfo(name, layers, tuple(calls[0][0].shape)))
    inner = [
        b for b in found if not any(o.name.startswith(b.name + ".") for o in found if o is not b)
    ]
    first = {n: i for i, n in enumerate(order)}
    return tuple(sorted(inner, key=lambda b: first[b.layers[0]]))


@torch.no_grad()
def _is_identity_when_zeroed(model: nn.Module, name: str, last: str, inp: torch.Tensor) -> bool:
    block = copy.deepcopy(model.get_submodule(name))
    closing = block.get_submodule(last[len(name) + 1 :])
    for p in closing.parameters(recurse=False):
        p.zero_()
    try:
        out = block(inp)
    except Exception:
        return False
    if not isinstance(out, torch.Tensor) or out.shape != inp.shape:  # a block maps a tensor
        return False
    scale = max(float(inp.abs().max()), 1e-12)
    return float((out - inp).abs().max()) <= _PROBE_RTOL * scale


def drop_blocks(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """A copy of ``model`` with each named block replaced by ``nn.Identity``.

    Raises:
        PruningError: A name that is not a module of ``model``.
    """
    new = copy.deepcopy(model)
    modules = dict(new.named_modules())
    unknown = [n for n in names if not n or n not in modules]
    if unknown:
        raise PruningError(
            f"cannot drop {unknown}: not modules of {type(model).__name__} — take block "
            "names from find_blocks()"
        )
    for name in names:
        new.set_submodule(name, nn.Identity())
    return new.eval() if not model.training else new
