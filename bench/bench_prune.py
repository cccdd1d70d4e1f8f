"""Benchmark the pruning engine on ResNet-56 (32x32 input, CPU).

Reports the median over repeats of: building the groups (trace + safety probe + MAC count),
applying one plan to a fresh copy (goal <= 100 ms; deep copy + surgery + verification
forward), and the MACs/params of a few plans. Writes ``bench/results/prune_resnet56.json``
(the source of truth) and ``.md`` rendered from it.

Usage: ``python bench/bench_prune.py [--repeats 7] [--threads 1]``
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch_pruning as tp

from edgeprune._io import atomic_write_json, atomic_write_text
from edgeprune.models import create_model
from edgeprune.pipeline.pruning.groups import build_groups, count_macs_params
from edgeprune.pipeline.pruning.plan import plan_from_ratios
from edgeprune.pipeline.pruning.prune import prune

RESULTS = Path(__file__).parent / "results"


def _median_ms(fn, repeats: int) -> tuple[float, list[float]]:
    """Median wall time (ms) and all wall times; ``_STATS`` keeps min and CPU time too."""
    times, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    _STATS["min_ms"] = round(min(times), 2)
    _STATS["cpu_ms_median"] = round(statistics.median(cpu), 2)
    return statistics.median(times), times


_STATS: dict[str, float] = {}


def run(repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    model = create_model("resnet56").eval()
    x = torch.randn(1, 3, 32, 32)
    build_groups(model, x)  # warm-up (imports, allocator)
    build_ms, build_all = _median_ms(lambda: build_groups(model, x), repeats)
    build_min = _STATS["min_ms"]
    groups = build_groups(model, x)

    # Reference point: what a DependencyGraph re-trace alone costs per candidate.
    def retrace() -> None:
        with torch.enable_grad():
            tp.DependencyGraph().build_dependency(copy.deepcopy(model), x, verbose=False)

    retrace_ms, _ = _median_ms(retrace, repeats)
    copy_ms, _ = _median_ms(lambda: copy.deepcopy(model), repeats)

    plans = {
        "keep 100%": {},
        "keep 75% (x1)": {g.id: 0.75 for g in groups.prunable},
        "keep 50% (x1)": {g.id: 0.5 for g in groups.prunable},
        "keep 50% (x8)": {g.id: 0.5 for g in groups.prunable},
        "keep 50% (x16)": {g.id: 0.5 for g in groups.prunable},
        "keep 30% (x8)": {g.id: 0.3 for g in groups.prunable},
    }
    rows = []
    for label, ratios in plans.items():
        multiple = int(label.split("(x")[1].rstrip(")")) if "(x" in label else 1
        plan = plan_from_ratios(groups, ratios, multiple)
        prune(model, groups, plan, "l1")  # warm-up
        apply_ms, apply_all = _median_ms(lambda p=plan: prune(model, groups, p, "l1"), repeats)
        apply_min, apply_cpu = _STATS["min_ms"], _STATS["cpu_ms_median"]
        noverify_ms, _ = _median_ms(
            lambda p=plan: prune(model, groups, p, "l1", verify=False), repeats
        )
        pruned = prune(model, groups, plan, "l1").model
        macs, params = count_macs_params(pruned, x)
        rows.append(
            {
                "plan": label,
                "channel_multiple": multiple,
                "apply_ms_median": round(apply_ms, 2),
                "apply_ms_min": apply_min,
                "apply_cpu_ms_median": apply_cpu,
                "apply_ms_all": [round(t, 2) for t in apply_all],
                "apply_no_verify_ms_median": round(noverify_ms, 2),
                "macs": macs,
                "params": params,
                "macs_ratio": round(macs / groups.macs, 4),
                "params_ratio": round(params / groups.params, 4),
            }
        )
    return {
        "model": "resnet56",
        "input_shape": list(x.shape),
        "torch": torch.__version__,
        "torch_pruning": importlib.metadata.version("torch-pruning"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "threads": threads,
        "repeats": repeats,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "groups": len(groups),
        "prunable_groups": len(groups.prunable),
        "frozen": [{"id": g.id, "name": g.name, "reason": g.frozen_reason} for g in groups.frozen],
        "base_macs": groups.macs,
        "base_params": groups.params,
        "build_groups_ms_median": round(build_ms, 2),
        "build_groups_ms_min": build_min,
        "build_groups_ms_all": [round(t, 2) for t in build_all],
        "retrace_dependency_graph_ms_median": round(retrace_ms, 2),
        "deepcopy_ms_median": round(copy_ms, 2),
        "apply_goal_ms": 100,
        "plans": rows,
    }


def render_md(r: dict) -> str:
    lines = [
        f"# Pruning engine benchmark: {r['model']} (input {r['input_shape']})",
        "",
        f"torch {r['torch']}, torch-pruning {r['torch_pruning']}, {r['machine']}, "
        f"{r['threads']} threads, median of {r['repeats']} repeats; 1-min load average "
        f"{r['load_average_1min'][0]} before, {r['load_average_1min'][1]} after (other processes "
        "share the cores).",
        "",
        f"- groups: {r['groups']} ({r['prunable_groups']} prunable; frozen: "
        + ", ".join(f"{f['name']} ({f['reason']})" for f in r["frozen"])
        + ")",
        f"- build groups (trace + safety probe + MACs): {r['build_groups_ms_median']} ms "
        f"(min {r['build_groups_ms_min']} ms)",
        f"- for reference, one DependencyGraph re-trace of a copy: "
        f"{r['retrace_dependency_graph_ms_median']} ms; one deepcopy: {r['deepcopy_ms_median']} ms",
        f"- base: {r['base_macs'] / 1e6:.1f} M MACs, {r['base_params'] / 1e6:.3f} M params",
        "",
        f"| plan | apply to fresh copy, median ms (goal <= {r['apply_goal_ms']}) | min ms | "
        "CPU ms | without verify forward, median ms | MACs (M) | MACs ratio | params (M) | "
        "params ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in r["plans"]:
        lines.append(
            f"| {p['plan']} | {p['apply_ms_median']} | {p['apply_ms_min']} | "
            f"{p['apply_cpu_ms_median']} | {p['apply_no_verify_ms_median']} | "
            f"{p['macs'] / 1e6:.1f} | {p['macs_ratio']} | {p['params'] / 1e6:.3f} | "
            f"{p['params_ratio']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    result = run(args.repeats, args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "prune_resnet56.json", result)
    md = render_md(result)
    atomic_write_text(RESULTS / "prune_resnet56.md", md)
    print(md)


if __name__ == "__main__":
    main()
