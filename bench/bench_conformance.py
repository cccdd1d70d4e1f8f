"""Conformance table: the structures users ship, each through ``edgeprune.compress``.

Every architecture of ``edgeprune.models.conformance`` (and Ultralytics' YOLOv8n built from
its YAML, when ``ultralytics`` is installed) is compressed at 1.5x on ``cpu-ort-1t`` with a
fidelity metric (see ``conformance_run.py``). One row each: parameters, groups pruned and
frozen (with the reasons), residual blocks found and dropped, speed-up measured vs asked,
the export's max abs difference to torch, wall time. The next architecture someone brings
is one entry in ``ARCHITECTURES`` and one line in the table.

    python bench/bench_conformance.py                # all, writes bench/results/conformance.*
    python bench/bench_conformance.py --only regnetx yolov8

Results: ``bench/results/conformance.json`` (rows + environment) and ``conformance.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from bench_cifar10 import environment
from conformance_run import run_one
from torch import nn

from edgeprune._io import atomic_write_json, atomic_write_text
from edgeprune.models.conformance import ARCHITECTURES

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"yolov8": 64, "yolov8n-ultralytics": 64}


def _ultralytics_yolov8n() -> nn.Module:
    from ultralytics import YOLO

    return YOLO("yolov8n.yaml").model  # built from the YAML: no weights downloaded


def architectures() -> dict[str, tuple[Callable[[], nn.Module], str]]:
    archs = dict(ARCHITECTURES)
    if importlib.util.find_spec("ultralytics") is not None:
        archs["yolov8n-ultralytics"] = (_ultralytics_yolov8n, "Ultralytics YOLOv8n (yaml)")
    return archs


def _diff(v: float | None) -> str:
    return "-" if v is None else f"{v:.1e}"


def render_markdown(res: Mapping[str, Any]) -> str:
    env = res["environment"]
    rows = res["rows"]
    ok = [r for r in rows if r["error"] is None]
    met = [r for r in ok if r["budget_met"]]
    lines = [
        "# Conformance: the structures users ship, through `edgeprune.compress`",
        "",
        f"{len(ok)} of {len(rows)} architectures compressed end to end at "
        f"{rows[0]['speedup_asked'] if rows else 1.5}x on `cpu-ort-1t`; {len(met)} met the "
        "budget in the final interleaved measurement. Random weights, BatchNorm statistics "
        "from four forward passes, fidelity metric (mean cosine similarity of the outputs to "
        "the original's), one latency step, no distillation.",
        "",
        f"Host: {env.get('cpu_model')}, {env.get('logical_cores')} cores, load "
        f"{float(env.get('load_avg_1m') or 0):.2f}; torch {env.get('torch')}, Torch-Pruning "
        f"{env.get('torch_pruning')}, onnxruntime {env.get('onnxruntime')}; commit "
        f"{env.get('git_commit')}{' (uncommitted changes)' if env.get('git_dirty') else ''}, "
        f"code {env.get('code_version')}. Made by `bench/bench_conformance.py`.",
        "",
        "| architecture | exercises | params | groups pruned / frozen | blocks dropped / "
        "found | speed-up measured (asked) | met | export max abs diff | wall s |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        if r["error"] is not None:
            lines.append(
                f"| {r['name']} | {r['exercises']} | {r['params']:,} | refused: {r['error']} "
                f"| | | | | {r['wall_s']:.0f} |"
            )
            continue
        n_frozen = len(r["frozen"])
        lines.append(
            f"| {r['name']} | {r['exercises']} | {r['params']:,} | "
            f"{r['groups'] - n_frozen} / {n_frozen} | {r['blocks_dropped']} / "
            f"{r['blocks_found']} | {r['speedup_measured']:.2f}x ({r['speedup_asked']:g}x) | "
            f"{'yes' if r['budget_met'] else 'NO'} | {_diff(r['export_max_abs_diff'])} | "
            f"{r['wall_s']:.0f} |"
        )
    lines += ["", "## Frozen groups and why", ""]
    for r in rows:
        for group, reason in (r["frozen"] or {}).items():
            lines.append(f"- **{r['name']}** `{group}`: {reason}")
    return "\n".join(lines) + "\n"


def headline(res: Mapping[str, Any]) -> str:
    """The README's one paragraph on conformance, from the results file."""
    rows = res["rows"]
    ok = [r for r in rows if r["error"] is None]
    refused = [f"{r['name']} ({r['error']})" for r in rows if r["error"] is not None]
    partial = [
        r["name"]
        for r in ok
        if any("Torch-Pruning" in why or "unsafe" in why for why in r["frozen"].values())
    ]
    met = sum(1 for r in ok if r["budget_met"])
    text = (
        f"{len(ok)} of {len(rows)} architectures in `bench/results/conformance.md` compress "
        f"end to end at 1.5x on `cpu-ort-1t` ({', '.join(r['name'] for r in ok)}), {met} "
        f"meeting the budget in the final measurement (code of commit "
        f"{res['environment'].get('git_commit')})"
    )
    text += f"; refused: {', '.join(refused)}." if refused else "; none is refused."
    if partial:
        text += (
            f" In {', '.join(partial)} some groups are frozen because Torch-Pruning cannot map "
            "their channels (channel shuffle, C2f's chunk + concat); the report names each one."
        )
    return text


def run(names: Sequence[str], out: Path, work: Path) -> dict[str, Any]:
    archs = architectures()
    env = environment()  # before the runs: the code that makes them, not what is on disk later
    rows = []
    for name in names:
        factory, exercises = archs[name]
        print(f"== {name}: {exercises}", flush=True)
        row = run_one(name, factory(), exercises, work / name, size=SIZES.get(name, 32))
        rows.append(row.to_dict())
    res = {"kind": "bench-conformance", "environment": env, "rows": rows}
    atomic_write_json(out / "conformance.json", res)
    atomic_write_text(out / "conformance.md", render_markdown(res))
    return res


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", help="architectures to run (default: all)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    names = args.only or list(architectures())
    with tempfile.TemporaryDirectory(prefix="edgeprune-conformance-") as tmp:
        res = run(names, args.out, Path(tmp))
    print(render_markdown(res))


if __name__ == "__main__":
    main()
