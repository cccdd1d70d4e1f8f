"""Model outputs beyond one tensor: a detector's tuple of heads, a segmentation dict.

Everything that compares, exports or measures a model's output goes through these helpers,
so a model may return a tensor, a tuple/list of tensors or a dict of them (nested too). The
flattened order is the one ``torch.onnx.export`` gives the graph outputs: tuples and lists
in order, dicts in insertion order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from edgeprune.errors import EdgepruneError

__all__ = ["flatten_outputs", "output_names", "output_shapes", "relative_max_diff"]


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """The tensors of a model output, in ONNX graph-output order.

    Raises:
        EdgepruneError: An element is neither a tensor, a sequence nor a mapping of them.
    """
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in flatten_outputs(v)]
    raise EdgepruneError(
        f"model output holds a {type(out).__name__}; edgeprune needs tensors, or tuples, "
        "lists or dicts of tensors — return those from forward"
    )


def output_names(out: Any, single: str = "logits") -> list[str]:
    """Graph output names for ``out``: ``single`` for one tensor, else dict keys joined by
    ``.`` and sequence positions (``out.0``, ``boxes``, ``aux.1``)."""
    if isinstance(out, torch.Tensor):
        return [single]

    def walk(o: Any, prefix: str) -> list[str]:
        if isinstance(o, torch.Tensor):
            return [prefix]
        items = o.items() if isinstance(o, Mapping) else enumerate(o)
        return [n for k, v in items for n in walk(v, f"{prefix}.{k}" if prefix else str(k))]

    names = walk(out, "")
    return [n if not n[0].isdigit() else f"out.{n}" for n in names]


def output_shapes(out: Any) -> tuple[tuple[int, ...], ...]:
    """Shape of every output tensor, in flattened order."""
    return tuple(tuple(t.shape) for t in flatten_outputs(out))


def relative_max_diff(reference: Any, candidate: Any) -> tuple[float, float] | str:
    """Largest ``|candidate - reference|`` over all outputs and the reference's largest
    magnitude, or a description of why they cannot be compared (count or shape differs)."""
    refs, cands = flatten_outputs(reference), flatten_outputs(candidate)
    if len(refs) != len(cands):
        return f"{len(cands)} outputs != {len(refs)}"
    err = scale = 0.0
    for r, c in zip(refs, cands, strict=True):
        if r.shape != c.shape:
            return f"output shape {tuple(c.shape)} != {tuple(r.shape)}"
        if r.numel():
            err = max(err, float((c.double() - r.double()).abs().max()))
            scale = max(scale, float(r.abs().max()))
    return err, scale
