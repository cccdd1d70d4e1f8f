"""Do the budget verdicts hold on a busy machine? Compress runs beside a CPU-bound job.

The budget verdict is the product's one promise: the search's landing says "met", the final
check must say the same, and the final latency should use the budget ([0.97, 1.00] x budget:
below it is accuracy thrown away). This benchmark runs ``--runs`` ``edgeprune compress``
processes one after another while a competing single-thread training job (the one
``bench_latency_stat.py`` uses) runs on the other core the whole time, and reads every
run's ``report.json``:

- ``digits``: the README's default run (``edgeprune compress``: digits, resnet20, half the
  baseline latency), with ``--seed`` 1..N so the searches differ;
- ``resnet18-224``: a 224-px ResNet-18 on ``cpu-ort-1t-224`` at ``--speedup 1.5``, the size
  where one undisturbed iteration once decided a verdict. Accuracy is not what it checks:
  the weights are a seeded initialisation (no ImageNet weights may be downloaded here), the
  proxy is small and there is no fine-tuning, so the runs spend their time on latency.

Writes ``bench/results/verdicts_<kind>.json`` (source of truth) and ``.md``.

Usage: ``python bench/bench_verdicts.py --kind digits [--runs 5]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling helper modules

from bench_latency_stat import COMPETITOR

from edgeprune._io import atomic_write_json, atomic_write_text
from edgeprune.targets.timing import host_info

RESULTS = Path(__file__).parent / "results"
WINDOW = (0.97, 1.00)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).parent,
        )  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "-"


def argv_for(kind: str, run: int, out: Path, weights: Path | None) -> list[str]:
    """The ``edgeprune compress`` command line of one run."""
    # -S passed on, so a frozen checkout on PYTHONPATH beats an editable install
    py = [sys.executable, *(["-S"] if sys.flags.no_site else [])]
    cmd = [*py, "-m", "edgeprune.cli", "compress", "--out", str(out)]
    if kind == "digits":
        return [*cmd, "--seed", str(run)]
    assert weights is not None
    return [
        *cmd, "--model", "resnet18", "--weights", str(weights), "--profile", "cpu-ort-1t-224",
        "--data", "digits", "--speedup", "1.5", "--kd-epochs", "0", "--searcher", "knapsack",
        "--seed", str(run),
        "--set", "search.values=criterion", "--set", "search.depth=off",
        "--set", "search.val_subset=100", "--set", "search.bn_batches=1",
        "--set", "data.limit=400",
    ]  # fmt: skip


def row_of(report: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """What one run says about its verdict."""
    goal = report["goal"]
    v = goal.get("verdict") or {}
    budget, final = goal["budget_ms"], report["final_latency_ms"]
    share = final / budget
    return {
        "budget_ms": budget,
        "final_ms": final,
        "of_budget": share,
        "in_window": WINDOW[0] <= share <= WINDOW[1],
        "in_run_met": v.get("in_run_met"),
        "final_met": v.get("met"),
        "agree": v.get("in_run_met") == v.get("met"),
        "certain": v.get("certain"),
        "interval": v.get("interval"),
        "needed_ratio": v.get("needed_ratio"),
        "blocks": v.get("blocks"),
        "rounds": v.get("rounds"),
        "retaken_blocks": v.get("retaken_blocks"),
        "disturbed_blocks_kept": v.get("disturbed_blocks_kept"),
        "steps": len(report["search"]["steps"]),
        "landing_tries": [len(s["landing_tries"]) for s in report["search"]["steps"]],
        "warnings": report.get("warnings", []),
        "wall_s": wall_s,
    }


def _beside(res: dict[str, Any]) -> str:
    loads = [v for r in res["runs"] for v in r.get("load_1m", ())]
    span = f"1-min load {min(loads):.2f}-{max(loads):.2f}" if loads else "load not recorded"
    if res.get("beside") == "running":
        return f"another CPU-bound benchmark ran on the other core throughout ({span})"
    return f"a single-thread training job on the other core throughout ({span})"


def render(res: dict[str, Any]) -> str:
    rows = res["runs"]
    env = res["environment"]
    agree = sum(r["agree"] for r in rows)
    inside = sum(r["in_window"] for r in rows)
    shares = [r["of_budget"] for r in rows]
    lines = [
        f"# Budget verdicts beside a CPU-bound job: {res['kind']}",
        "",
        f"{env['cpu_model']} ({env['logical_cores']} logical cores); {_beside(res)}; commit "
        f"{res['commit']}; created {res['created']}.",
        f"Command: `{res['command']}`.",
        "",
        f"**In-run and final verdicts agree in {agree} of {len(rows)} runs; the final latency "
        f"lands in [{WINDOW[0]:.2f}, {WINDOW[1]:.2f}] x budget in {inside} of {len(rows)}** "
        f"(median {statistics.median(shares):.3f}, range {min(shares):.3f}-{max(shares):.3f}).",
        "",
        "| run | budget ms | final ms | of budget | in window | in-run | final | certain | "
        "90% interval / needed | blocks (rounds) | retaken / disturbed kept | landing tries | "
        "wall s |",
        "|---:|---:|---:|---:|:-:|:-:|:-:|:-:|---|---:|---:|---|---:|",
    ]
    for i, r in enumerate(rows, 1):
        lo, hi = r["interval"] or (float("nan"), float("nan"))
        lines.append(
            f"| {i} | {r['budget_ms']:.4g} | {r['final_ms']:.4g} | {r['of_budget']:.3f} | "
            f"{'yes' if r['in_window'] else 'no'} | {'met' if r['in_run_met'] else 'NOT'} | "
            f"{'met' if r['final_met'] else 'NOT'} | {'yes' if r['certain'] else 'no'} | "
            f"{lo:.3f}-{hi:.3f} / {r['needed_ratio']:.3f} | {r['blocks']} ({r['rounds']}) | "
            f"{r['retaken_blocks']} / {r['disturbed_blocks_kept']} | "
            f"{', '.join(map(str, r['landing_tries']))} | {r['wall_s']:.0f} |"
        )
    lines += ["", "Warnings per run (the report's own):", ""]
    for i, r in enumerate(rows, 1):
        for w in r["warnings"]:
            lines.append(f"- run {i}: {w}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=("digits", "resnet18-224"), default="digits")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep", type=Path, help="keep the run directories here")
    p.add_argument(
        "--beside",
        choices=("competitor", "running"),
        default="competitor",
        help="competitor: start the training job on the other core; running: another "
        "CPU-bound job (e.g. a benchmark) already runs there (each run's load is recorded)",
    )
    args = p.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        weights = None
        if args.kind == "resnet18-224":
            import torch

            from edgeprune.models import create_model

            torch.manual_seed(0)
            weights = root / "resnet18-init.pt"
            torch.save(create_model("resnet18", 10).state_dict(), weights)
        competitor = None
        if args.beside == "competitor":
            py = [sys.executable, *(["-S"] if sys.flags.no_site else [])]
            competitor = subprocess.Popen([*py, "-c", COMPETITOR], env=env)
        try:
            time.sleep(3.0)  # let it reach its steady state
            for i in range(1, args.runs + 1):
                out = root / f"run{i}"
                cmd = argv_for(args.kind, i, out, weights)
                t0, load0 = time.perf_counter(), os.getloadavg()[0]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                wall = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise SystemExit(f"run {i} failed ({proc.returncode}): {proc.stderr[-2000:]}")
                report = json.loads((out / "report.json").read_text(encoding="utf-8"))
                rows.append({**row_of(report, wall), "load_1m": [load0, os.getloadavg()[0]]})
                r = rows[-1]
                print(
                    f"run {i}: {r['of_budget']:.3f} of budget, in-run "
                    f"{'met' if r['in_run_met'] else 'NOT'}, final "
                    f"{'met' if r['final_met'] else 'NOT'}, {wall:.0f} s",
                    flush=True,
                )
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
    res = {
        "kind": args.kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": _commit(),
        "environment": host_info(),
        "command": " ".join(
            Path(a).name if a == sys.executable else a
            for a in argv_for(
                args.kind, 1, Path("RUN"), Path("resnet18-init.pt") if weights else None
            )
        ),
        "window": list(WINDOW),
        "beside": args.beside,
        "runs": rows,
        "summary": {
            "agree": sum(r["agree"] for r in rows),
            "in_window": sum(r["in_window"] for r in rows),
            "runs": len(rows),
        },
    }
    stem = f"verdicts_{args.kind}"
    atomic_write_json(args.out / f"{stem}.json", res)
    atomic_write_text(args.out / f"{stem}.md", render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
