"""Benchmark edgeprune against its peers on CIFAR-10: accuracy at equal measured latency.

One command extracts the CIFAR-10 archive into the data cache, trains (or loads, by config
hash) a resnet20 baseline, measures its p50 on the device profile, then for each latency
budget (50% and 35% of that p50) runs every method as one ``edgeprune compress`` run with
the same fine-tuning schedule and data: ``edgeprune`` (latency reward), ``rl-flops``
(RL-Pruner's FLOPs reward at edgeprune's MACs), ``uniform``, ``magnitude`` (Torch-Pruning
global magnitude, unrounded) and ``magnitude-rounded``. Finally all resulting ONNX files are
measured together in interleaved benchmark runs (5 repeats, medians). Writes
``<out>/cifar10_<model>.json`` (source of truth), ``.md`` and
``_accuracy_vs_latency.png``. Runs are cached and resumable: rerunning skips finished work.

Usage::

    python bench/bench_cifar10.py            # the full benchmark -> bench/results/
    python bench/bench_cifar10.py --smoke    # pipeline check (tiny) -> bench/results/smoke/
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling helper modules

from peer_methods import (
    METHODS,
    BenchSettings,
    budget_tag,
    digest,
    is_finished,
    method_config,
    prepare_data,
    run_method,
    train_baseline,
)
from peer_results import (
    BASELINE,
    MADE_BY,
    RESULTS_VERSION,
    final_benchmark,
    method_row,
    refused_row,
    summary_table,
    winners,
    write_outputs,
)

from edgeprune import __version__
from edgeprune._io import atomic_write_json, atomic_write_text
from edgeprune.errors import EdgepruneError
from edgeprune.latency.oracle import profile_fingerprint
from edgeprune.models import load_model
from edgeprune.pipeline.benchmark import benchmark
from edgeprune.pipeline.export import export_onnx
from edgeprune.pipeline.pruning.groups import count_macs_params
from edgeprune.profiles import DeviceProfile, load_profile
from edgeprune.targets.timing import host_info

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DEFAULT_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
# Tiny measurement loop for --smoke: the figures are noise, the pipeline is what is checked.
SMOKE_MEASUREMENT = {
    "warmup_iters": 2,
    "warmup_ms": 0,
    "min_iters": 10,
    "min_duration_ms": 20,
    "blocks": 2,
}


def smoke_settings(archive: str) -> BenchSettings:
    """--smoke: 20 train / 10 test images per class, 1 epoch, 1-2 big prune steps."""
    return BenchSettings(
        archive=archive,
        smoke_per_class=20,
        limit=None,
        baseline_epochs=1,
        steps=2,
        samples=2,
        rl_epochs=1,
        val_subset=50,
        bn_batches=1,
        max_steps=4,
        step_epochs=0.5,
        total_epochs=2.0,
        repeats=5,
        blocks=2,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = BenchSettings(archive=str(DEFAULT_ARCHIVE))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny pipeline check (CI, < 3 min)")
    p.add_argument("--out", type=Path, help="results folder (default bench/results[/smoke])")
    p.add_argument(
        "--cache", type=Path, help="baselines + runs ($EDGEPRUNE_CACHE/bench, else bench/.cache)"
    )
    p.add_argument("--data", default=str(DEFAULT_ARCHIVE), help="cifar10-jpg.tar.gz")
    p.add_argument("--model", default=d.model, help="zoo model (see `edgeprune models`)")
    p.add_argument("--profile", default=d.profile, help="device profile name or YAML")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(d.methods))
    p.add_argument(
        "--budgets",
        nargs="+",
        type=float,
        default=list(d.budgets),
        help="latency budgets as fractions of the baseline p50",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=d.limit,
        help="training images incl. validation (0 = all); test capped alike",
    )
    p.add_argument("--epochs", type=int, default=d.baseline_epochs, help="baseline epochs")
    p.add_argument("--weights", help="baseline state_dict to use instead of training one")
    p.add_argument("--step-epochs", type=float, default=d.step_epochs, help="KD epochs per step")
    p.add_argument("--total-epochs", type=float, default=d.total_epochs, help="KD epochs in all")
    p.add_argument("--steps", type=int, default=d.steps, help="latency steps to the budget")
    p.add_argument("--samples", type=int, default=d.samples, help="RL candidates per epoch")
    p.add_argument("--rl-epochs", type=int, default=d.rl_epochs)
    p.add_argument(
        "--val-subset",
        type=int,
        default=d.val_subset,
        help="proxy images (search.val_subset); validation images beyond it let the search "
        "re-score its finalists on a disjoint draw",
    )
    p.add_argument("--repeats", type=int, default=d.repeats, help="final benchmark runs")
    p.add_argument("--seed", type=int, default=d.seed, help="data split + baseline seed")
    p.add_argument(
        "--search-seed", type=int, default=None, help="search + KD seed (default: --seed)"
    )
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads (1: see README)")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[],
        help="repeat every method with these search + KD seeds (mean and spread per budget)",
    )
    p.add_argument(
        "--one-seed",
        type=float,
        nargs="+",
        default=[],
        metavar="BUDGET",
        help="budgets (added to --budgets) run with the first of --seeds only, e.g. 0.25",
    )
    p.add_argument(
        "--cached-only",
        action="store_true",
        help="report the runs already in the cache and start none (tables from parts)",
    )
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> BenchSettings:
    methods = tuple(m for m in METHODS if m in args.methods)
    budgets = tuple(dict.fromkeys([*args.budgets, *args.one_seed]))
    if args.smoke:
        return dataclasses.replace(
            smoke_settings(args.data),
            methods=methods,
            budgets=budgets,
            seeds=tuple(args.seeds),
        )
    if any(not 0 < b < 1 for b in budgets):
        raise EdgepruneError(f"--budgets {list(budgets)}: each must be a fraction in (0, 1)")
    return BenchSettings(
        archive=args.data,
        limit=args.limit or None,
        model=args.model,
        baseline_epochs=args.epochs,
        profile=args.profile,
        budgets=budgets,
        methods=methods,
        weights=args.weights,
        steps=args.steps,
        samples=args.samples,
        rl_epochs=args.rl_epochs,
        val_subset=args.val_subset,
        step_epochs=args.step_epochs,
        total_epochs=args.total_epochs,
        repeats=args.repeats,
        seed=args.seed,
        search_seed=args.search_seed,
        threads=args.threads,
        seeds=tuple(args.seeds),
    )


def profile_ref(settings: BenchSettings, cache: Path, smoke: bool) -> str:
    """The profile runs use: the named one, or for --smoke a copy with a tiny loop."""
    if not smoke:
        return settings.profile
    prof = load_profile(settings.profile).model_dump(mode="json")
    # Same runtime settings, so the fingerprint (and the latency LUT cache) is the real one's.
    prof.update(
        name=f"{prof['name']}-smoke",
        measurement=SMOKE_MEASUREMENT,
        description="smoke copy: tiny measurement loop",
    )
    path = cache / "smoke-profile.yaml"
    atomic_write_text(path, yaml.safe_dump(prof, sort_keys=False))
    return str(path)


def environment() -> dict[str, Any]:
    env = host_info()
    env["edgeprune"] = __version__
    env["code_version"] = code_version()
    env["torch_pruning"] = importlib.metadata.version("torch-pruning")
    commit = _git("rev-parse", "--short", "HEAD")
    env["git_commit"] = commit or None
    # Uncommitted changes to the code that makes or reports the runs.
    status = _git("status", "--porcelain", "--", "edgeprune", "bench/*.py")
    env["git_dirty"] = None if status is None else bool(status)
    return env


def _git(*args: str) -> str | None:
    """``git args`` in the repo, stripped stdout; None where git is missing or fails."""
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def code_version() -> str:
    """Package version + a hash of every ``edgeprune/*.py`` (what the runs were made by)."""
    h = hashlib.sha256(__version__.encode())
    for path in sorted((REPO / "edgeprune").rglob("*.py")):
        h.update(str(path.relative_to(REPO)).encode())
        h.update(path.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def measure_baseline(
    weights: Path, settings: BenchSettings, num_classes: int, profile: DeviceProfile, folder: Path
) -> dict[str, Any]:
    """Export the baseline once and measure its p50 (the budgets are fractions of it)."""
    model = load_model(settings.model, num_classes, weights)
    onnx = folder / f"baseline-{profile_fingerprint(profile)}.onnx"
    if not onnx.is_file():
        export_onnx(model, profile, onnx)
    entry = benchmark([onnx], [profile], progress=False).entries[0]
    macs, params = count_macs_params(model, torch.zeros(1, *profile.input_shape))
    return {"onnx": onnx, "p50_ms_at_start": entry.latency.p50_ms, "macs": macs, "params": params}


def run(
    settings: BenchSettings,
    *,
    out: Path,
    cache: Path,
    smoke: bool,
    console: Console,
    one_seed: tuple[float, ...] = (),
    cached_only: bool = False,
) -> dict[str, Any]:
    """The whole benchmark; returns the results dict (also written to ``out``).

    Budgets in ``one_seed`` run with the first seed only (a costly extra budget).
    """
    t0 = time.perf_counter()
    env = environment()
    torch.set_num_threads(settings.threads)
    timings: dict[str, float] = {}
    console.rule("[bold]data")
    info = prepare_data(settings, cache)
    timings.update(extract=info.extract_s, decode=info.decode_s)
    console.print(f"{info.source.name}: {info.data.summary()}")
    prof_ref = profile_ref(settings, cache, smoke)
    profile = load_profile(prof_ref)

    console.rule("[bold]baseline")
    t = time.perf_counter()
    base = train_baseline(settings, info, cache, console)
    timings["baseline_train"] = time.perf_counter() - t
    t = time.perf_counter()
    bm = measure_baseline(
        base.weights, settings, info.data.num_classes, profile, base.weights.parent
    )
    timings["baseline_measure"] = time.perf_counter() - t
    console.print(
        f"baseline p50 {bm['p50_ms_at_start']:.3f} ms on {profile.name}, "
        f"test top-1 {base.test_top1}"
    )

    # The settings that shape the runs name their folder; the method list, the budgets
    # (each run has its own subfolder) and the final-measurement settings do not, so adding
    # a method or re-measuring never re-runs the others.
    key = digest(
        {
            **settings.to_dict(),
            **dict.fromkeys(("methods", "budgets", "repeats", "blocks", "seeds")),
            "baseline": base.key,
            "profile": profile.model_dump(mode="json"),
            # Rows from different code must never share a table: a run made by other code
            # lands in another folder instead of being reused.
            "code": code_version(),
        }
    )
    root = cache / "runs" / f"{settings.model}-{key}"
    runs = []
    t = time.perf_counter()
    first_seed = settings.run_seeds()[0]
    made_by = {k: env[k] for k in ("git_commit", "git_dirty", "code_version")}
    for seed in settings.run_seeds():
        for fraction in settings.budgets:
            if fraction in one_seed and seed != first_seed:
                continue
            for method in settings.methods:
                tag = run_name(method, fraction, seed)
                if cached_only and not is_finished(root / tag):
                    console.print(f"{tag}: not in the cache, left out (--cached-only)")
                    continue
                console.rule(f"[bold]{tag}[/] ({100 * fraction:.0f}% of the baseline p50)")
                cfg = method_config(
                    settings,
                    method,
                    fraction,
                    profile=prof_ref,
                    source=info.source,
                    weights=base.weights,
                    seed=seed,
                )
                mr = run_method(method, fraction, cfg, root / tag, console)
                if mr.status != "cached":
                    atomic_write_json(root / tag / MADE_BY, made_by)
                mr = dataclasses.replace(mr, seed=seed)
                console.print(f"{tag}: {mr.status} in {mr.wall_s:.0f} s")
                runs.append(mr)
    timings["method_runs"] = time.perf_counter() - t

    console.rule("[bold]final measurement (interleaved)")
    final_dir = root / "final_onnx"
    onnx = {BASELINE: final_dir / "baseline.onnx"}
    final_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bm["onnx"], onnx[BASELINE])
    for mr in runs:
        if mr.status == "refused":
            continue
        name = run_name(mr.method, mr.fraction, mr.seed)
        onnx[name] = final_dir / f"{name}.onnx"
        shutil.copyfile(mr.run_dir / "model.onnx", onnx[name])
    t = time.perf_counter()
    fb = final_benchmark(onnx, profile, repeats=settings.repeats, blocks=settings.blocks)
    timings["final_benchmark"] = time.perf_counter() - t

    base_m = fb["per_model"][BASELINE]
    base_row = {
        "test_top1": base.test_top1,
        "val_top1": base.val_top1,
        "p50_ms": base_m["p50_ms"],
        "p90_ms": base_m["p90_ms"],
        "p50_ms_at_start": bm["p50_ms_at_start"],
        "macs": bm["macs"],
        "params": bm["params"],
        "train_s": base.train_s,
        "cached": base.cached,
        "key": base.key,
        "onnx_sha256": base_m["onnx_sha256"],
    }
    rows = [
        refused_row(mr, base_row)
        if mr.status == "refused"
        else method_row(name, mr, fb["per_model"][name], base_row)
        for name, mr in zip(
            [run_name(mr.method, mr.fraction, mr.seed) for mr in runs], runs, strict=True
        )
    ]
    timings["total"] = time.perf_counter() - t0
    results = {
        "version": RESULTS_VERSION,
        "kind": "bench-cifar10",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "smoke": smoke,
        "command": " ".join(["python", "bench/bench_cifar10.py", *sys.argv[1:]]),
        "settings": settings.to_dict(),
        "environment": env,
        "one_seed_budgets": list(one_seed),
        "cached_only": cached_only,
        "profile": profile.model_dump(mode="json"),
        "data": {"source": str(info.source), **info.data.summary()},
        "baseline": base_row,
        "budgets": [
            {
                "fraction": f,
                "budget_ms": f * base_m["p50_ms"],
                "budget_ms_at_start": f * bm["p50_ms_at_start"],
            }
            for f in settings.budgets
        ],
        "rows": rows,
        "winners": winners(rows, settings.budgets),
        "final_benchmark": {k: v for k, v in fb.items() if k != "per_model"},
        "timing_s": timings,
        "run_root": str(root),
    }
    write_outputs(results, out)
    console.print(summary_table(results))
    console.print(f"wrote {out} in {timings['total']:.0f} s")
    return results


def run_name(method: str, fraction: float, seed: int | None) -> str:
    """``knapsack-b35`` (a single run), ``knapsack-b35-s2`` (seed 2 of repeated runs)."""
    return f"{method}-b{budget_tag(fraction)}" + ("" if seed is None else f"-s{seed}")


def default_cache() -> Path:
    env = os.environ.get("EDGEPRUNE_CACHE")
    return Path(env).expanduser() / "bench" if env else REPO / "bench" / ".cache"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    try:
        settings = settings_from(args)
        out = args.out or (RESULTS / "smoke" if args.smoke else RESULTS)
        cache = args.cache or default_cache()
        run(
            settings,
            out=out,
            cache=cache,
            smoke=args.smoke,
            console=console,
            one_seed=tuple(args.one_seed),
            cached_only=args.cached_only,
        )
    except EdgepruneError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
