"""Which latency statistic should decisions use on a shared CPU host? Measure, then choose.

The search and the budget check act on two figures: the baseline's absolute latency (a
``--budget-ms`` check) and the ratio candidate/baseline from interleaved blocks (every
speedup goal and every landing). On a shared host both drift with what else runs. This
benchmark measures the same three models (resnet20, half- and quarter-width copies, ``cpu-ort-1t``)
in ``--runs`` back-to-back interleaved runs, exactly as ``edgeprune benchmark A B`` does
(warm-up, then ``blocks`` blocks of A then B), under four conditions:

- ``idle`` / ``loaded``: the machine as it is, or with a competing single-thread training
  job (a small conv net on random data) on another core, as on a user's workstation;
- ``pinned``: the measuring process pinned to one core (``os.sched_setaffinity``), away
  from the competitor.

For every candidate statistic it reports the spread (max/min over the runs) of the
baseline's absolute figure and of the ratio, and how far the loaded mean ratio sits from
the idle one (bias). The statistic with the smallest worst multiplicative error of the
ratio (the larger of its worst spread and its bias; ties: the baseline's spread) is the
measured default of ``measurement.statistic``.

Writes ``bench/results/latency_stat_<cpu>.json`` (source of truth: the analysis and the
checks), ``.raw.json.gz`` (every timed iteration, for ``--reanalyse``) and ``.md``.

Usage: ``python bench/bench_latency_stat.py [--runs 5] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from edgeprune._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgeprune.latency.oracle import dispersion
from edgeprune.models import create_model
from edgeprune.pipeline.export import export_onnx
from edgeprune.pipeline.pruning.groups import build_groups
from edgeprune.pipeline.pruning.plan import plan_from_ratios
from edgeprune.pipeline.pruning.prune import prune
from edgeprune.profiles import load_profile
from edgeprune.targets.base import target_for
from edgeprune.targets.stats import STATISTICS, block_ratio, statistic_ms
from edgeprune.targets.timing import block_settings, cpu_model, host_info, warmup_settings

RESULTS = Path(__file__).parent / "results"
#: Statistics also analysed as if disturbed block pairs had been retaken (see _calm_pairs).
RETAKE_STATS = ("min", "p50")

COMPETITOR = """
import torch, time
torch.set_num_threads(1)
nn = torch.nn
net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                    nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.01)
x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
while True:
    opt.zero_grad(); torch.nn.functional.cross_entropy(net(x), y).backward(); opt.step()
"""


#: Model sizes: zoo model, profile, input side (None: the profile's). ``small`` ran 0.2-0.7
#: ms on the AMD EPYC dev host, ``medium`` 9-17 ms (the ResNet-18 at 96 px whose verdict
#: once flipped), ``large`` tens of ms: the bigger the working set, the more a neighbour's
#: memory traffic moves every iteration.
SIZES: dict[str, tuple[str, str, int | None]] = {
    "small": ("resnet20", "cpu-ort-1t", None),
    "medium": ("resnet18", "cpu-ort-1t-224", 96),
    "large": ("resnet18", "cpu-ort-1t-224", None),
}


def size_profile(size: str, profile_name: str | None = None) -> Any:
    """The profile a size is measured with (its input side set)."""
    _, name, side = SIZES[size]
    profile = load_profile(profile_name or name)
    if side is not None:
        profile = profile.model_copy(
            update={"name": f"{profile.name}@{side}", "input_shape": [3, side, side]}
        )
    return profile


def models(workdir: Path, profile: Any, model: str = "resnet20") -> dict[str, Path]:
    """``model`` and copies with half and a quarter of the channels of every prunable group
    (resnet20's quarter copy has 4-16-channel layers: such narrow models ran bimodal on the
    AMD EPYC dev host, ~0.23 or ~0.30 ms by the minute), as ONNX."""
    base = create_model(model, 10).eval()
    x = torch.zeros(1, *profile.input_shape)
    groups = build_groups(base, x)
    out = {"baseline": workdir / "baseline.onnx"}
    export_onnx(base, profile, out["baseline"])
    for name, keep in (("half", 0.5), ("quarter", 0.25)):
        plan = plan_from_ratios(groups, {g.id: keep for g in groups.prunable}, 4)
        out[name] = workdir / f"{name}.onnx"
        export_onnx(prune(base, groups, plan).model, profile, out[name])
    return out


def one_run(target: Any, prepared: dict[str, Any], profile: Any) -> dict[str, list[list[float]]]:
    """One ``edgeprune benchmark``-style run: warm-up, then blocks of each model in turn."""
    s = profile.measurement
    per_block = block_settings(s, s.blocks)
    for p in prepared.values():
        target.measure(p, None, warmup_settings(s))
    blocks: dict[str, list[list[float]]] = {n: [] for n in prepared}
    for _ in range(s.blocks):
        for name, p in prepared.items():
            blocks[name].append(list(target.measure(p, None, per_block).times_ms))
    return blocks


def condition(
    name: str, paths: dict[str, Path], profile: Any, runs: int, *, loaded: bool, pinned: bool
) -> dict[str, Any]:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    competitor = None
    if loaded:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=env)
        if pinned and len(cores) > 1:
            os.sched_setaffinity(competitor.pid, {cores[-1]})
        time.sleep(3.0)  # let it reach its steady state
    if pinned and cores:
        os.sched_setaffinity(0, {cores[0]})
    target = target_for(profile)
    try:
        prepared = {n: target.prepare(p, profile) for n, p in paths.items()}
        out = []
        for _ in range(runs):
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            out.append({"load_1m": load, "blocks": one_run(target, prepared, profile)})
        for p in prepared.values():
            p.close()
    finally:
        if pinned and cores:
            os.sched_setaffinity(0, set(cores))
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    return {"name": name, "loaded": loaded, "pinned": pinned, "runs": out}


def _calm_pairs(
    cand: list[list[float]], base: list[list[float]], bar: float | None
) -> tuple[list[list[float]], list[list[float]]]:
    """The block pairs a retake would keep: neither block's median/min over ``bar`` (all
    pairs when none is calm, or without a bar). Dropping the disturbed pairs of a run is
    what retaking them does, short of measuring the retakes themselves."""
    if bar is None:
        return cand, base
    keep = [
        (c, b) for c, b in zip(cand, base, strict=True) if max(dispersion(c), dispersion(b)) <= bar
    ]
    if not keep:
        return cand, base
    return [c for c, _ in keep], [b for _, b in keep]


def _ratio_rows(stat: str, conds: list[dict[str, Any]], bar: float | None = None) -> dict[str, Any]:
    rows = {}
    for c in conds:
        base = [statistic_ms(r["blocks"]["baseline"], stat) for r in c["runs"]]
        others = [m for m in c["runs"][0]["blocks"] if m != "baseline"]
        ratios = {
            m: [
                block_ratio(*_calm_pairs(r["blocks"][m], r["blocks"]["baseline"], bar), stat)
                for r in c["runs"]
            ]
            for m in others
        }
        rows[c["name"]] = {
            "baseline_ms": base,
            "ratios": ratios,
            "baseline_spread": max(base) / min(base),
            "ratio_spread": max(max(v) / min(v) for v in ratios.values()),
        }
    return rows


def _bias(rows: dict[str, Any], conds: list[dict[str, Any]]) -> float:
    """Loaded mean ratio / idle mean ratio, the model furthest from 1."""
    mean = statistics.fmean
    idle = [c["name"] for c in conds if not c["loaded"]]
    loaded = [c["name"] for c in conds if c["loaded"]]
    if not idle or not loaded:
        return 1.0
    biases = [
        mean([mean(rows[n]["ratios"][m]) for n in loaded])
        / mean([mean(rows[n]["ratios"][m]) for n in idle])
        for m in rows[idle[0]]["ratios"]
    ]
    return max(biases, key=lambda b: abs(b - 1))


def _error_vs_idle(rows: dict[str, Any], conds: list[dict[str, Any]]) -> float:
    """Worst |ratio / reference - 1| over every run, the reference being the median ratio
    of the idle runs (per model): how far one measurement's ratio can be from what the
    undisturbed host says, spread and load bias together."""
    idle = [c["name"] for c in conds if not c["loaded"]] or [c["name"] for c in conds]
    worst = 0.0
    for m in rows[conds[0]["name"]]["ratios"]:
        ref = statistics.median([v for n in idle for v in rows[n]["ratios"][m]])
        for row in rows.values():
            worst = max(worst, max(abs(v / ref - 1) for v in row["ratios"][m]))
    return worst


def analyse(conds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per statistic and pinning: ratio spread (worst condition and model), load bias,
    baseline spread; the pair with the smallest worst multiplicative error wins."""
    table: dict[str, Any] = {}
    bar = load_profile("cpu-ort-1t").measurement.disturbed_dispersion
    for stat, retake in [(s, False) for s in STATISTICS] + [(s, True) for s in RETAKE_STATS]:
        for pin in (False, True):
            part = [c for c in conds if c["pinned"] == pin]
            if not part:
                continue
            rows = _ratio_rows(stat, part, bar if retake else None)
            bias = _bias(rows, part)
            spread = max(r["ratio_spread"] for r in rows.values())
            table[f"{stat}{' pinned' if pin else ''}{' retakes' if retake else ''}"] = {
                "statistic": stat,
                "pinned": pin,
                "retakes": retake,
                "conditions": rows,
                "worst_ratio_spread": spread,
                "worst_baseline_spread": max(r["baseline_spread"] for r in rows.values()),
                "loaded_vs_idle_ratio": bias,
                # Both are multiplicative errors of a decision: run-to-run spread, and how
                # far a competing job moves the ratio on average.
                "worst_error": max(spread, bias, 1.0 / bias),
                "worst_ratio_error_vs_idle": _error_vs_idle(rows, part),
            }
    best = min(
        (k for k in table if not table[k]["retakes"]),
        key=lambda k: (round(table[k]["worst_error"], 3), table[k]["worst_baseline_spread"]),
    )
    return {
        "statistics": table,
        "chosen": table[best]["statistic"],
        "chosen_pinned": table[best]["pinned"],
        "retake_bar": bar,
    }


def benchmark_check(
    paths: dict[str, Path], profile: Any, statistic: str, pinned: bool, runs: int
) -> dict[str, Any]:
    """``edgeprune benchmark baseline.onnx half.onnx`` run ``runs`` times back to back (the
    library call the CLI makes), with the chosen statistic: its spread and p50's."""
    from edgeprune.pipeline.benchmark import benchmark

    prof = profile.model_copy(
        update={
            "measurement": profile.measurement.model_copy(
                update={"statistic": statistic, "pin_core": pinned}
            )
        }
    )
    rows = []
    for _ in range(runs):
        res = benchmark([paths["baseline"], paths["quarter"]], [prof], progress=False)
        base, small = res.entries
        rows.append(
            {
                "baseline_figure_ms": base.figure_ms,
                "baseline_p50_ms": base.latency.p50_ms,
                "speedup_by_statistic": small.speedup_by_statistic,
                "speedup_p50": small.speedup_vs_first,
            }
        )

    def spread(key: str) -> float:
        vals = [r[key] for r in rows]
        return max(vals) / min(vals)

    return {
        "statistic": statistic,
        "pinned": pinned,
        "runs": rows,
        "spread": {k: spread(k) for k in rows[0]},
        "load_1m": host_info().get("load_avg_1m"),
    }


def _baseline_ms(conds: list[dict[str, Any]]) -> dict[str, float] | None:
    """The baseline's p50 over the idle runs and its range over every run (ms)."""
    runs = [r for c in conds for r in c.get("runs", ())]
    if not runs:
        return None
    p50 = [statistic_ms(r["blocks"]["baseline"], "p50") for r in runs]
    idle = [
        statistic_ms(r["blocks"]["baseline"], "p50")
        for c in conds
        if not c["loaded"]
        for r in c.get("runs", ())
    ]
    return {"idle_p50": statistics.median(idle or p50), "min_p50": min(p50), "max_p50": max(p50)}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _ms_note(b: dict[str, float] | None) -> str:
    if not b:
        return ""
    span = f"{b['min_p50']:.3g}-{b['max_p50']:.3g}"
    return f" (baseline p50 {b['idle_p50']:.3g} ms idle, {span} ms over all runs)"


def render(res: dict[str, Any]) -> str:
    env = res["environment"]
    names = [c["name"] for c in res["conditions"]]
    lines = [
        f"# Decision statistic on {env['cpu_model']} ({env['logical_cores']} logical cores)",
        "",
        f"`{res['profile']}`, {res.get('model', 'resnet20')} at "
        f"{'x'.join(str(v) for v in res.get('input_shape', [3, 32, 32])[1:])} px"
        f"{_ms_note(res.get('baseline_ms'))} vs half- and quarter-width copies, {res['runs']} "
        f"back-to-back interleaved runs per condition ({res['blocks']} blocks each), repeated "
        f"{res['repeats']} times (conditions: {', '.join(names)}). Spread = max/min over "
        "the runs of one condition; the worst condition and model are shown. Created "
        f"{res['created']}.",
        "",
        "| statistic | pinned | worst error | worst ratio error vs idle median | worst ratio "
        "spread | worst baseline spread | ratio loaded/idle | per condition: ratio spread |",
        "|---|:-:|---:|---:|---:|---:|---:|---|",
    ]
    chosen = (res["analysis"]["chosen"], res["analysis"].get("chosen_pinned", False), False)
    for t in res["analysis"]["statistics"].values():
        retake = t.get("retakes", False)
        mark = " (chosen)" if (t["statistic"], t["pinned"], retake) == chosen else ""
        if retake:
            mark += f" + retakes (median/min > {res['analysis'].get('retake_bar')})"
        per = ", ".join(
            f"{n.split('#')[0].replace('-pinned', '')}#{n.split('#')[-1]} {c['ratio_spread']:.3f}"
            for n, c in t["conditions"].items()
        )
        lines.append(
            f"| `{t['statistic']}`{mark} | {'yes' if t['pinned'] else 'no'} | "
            f"{t['worst_error']:.3f} | {_pct(t.get('worst_ratio_error_vs_idle'))} | "
            f"{t['worst_ratio_spread']:.3f} | "
            f"{t['worst_baseline_spread']:.3f} | {t['loaded_vs_idle_ratio']:.3f} | {per} |"
        )
    lines += [
        "",
        "Worst error = the larger of the worst run-to-run spread (max/min) and the load bias;"
        " the ratio error vs idle median = the worst |ratio / median of the idle runs' ratios"
        " - 1| over every run of every condition (per model): how far one measurement can be"
        " from what the undisturbed host says.",
        "",
        "Statistics (see `edgeprune/targets/stats.py`): the ratio of a statistic is the median"
        " over blocks of the per-block ratio; the baseline figure is the statistic over all "
        "of its iterations (or blocks).",
        "",
    ]
    for i, chk in enumerate(res.get("benchmark_checks") or ()):
        sp = chk["spread"]
        lines += [
            f"## Check {i + 1}: `edgeprune benchmark baseline quarter` x{len(chk['runs'])}, back "
            f"to back, statistic `{chk['statistic']}`, pinned: {chk.get('pinned')}",
            "",
            f"Spread (max/min) of the baseline's figure: **{sp['baseline_figure_ms']:.3f}** "
            f"(its p50: {sp['baseline_p50_ms']:.3f}); of the speedup by the statistic: "
            f"**{sp['speedup_by_statistic']:.3f}** (by p50: {sp['speedup_p50']:.3f}). Load "
            f"average at the end {chk.get('load_1m'):.2f}.",
            "",
            "| run | baseline figure ms | baseline p50 ms | speedup (statistic) | speedup (p50) |",
            "|---:|---:|---:|---:|---:|",
            *(
                f"| {j + 1} | {r['baseline_figure_ms']:.4f} | {r['baseline_p50_ms']:.4f} | "
                f"{r['speedup_by_statistic']:.3f} | {r['speedup_p50']:.3f} |"
                for j, r in enumerate(chk["runs"])
            ),
            "",
        ]
    return "\n".join(lines)


def sizes_summary(results: Path) -> str | None:
    """Every statistic's worst ratio error vs the idle median at each size measured, and the
    rule that holds across all of them (``latency_stat_<cpu>_sizes.md``)."""
    found = {}
    for size in SIZES:
        for path in sorted(results.glob("latency_stat_*.json")):
            d = json.loads(path.read_text(encoding="utf-8"))
            if d.get("size", "small") == size and "raw" in d and "_2026" not in path.name:
                found[size] = d
    if len(found) < 2:
        return None
    keys = list(next(iter(found.values()))["analysis"]["statistics"])
    worst = {
        k: max(d["analysis"]["statistics"][k].get("worst_ratio_error_vs_idle") or 0.0
               for d in found.values())
        for k in keys
    }  # fmt: skip
    best = min(worst, key=lambda k: worst[k])
    env = next(iter(found.values()))["environment"]
    lines = [
        f"# Decision statistic across model sizes on {env['cpu_model']}",
        "",
        "Worst ratio error vs the idle median (every run, idle and beside a single-thread "
        "training job, half- and quarter-width copies against the model):",
        "",
        "| statistic | "
        + " | ".join(
            f"{s} ({d['model']} {d['input_shape'][-1]} px, {d['baseline_ms']['idle_p50']:.3g} ms)"
            for s, d in found.items()
        )
        + " | worst |",
        "|---|" + "---:|" * (len(found) + 1),
    ]
    for k in sorted(keys, key=lambda k: worst[k]):
        cells = [_pct(d["analysis"]["statistics"][k].get("worst_ratio_error_vs_idle"))
                 for d in found.values()]  # fmt: skip
        mark = " (lowest worst)" if k == best else ""
        lines.append(f"| `{k}`{mark} | " + " | ".join(cells) + f" | {_pct(worst[k])} |")
    lines += [
        "",
        f"Lowest worst error across the sizes: `{best}`, {_pct(worst[best])}; the profile "
        "default (`min`, pinned): "
        f"{_pct(worst.get('min pinned'))}. Sources: "
        + ", ".join(f"`{d['raw'].replace('.raw.json.gz', '.md')}`" for d in found.values()),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small", help="model size")
    p.add_argument(
        "--sizes-summary", action="store_true", help="only write the across-sizes summary"
    )
    p.add_argument("--profile", default=None, help="profile (default: the size's)")
    p.add_argument("--runs", type=int, default=5, help="back-to-back runs per condition")
    p.add_argument("--repeats", type=int, default=2, help="times each condition is repeated")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--checks", type=int, default=3, help="rounds of the benchmark check")
    p.add_argument(
        "--reanalyse",
        type=Path,
        help="re-analyse the conditions of an earlier results JSON (raw blocks are kept) and "
        "redo only the benchmark check",
    )
    args = p.parse_args(argv)
    if args.sizes_summary:
        text = sizes_summary(args.out)
        if text is None:
            raise SystemExit("need results of at least two sizes in --out")
        stem = "latency_stat_" + re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-")[:40]
        atomic_write_text(args.out / f"{stem}_sizes.md", text)
        print(text)
        return 0
    if args.reanalyse:  # the size it was measured at
        raw = args.reanalyse.read_bytes()
        args.size = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).get(
            "size", "small"
        )
    profile = size_profile(args.size, args.profile)
    model = SIZES[args.size][0]
    torch.set_num_threads(1)
    conds = []
    measured_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.reanalyse:
        raw = args.reanalyse.read_bytes()
        earlier = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
        conds = earlier["conditions"]
        args.runs, measured_at = earlier["runs"], earlier.get("measured", earlier["created"])
        n_repeats = earlier["repeats"]
    else:
        n_repeats = args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        paths = models(Path(tmp), profile, model)  # measured here, and by the checks below
        if conds:
            args.repeats = 0  # measured before: analysis only
        for rep in range(args.repeats):
            for loaded in (False, True):
                for pinned in (False, True):
                    name = f"{'loaded' if loaded else 'idle'}{'-pinned' if pinned else ''}"
                    print(f"repeat {rep + 1}/{args.repeats}: {name}", flush=True)
                    c = condition(
                        f"{name}#{rep + 1}", paths, profile, args.runs, loaded=loaded,
                        pinned=pinned,
                    )  # fmt: skip
                    c.update(loaded=loaded, pinned=pinned)
                    conds.append(c)
        analysis = analyse(conds)
        pin = analysis["chosen_pinned"]
        print(f"chosen: {analysis['chosen']} (pinned: {pin}); five benchmark runs", flush=True)
        checks = [
            benchmark_check(paths, profile, analysis["chosen"], pin, args.runs)
            for _ in range(args.checks)
        ]
    res = {
        "kind": "bench-latency-stat",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": host_info(),
        "profile": profile.name,
        "size": args.size,
        "model": model,
        "input_shape": list(profile.input_shape),
        "baseline_ms": _baseline_ms(conds),
        "measured": measured_at,
        "runs": args.runs,
        "repeats": n_repeats,
        "blocks": profile.measurement.blocks,
        "conditions": conds,
        "analysis": analysis,
        "benchmark_checks": checks,
    }
    stem = "latency_stat_" + re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-")[:40]
    stem += "" if args.size == "small" else f"_{args.size}"
    # The raw blocks (several MB) go to a gzip beside the results; --reanalyse reads it.
    atomic_write_bytes(
        args.out / f"{stem}.raw.json.gz",
        gzip.compress(json.dumps(res, separators=(",", ":")).encode(), mtime=0),
    )
    res = {**res, "conditions": [{k: v for k, v in c.items() if k != "runs"} for c in conds]}
    res["raw"] = f"{stem}.raw.json.gz"
    for t in res["analysis"]["statistics"].values():
        for c in t["conditions"].values():  # per-run figures stay in the raw file
            c.pop("baseline_ms", None)
            c.pop("ratios", None)
    atomic_write_json(args.out / f"{stem}.json", res)
    atomic_write_text(args.out / f"{stem}.md", render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
