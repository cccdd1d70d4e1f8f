"""The CIFAR-10 peer benchmark's final measurement and its outputs.

Every resulting ONNX (and the baseline's) is measured together in one interleaved
benchmark run (``edgeprune.pipeline.benchmark.benchmark``), repeated; per model the median
over repeats of p50 / p90 is reported, and the speedup is the median over repeats of the
baseline's p50 / the model's p50 *in the same repeat*. The results dict is the source of
truth; the Markdown table and the plot are rendered from it.
"""

from __future__ import annotations

import io
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede the pyplot import

import matplotlib.pyplot as plt
from rich.table import Table

from edgeprune._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgeprune.pipeline.benchmark import benchmark
from edgeprune.profiles import DeviceProfile
from edgeprune.targets.stats import block_ratio

RESULTS_VERSION = 1
BASELINE = "baseline"
# Written into a run's folder by the code that made the run (commit, code hash).
MADE_BY = "made_by.json"


def made_by(run_dir: Path) -> dict[str, Any] | None:
    """Who made the run in ``run_dir`` (None for runs older than the record)."""
    path = Path(run_dir) / MADE_BY
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def final_benchmark(
    onnx: Mapping[str, Path],
    profile: DeviceProfile,
    *,
    repeats: int,
    blocks: int | None,
) -> dict[str, Any]:
    """Measure all models ``repeats`` times in interleaved runs; medians per model.

    Args:
        onnx: Model name -> ONNX file; must contain :data:`BASELINE`.

    Returns:
        ``{"per_model": {name: {p50_ms, p90_ms, speedup, p50_ms_repeats, p90_ms_repeats,
        cov_repeats, onnx_sha256}}, "repeats", "blocks", "hosts": [...]}``.
    """
    names = list(onnx)
    runs = []
    for i in range(repeats):
        # Rotate the starting model too, so no model always opens a round.
        order = names[i % len(names) :] + names[: i % len(names)]
        result = benchmark([onnx[n] for n in order], [profile], blocks=blocks, progress=True)
        runs.append({n: e for n, e in zip(order, result.entries, strict=True)})
    per_model: dict[str, dict[str, Any]] = {}
    stat = profile.measurement.statistic
    for n in names:
        p50 = [r[n].latency.p50_ms for r in runs]
        p90 = [r[n].latency.p90_ms for r in runs]
        speed = [r[BASELINE].latency.p50_ms / r[n].latency.p50_ms for r in runs]
        # The decision statistic's speedup, from the blocks measured side by side: the rule
        # the searches were held to.
        by_stat = [
            1.0 / block_ratio(r[n].latency.blocks(), r[BASELINE].latency.blocks(), stat)
            for r in runs
        ]
        per_model[n] = {
            "statistic": stat,
            "figure_ms": statistics.median(r[n].latency.figure(stat) for r in runs),
            "speedup_by_statistic": statistics.median(by_stat),
            "speedup_by_statistic_repeats": by_stat,
            "p50_ms": statistics.median(p50),
            "p90_ms": statistics.median(p90),
            "speedup": statistics.median(speed),
            "p50_ms_repeats": p50,
            "p90_ms_repeats": p90,
            "speedup_repeats": speed,
            "cov_repeats": [r[n].latency.cov for r in runs],
            "iterations": sum(r[n].latency.count for r in runs),
            "onnx_sha256": runs[0][n].onnx_sha256,
        }
    return {
        "repeats": repeats,
        "blocks": blocks or profile.measurement.blocks,
        "per_model": per_model,
    }


def method_row(
    name: str,
    run: Any,
    measured: Mapping[str, Any],
    base_report: Mapping[str, Any],
) -> dict[str, Any]:
    """One results row from a method run (:class:`peer_methods.MethodRun`) and its
    final measurement."""
    rep = run.report
    base_macs = rep["baseline"]["macs"]
    macs_ratio = base_macs / max(rep["final"]["macs"], 1)
    steps = len(rep["search"]["steps"])
    timing = rep["timing_s"]
    fraction = run.fraction
    return {
        "method": run.method,
        "seed": getattr(run, "seed", None),
        "model": name,
        "budget_fraction": fraction,
        "budget_ms": fraction * base_report["p50_ms"],
        # Judged by the decision statistic (the rule every search was held to); p50 shown too.
        "meets_budget": measured.get("speedup_by_statistic", measured["speedup"]) >= 1.0 / fraction,
        "speedup_by_statistic": measured.get("speedup_by_statistic"),
        "statistic": measured.get("statistic", "p50"),
        "test_top1": rep["final"]["accuracy"]["test"],
        "val_top1": rep["final"]["accuracy"]["val"],
        "p50_ms": measured["p50_ms"],
        "p90_ms": measured["p90_ms"],
        "speedup_measured": measured["speedup"],
        "macs": rep["final"]["macs"],
        "params": rep["final"]["params"],
        "macs_ratio": macs_ratio,
        "speedup_per_macs_ratio": measured["speedup"] / macs_ratio,
        "goal": {k: rep["config"]["goal"][k] for k in ("speedup", "flops_ratio")},
        "landed": [s.get("value") for s in rep["search"]["steps"]],
        "searcher": rep["config"]["search"]["searcher"],
        "round_to_multiple": rep["config"]["search"]["round_to_multiple"],
        "channel_multiple": rep["search"]["channel_multiple"],
        "stop_reason": rep["goal"]["stop_reason"],
        "depth": rep["config"]["search"].get("depth", "off"),
        "dropped_blocks": (rep.get("depth") or {}).get("dropped", []),
        "steps": steps,
        "candidates": len(rep["search"]["candidates"]),
        "kd_epochs": _kd_total(rep["search"]["kd_epochs"]),
        "search_s": timing.get("search"),
        "finetune_s": timing.get("final_finetune"),
        "run_s": timing.get("total"),
        "status": run.status,
        "run_dir": str(run.run_dir),
        "made_by": made_by(run.run_dir),
        "onnx_sha256": measured["onnx_sha256"],
        "p50_ms_repeats": measured["p50_ms_repeats"],
        "speedup_repeats": measured["speedup_repeats"],
    }


def _kd_total(kd: Mapping[str, Any]) -> float:
    """KD epochs a run spent (reports before the depth share was counted lack ``total``)."""
    return float(kd.get("total", kd["steps"] + (kd["final"] or 0.0)))


def refused_row(run: Any, base_report: Mapping[str, Any]) -> dict[str, Any]:
    """A method that refused the budget before pruning: no model, the floor it named."""
    fraction = run.fraction
    return {
        "method": run.method,
        "seed": getattr(run, "seed", None),
        "budget_fraction": fraction,
        "budget_ms": fraction * base_report["p50_ms"],
        "meets_budget": False,
        "refused": run.report["refused"],
        "floor_ms_predicted": run.report.get("floor_ms"),
        "floor_fraction_predicted": None
        if run.report.get("floor_ms") is None
        else run.report["floor_ms"] / base_report["p50_ms_at_start"],
        "test_top1": None,
        "p50_ms": None,
        "status": run.status,
        "run_dir": str(run.run_dir),
        "made_by": made_by(run.run_dir),
    }


def seed_summary(rows: Sequence[Mapping[str, Any]], fractions: Sequence[float]) -> list[dict]:
    """Per budget and method: runs, how many met the budget, mean and spread (sample
    standard deviation over seeds) of test top-1."""
    out = []
    for f in fractions:
        by: dict[str, list[Mapping[str, Any]]] = {}
        for r in rows:
            if r["budget_fraction"] == f:
                by.setdefault(r["method"], []).append(r)
        for method, rs in by.items():
            accs = [r["test_top1"] for r in rs if r.get("test_top1") is not None]
            out.append(
                {
                    "budget_fraction": f,
                    "method": method,
                    "seeds": [r.get("seed") for r in rs],
                    "n": len(rs),
                    "met": sum(bool(r.get("meets_budget")) for r in rs),
                    "mean_top1": statistics.fmean(accs) if accs else None,
                    "std_top1": statistics.stdev(accs) if len(accs) > 1 else None,
                }
            )
    return out


def winners(rows: Sequence[Mapping[str, Any]], fractions: Sequence[float]) -> list[dict]:
    """Per budget: the most accurate method (mean test top-1 over its seeds) among those
    whose every run met it. A winner is *called* only when its margin over the runner-up
    exceeds the larger of their seed spreads; with one seed per method there is no spread
    and no call (``called`` None)."""
    summary = seed_summary(rows, fractions)
    out = []
    for f in fractions:
        at = [s for s in summary if s["budget_fraction"] == f]
        ok = sorted(
            (s for s in at if s["n"] and s["met"] == s["n"] and s["mean_top1"] is not None),
            key=lambda s: -s["mean_top1"],
        )
        entry: dict[str, Any] = {"budget_fraction": f, "meeting": [s["method"] for s in ok]}
        if not ok:
            entry["winner"] = None
            out.append(entry)
            continue
        best = ok[0]
        entry.update(winner=best["method"], test_top1=best["mean_top1"], seeds=best["n"])
        if len(ok) > 1:
            second = ok[1]
            margin = best["mean_top1"] - second["mean_top1"]
            spreads = [s["std_top1"] for s in (best, second) if s["std_top1"] is not None]
            spread = max(spreads) if len(spreads) == 2 else None
            entry.update(
                runner_up=second["method"],
                margin_pp=100 * margin,
                spread_pp=None if spread is None else 100 * spread,
                called=None if spread is None else margin > spread,
            )
        edge = [s for s in at if s["method"] == "edgeprune" and s["mean_top1"] is not None]
        if edge and best["method"] != "edgeprune":
            entry["edgeprune_gap_pp"] = 100 * (edge[0]["mean_top1"] - best["mean_top1"])
        out.append(entry)
    return out


# --------------------------------------------------------------------------------- render


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _code(m: Mapping[str, Any]) -> str:
    """``commit X[ with uncommitted changes][, code Y]`` from an environment or made_by."""
    return (
        f"commit {m.get('git_commit') or '-'}"
        + (" with uncommitted changes" if m.get("git_dirty") else "")
        + (f", code {m['code_version']}" if m.get("code_version") else "")
    )


def provenance_line(rows: Sequence[Mapping[str, Any]]) -> str:
    """Which commit (and code hash) made the rows: one code version per table."""
    counts: dict[str, int] = {}
    for r in rows:
        m = r.get("made_by")
        who = _code(m) if m else "unrecorded"
        counts[who] = counts.get(who, 0) + 1
    return "Rows made by: " + "; ".join(f"{who} ({n} rows)" for who, n in counts.items()) + "."


def render_markdown(res: Mapping[str, Any], plot_name: str) -> str:
    """The results as Markdown (rendered from the results dict only)."""
    env, base, st = res["environment"], res["baseline"], res["settings"]
    lines = [
        f"# CIFAR-10 {st['model']}: accuracy at equal measured latency"
        + (" (SMOKE run: pipeline check, numbers meaningless)" if res["smoke"] else ""),
        "",
        f"Profile `{res['profile']['name']}` on {env['cpu_model']} ({env['logical_cores']} "
        f"logical cores, 1-min load avg {_num(env.get('load_avg_1m'))}), "
        f"onnxruntime {env['onnxruntime']}, "
        f"torch {env['torch']}, torch-pruning {env.get('torch_pruning')}, edgeprune "
        f"{env['edgeprune']} ({_code(env)}). Created {res['created']}.",
        "",
        f"Data: {res['data']['train']} train / {res['data']['val']} val / {res['data']['test']} "
        f"test images. Baseline: {st['baseline_epochs']} epochs, test top-1 "
        f"{_pct(base['test_top1'])}, p50 {base['p50_ms']:.3f} ms, p90 {base['p90_ms']:.3f} ms, "
        f"{base['macs'] / 1e6:.2f}M MACs. Fine-tuning for every method: {st['step_epochs']} KD "
        f"epoch(s) per step, {st['total_epochs']} in all ({st['steps']} latency steps, the "
        "same stopping rule for every method). Final latency: "
        f"{res['final_benchmark']['repeats']} interleaved benchmark runs of all models "
        f"({res['final_benchmark']['blocks']} blocks each), medians.",
        "",
        "| budget | method | test top-1 | p50 ms | p90 ms | meets | speedup (decision) | "
        "speedup (p50) | MACs | MACs ratio | measured / MACs speedup | KD epochs | search s | "
        "fine-tune s |",
        "|---|---|---:|---:|---:|:-:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        if r.get("refused"):
            floor = r.get("floor_fraction_predicted")
            lines.append(
                f"| {100 * r['budget_fraction']:.0f}% ({r['budget_ms']:.3f} ms) | {r['method']} | "
                "refused | - | - | no | floor "
                + ("-" if floor is None else f"{100 * floor:.0f}% of the baseline (predicted)")
                + " | - | - | - | - | - | - | - |"
            )
            continue
        method = r["method"] + (
            f" ({len(r['dropped_blocks'])} blocks dropped)" if r.get("dropped_blocks") else ""
        )
        lines.append(
            f"| {100 * r['budget_fraction']:.0f}% ({r['budget_ms']:.3f} ms) | {method} | "
            f"{_pct(r['test_top1'])} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | "
            f"{'yes' if r['meets_budget'] else 'no'} | "
            + (
                "-"
                if r.get("speedup_by_statistic") is None
                else f"{r['speedup_by_statistic']:.2f}x ({r.get('statistic', 'p50')})"
            )
            + f" | {r['speedup_measured']:.2f}x | "
            f"{r['macs'] / 1e6:.2f}M | {r['macs_ratio']:.2f}x | "
            f"{r['speedup_per_macs_ratio']:.2f} | "
            f"{r['kd_epochs']} | {_s(r['search_s'])} | {_s(r['finetune_s'])} |"
        )
    fractions = sorted({r["budget_fraction"] for r in res["rows"]}, reverse=True)
    summary = seed_summary(res["rows"], fractions)
    if any(x["n"] > 1 for x in summary):
        lines += [
            "",
            "## Over seeds (search + KD seed; same split and baseline)",
            "",
            "| budget | method | runs | met budget | test top-1 mean | spread (std) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for x in summary:
            std = x["std_top1"]
            lines.append(
                f"| {100 * x['budget_fraction']:.0f}% | {x['method']} | {x['n']} | {x['met']} | "
                f"{_pct(x['mean_top1'])} | {'-' if std is None else f'{100 * std:.2f} pp'} |"
            )
    lines += ["", provenance_line(res["rows"])]
    lines += [
        "",
        "## Winner per budget (most accurate method meeting it by the decision statistic)",
    ]
    lines += [""]
    for w in res["winners"]:
        head = f"- {100 * w['budget_fraction']:.0f}% of the baseline p50: "
        if w["winner"] is None:
            lines.append(head + "no method met the budget in the final measurement.")
            continue
        seeds = w.get("seeds", 1)
        mean = "mean over seeds " if seeds > 1 else ""
        text = f"**{w['winner']}** ({mean}{_pct(w['test_top1'])})"
        if "runner_up" in w and abs(w["margin_pp"]) < 1e-9:
            text += f", tied with {w['runner_up']}"
        elif "runner_up" in w:
            text += f", {w['margin_pp']:+.2f} pp over {w['runner_up']}"
            if w.get("called") is True:
                text += f", beyond the seeds' spread ({w['spread_pp']:.2f} pp): a win"
            elif w.get("called") is False:
                text = (
                    f"**tie** (margin {w['margin_pp']:+.2f} pp within the seeds' spread "
                    f"{w['spread_pp']:.2f} pp): {w['winner']} {_pct(w['test_top1'])}, "
                    f"{w['runner_up']} next"
                )
            else:
                text += " (one seed each: not a call)"
        if "edgeprune_gap_pp" in w:
            text += f"; edgeprune is {w['edgeprune_gap_pp']:+.2f} pp from it"
        lines.append(head + text + f" (met by: {', '.join(w['meeting'])}).")
    t = res["timing_s"]
    lines += [
        "",
        "## Wall time",
        "",
        "| phase | s |",
        "|---|---:|",
        *[f"| {k} | {v:.0f} |" for k, v in t.items() if isinstance(v, int | float)],
        "",
        "Search s includes the per-step KD epochs and per-step latency measurements; cached "
        "runs show the time of the run that produced them.",
        "",
        f"![accuracy vs measured latency]({plot_name})",
        "",
    ]
    return "\n".join(lines)


COLORS = {
    "edgeprune": "tab:red",
    "edgeprune-width": "tab:pink",
    "rl-flops": "tab:purple",
    "uniform": "tab:green",
    "magnitude": "tab:orange",
    "magnitude-rounded": "tab:brown",
    "knapsack": "tab:cyan",
    "knapsack-width": "tab:olive",
}
MARKERS = ("o", "s", "^", "D", "v")


def plot_accuracy_vs_latency(res: Mapping[str, Any]) -> bytes:
    """Test top-1 vs measured p50: every run as a point (marker: budget; hollow: missed it),
    one line per method through its per-budget means (the Pareto view), baseline, budgets."""
    fig, ax = plt.subplots(figsize=(8, 5))
    fractions = [b["fraction"] for b in res["budgets"]]
    means: dict[str, dict[float, list[tuple[float, float]]]] = {}
    for r in res["rows"]:
        if r.get("p50_ms") is None:
            continue  # refused: no model
        acc = 100 * (r["test_top1"] or 0.0)
        color = COLORS.get(r["method"], "tab:gray")
        ax.scatter(
            r["p50_ms"],
            acc,
            marker=MARKERS[fractions.index(r["budget_fraction"]) % len(MARKERS)],
            s=55,
            color=color if r["meets_budget"] else "white",
            edgecolor=color if not r["meets_budget"] else "black",
            linewidths=1.2,
            alpha=0.85,
            zorder=4,
        )
        means.setdefault(r["method"], {}).setdefault(r["budget_fraction"], []).append(
            (r["p50_ms"], acc)
        )
    for method, per_budget in means.items():
        pts = sorted(
            (statistics.fmean(x for x, _ in v), statistics.fmean(y for _, y in v))
            for v in per_budget.values()
        )
        ax.plot(
            [x for x, _ in pts],
            [y for _, y in pts],
            color=COLORS.get(method, "tab:gray"),
            linewidth=1.6,
            zorder=3,
            label=f"{method} (mean per budget)",
        )
    base = res["baseline"]
    if base["test_top1"] is not None:
        ax.scatter(
            base["p50_ms"],
            100 * base["test_top1"],
            marker="*",
            s=220,
            color="tab:blue",
            edgecolor="black",
            zorder=5,
            label="baseline",
        )
    for b, style in zip(res["budgets"], ("--", ":", "-."), strict=False):
        ax.axvline(
            b["budget_ms"],
            color="crimson",
            linestyle=style,
            linewidth=1.1,
            label=f"budget {100 * b['fraction']:.0f}% ({b['budget_ms']:.3f} ms)",
        )
    ax.set_xlabel(
        f"measured p50 on {res['profile']['name']} (ms, median of "
        f"{res['final_benchmark']['repeats']} interleaved runs)"
    )
    ax.set_ylabel("test top-1 (%)")
    title = f"CIFAR-10 {res['settings']['model']}: accuracy vs measured latency"
    ax.set_title(title + (" (smoke)" if res["smoke"] else ""))
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=7,
        loc="best",
        title="markers: budget; hollow: missed it",
        title_fontsize=7,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """JSON (source of truth), then Markdown and the plot rendered from it."""
    stem = f"cifar10_{results['settings']['model']}"
    plot = f"{stem}_accuracy_vs_latency.png"
    atomic_write_json(out / f"{stem}.json", results)
    atomic_write_bytes(out / plot, plot_accuracy_vs_latency(results))
    atomic_write_text(out / f"{stem}.md", render_markdown(results, plot))


def summary_table(res: dict[str, Any]) -> Table:
    """Baseline and every row, for the terminal."""
    t = Table(title="accuracy at measured latency")
    for col in ("budget", "method", "test top-1", "p50 ms", "meets", "speedup", "MACs ratio"):
        t.add_column(col, justify="left" if col in ("budget", "method") else "right")
    b = res["baseline"]
    t.add_row(
        "-",
        "baseline",
        f"{100 * (b['test_top1'] or 0):.2f}%",
        f"{b['p50_ms']:.3f}",
        "",
        "1.00x",
        "1.00x",
    )
    for r in res["rows"]:
        if r.get("refused"):
            t.add_row(f"{100 * r['budget_fraction']:.0f}%", r["method"], "refused", "", "no")
            continue
        t.add_row(
            f"{100 * r['budget_fraction']:.0f}%",
            r["method"],
            f"{100 * (r['test_top1'] or 0):.2f}%",
            f"{r['p50_ms']:.3f}",
            "yes" if r["meets_budget"] else "[yellow]no[/]",
            f"{r['speedup_measured']:.2f}x",
            f"{r['macs_ratio']:.2f}x",
        )
    return t
