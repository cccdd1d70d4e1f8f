"""One architecture through ``edgeprune.compress`` as a new user would run it, checked.

Used by ``bench/bench_conformance.py`` (the table) and ``tests/conformance/`` (the suite):
random weights with BatchNorm statistics set by a few forward passes, a fidelity metric
(how close the candidate's outputs stay to the original's), a short budget; then the
checks every architecture must pass: groups found (frozen ones with a reason), a plan
applied, the ONNX export validated against torch, latency measured, and
``load_pruned(base=)`` reproducing the pruned model's outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

import edgeprune
from edgeprune.errors import EdgepruneError
from edgeprune.outputs import flatten_outputs

# A short search: one latency step, few candidates, no distillation (random weights have
# nothing to recover); depth pruning stays on (it is part of what is being checked).
FAST = {
    "search.steps": 1,
    "search.samples": 2,
    "search.rl_epochs": 1,
    "finetune.total_epochs": 0,
}


@dataclass(frozen=True)
class ConformanceRow:
    """What one architecture did; ``error`` is set when compress refused or failed."""

    name: str
    exercises: str
    params: int
    groups: int
    frozen: dict[str, str]
    blocks_found: int
    blocks_dropped: int
    speedup_asked: float
    speedup_measured: float | None
    budget_met: bool | None
    export_max_abs_diff: float | None
    replay_max_abs_diff: float | None
    fidelity: float | None
    wall_s: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def set_bn_statistics_(model: nn.Module, x: torch.Tensor, passes: int = 4) -> nn.Module:
    """Random-weight models get realistic BatchNorm statistics from a few forward passes."""
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model(x)
    return model.eval()


def fidelity(model: nn.Module, reference: list[torch.Tensor], x: torch.Tensor) -> float:
    """Mean cosine similarity of every output to the original model's (1.0 = identical)."""
    with torch.no_grad():
        outs = flatten_outputs(model(x))
    sims = [
        float(nn.functional.cosine_similarity(o.flatten(1), r.flatten(1), dim=1).mean())
        for o, r in zip(outs, reference, strict=True)
    ]
    return float(np.mean(sims))


def onnx_max_abs_diff(path: Path, model: nn.Module, x: torch.Tensor) -> float:
    """Largest difference between onnxruntime on the exported file and torch, all outputs."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = flatten_outputs(model(x))
    return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want, strict=True))


def run_one(
    name: str,
    model: nn.Module,
    exercises: str,
    out: Path,
    *,
    size: int = 32,
    speedup: float = 1.5,
    settings: dict[str, Any] | None = None,
    seed: int = 0,
) -> ConformanceRow:
    """Compress ``model`` at ``speedup`` on ``cpu-ort-1t`` and check what came out."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train = torch.randn(64, 3, size, size, generator=gen)
    val = torch.randn(32, 3, size, size, generator=gen)
    model = set_bn_statistics_(model, train)
    with torch.no_grad():
        reference = [t.detach() for t in flatten_outputs(model(val))]
    params = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    try:
        result = edgeprune.compress(
            model,
            torch.zeros(1, 3, size, size),
            evaluate=lambda m: fidelity(m, reference, val),
            calib_data=[train[i : i + 16] for i in range(0, 64, 16)],
            metric="fidelity",
            speedup=speedup,
            out=out,
            settings={**FAST, **(settings or {})},
        )
    except EdgepruneError as exc:
        return ConformanceRow(
            name, exercises, params, 0, {}, 0, 0, speedup, None, None, None, None, None,
            time.perf_counter() - start, error=str(exc).splitlines()[0],
        )  # fmt: skip
    wall = time.perf_counter() - start
    rep = result.report
    frozen = {c["name"]: c["frozen"] for c in rep["channels"] if c["frozen"]}
    depth = rep.get("depth") or {}
    replayed = edgeprune.load_pruned(result.run_dir / "model_pruned", base=model)
    x = val[:2]
    with torch.no_grad():
        replay = max(
            float((a - b).abs().max())
            for a, b in zip(
                flatten_outputs(replayed(x)), flatten_outputs(result.model(x)), strict=True
            )
        )
    return ConformanceRow(
        name=name,
        exercises=exercises,
        params=params,
        groups=len(rep["channels"]),
        frozen=frozen,
        blocks_found=len(depth.get("blocks", [])),
        blocks_dropped=len(depth.get("dropped", [])),
        speedup_asked=speedup,
        speedup_measured=float(rep["speedup"]["measured"]),
        budget_met=result.budget_met,
        export_max_abs_diff=onnx_max_abs_diff(result.onnx_path, result.model, x[:1]),
        replay_max_abs_diff=replay,
        fidelity=float(rep["final"]["accuracy"]["val"]),
        wall_s=wall,
    )
