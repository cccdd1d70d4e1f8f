"""Plots for reports, drawn from the report JSON only, returned as PNG bytes.

The same bytes go to ``plots/*.png`` (for Markdown) and, base64-encoded, into the HTML,
so the two renderings cannot show different figures. A plot without data (a run with no
search steps, say) is left out rather than drawn empty.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede the pyplot import

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from edgeprune.report import fmt

DPI = 100
BUDGET_STYLE: dict[str, Any] = {"color": "crimson", "linestyle": "--", "linewidth": 1.2}
# Cut latency axes at this quantile of all times: one 6 ms hiccup among 2,000 runs of
# 0.4 ms would otherwise squash every curve against the left edge.
TAIL_QUANTILE = 0.995
LOG_SPREAD = 10.0  # switch a latency axis to log scale above this max/min ratio


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, accuracy) points no other point beats on both (lower latency, higher
    accuracy), sorted by latency."""
    front: list[tuple[float, float]] = []
    best = -math.inf
    for lat, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((lat, acc))
            best = acc
    return front


def _quantile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _cdf(ax: Any, times: Sequence[float], label: str, **kw: Any) -> None:
    s = sorted(times)
    n = len(s)
    ax.step(s, [(i + 1) / n for i in range(n)], where="post", label=label, **kw)


# ---- compress --------------------------------------------------------------------------


def accuracy_vs_latency(report: dict[str, Any]) -> bytes | None:
    """Every evaluated candidate (colour = prune step), its Pareto front, the budget, and the
    measured baseline and final models."""
    cands = [
        c
        for c in report["search"]["candidates"]
        if c.get("accuracy") is not None and c.get("latency_ms") is not None
    ]
    if not cands:
        return None
    prof = report["profile"]["name"]
    sources = {c.get("latency_source") or "measured" for c in cands}
    src = "LUT-predicted" if all(x.startswith("lut") for x in sources) else "predicted or measured"
    if "latency_scale" in report:
        src += ", rescaled to the end measurement"
    name, percent = fmt.metric_of(report)
    k = 100.0 if percent else 1.0
    fig, ax = plt.subplots(figsize=(8, 5))
    sc = ax.scatter(
        [c["latency_ms"] for c in cands],
        [k * c["accuracy"] for c in cands],
        c=[c.get("step") or 0 for c in cands],
        cmap="viridis",
        s=18,
        alpha=0.75,
        label=f"candidates ({len(cands)}, {src} latency, val proxy acc.)",
    )
    fig.colorbar(sc, ax=ax, label="prune step", ticks=MaxNLocator(integer=True))
    front = pareto_front([(c["latency_ms"], k * c["accuracy"]) for c in cands])
    ax.plot(
        *zip(*front, strict=True),
        color="black",
        marker="o",
        markerfacecolor="none",
        markersize=7,
        linewidth=1.2,
        label=f"Pareto front ({len(front)})",
    )
    scale = report.get("latency_scale") or {}
    stat = scale.get("statistic", "p50")
    for side, marker, color in (("baseline", "*", "tab:blue"), ("final", "P", "tab:red")):
        acc = report[side]["accuracy"].get("val")
        if acc is not None:
            x = scale.get(f"{side}_ms", report[side]["latency"][prof]["p50_ms"])
            ax.scatter(
                [x],
                [k * acc],
                marker=marker,
                s=180,
                color=color,
                edgecolor="black",
                zorder=5,
                label=f"{side} ({x:.3f} ms measured at the end, {stat}; val acc.)",
            )
    budget = report["goal"].get("budget_ms")
    if budget is not None:
        ax.axvline(budget, label=f"budget {budget:.3f} ms", **BUDGET_STYLE)
    ax.set_xlabel(f"latency on {prof} (ms, one scale: the final interleaved measurement)")
    ax.set_ylabel(f"validation {name}" + (" (%)" if percent else ""))
    ax.set_title(f"{name} vs latency of every evaluated candidate")
    ax.grid(alpha=0.3)
    # Below the axes: inside, it covered the low-accuracy candidates of aggressive steps.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    return _png(fig)


def latency_per_step(report: dict[str, Any]) -> bytes | None:
    """Measured (and LUT-predicted) latency of each step's kept model against the budget,
    with its accuracy below."""
    steps = report["search"]["steps"]
    if not steps:
        return None
    prof = report["profile"]["name"]
    scale = report.get("latency_scale")
    if scale:
        start_ms = scale["baseline_ms"]
    else:
        start = report["baseline"].get("latency_at_start") or report["baseline"]["latency"][prof]
        start_ms = start["p50_ms"]
    xs = [0] + [s["step"] for s in steps]
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    ax.plot(
        xs,
        [start_ms] + [s["latency_ms"] for s in steps],
        marker="o",
        label="measured (interleaved with baseline)",
    )
    pred = [s.get("predicted_ms") for s in steps]
    if any(p is not None for p in pred):
        ax.plot(xs[1:], pred, marker="x", linestyle=":", label="LUT-predicted")
    budget = report["goal"].get("budget_ms")
    if budget is not None:
        ax.axhline(budget, label=f"budget {budget:.3f} ms", **BUDGET_STYLE)
    unit = "final measurement's scale" if scale else "p50"
    ax.set_ylabel(f"latency on {prof} (ms, {unit})")
    ax.set_title("Latency per prune step (step 0 = baseline)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    name, percent = fmt.metric_of(report)
    k = 100.0 if percent else 1.0
    for key, label in (
        ("proxy_accuracy_before_ft", "proxy acc. before fine-tune"),
        ("val_accuracy_after_ft", "val acc. after step fine-tune"),
    ):
        vals = [s.get(key) for s in steps]
        if any(v is not None for v in vals):
            ax2.plot(xs[1:], [None if v is None else k * v for v in vals], marker=".", label=label)
    ax2.set_xlabel("prune step")
    ax2.set_ylabel(name + (" (%)" if percent else ""))
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    ax2.xaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def channels_per_layer(report: dict[str, Any]) -> bytes | None:
    """Channels of every dependency group before and after pruning (frozen ones hatched)."""
    rows = report["channels"]
    if not rows:
        return None
    n = len(rows)
    fig, ax = plt.subplots(figsize=(min(max(8, 0.35 * n + 2), 30), 4.5))
    xs = range(n)
    ax.bar(xs, [r["before"] for r in rows], color="lightgray", edgecolor="gray", label="before")
    bars = ax.bar(xs, [r["after"] for r in rows], width=0.55, color="tab:blue", label="after")
    for bar, r in zip(bars, rows, strict=True):
        if r.get("frozen"):
            bar.set_hatch("//")
            bar.set_facecolor("tab:gray")
    step = max(1, n // 60)  # thin the labels of very deep models
    ax.set_xticks(list(xs)[::step])
    ax.set_xticklabels(
        [str(r.get("name") or r["group"]) for r in rows][::step],
        rotation=70,
        ha="right",
        fontsize=7,
    )
    ax.set_ylabel("output channels")
    ax.set_title("Channels per dependency group (hatched: frozen, not prunable)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def latency_distribution(report: dict[str, Any]) -> bytes | None:
    """CDF of every timed iteration, baseline vs final, one panel per profile."""
    profiles = [p for p in report["final"]["latency"] if p in report["baseline"]["latency"]]
    if not profiles:
        return None
    fig, axes = plt.subplots(1, len(profiles), figsize=(7 * len(profiles), 4), squeeze=False)
    for ax, prof in zip(axes[0], profiles, strict=True):
        series = [(side, report[side]["latency"][prof]) for side in ("baseline", "final")]
        _cdf_panel(ax, [(f"{side} (n={s['count']})", s) for side, s in series], prof)
        budget = report["goal"].get("budget_ms")
        if budget is not None and prof == report["profile"]["name"]:
            ax.axvline(budget, label=f"budget {budget:.3f} ms", **BUDGET_STYLE)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Latency distribution of the exported ONNX models")
    return _png(fig)


def _cdf_panel(ax: Any, series: list[tuple[str, dict[str, Any]]], title: str) -> None:
    everything = [t for _, s in series for t in s["times_ms"]]
    hi = _quantile(everything, TAIL_QUANTILE)
    lo = min(everything)
    beyond = sum(t > hi for t in everything)
    for label, s in series:
        _cdf(ax, s["times_ms"], f"{label}: p50 {s['p50_ms']:.3f}, p90 {s['p90_ms']:.3f} ms")
    note = f" ({beyond} slowest beyond axis)" if beyond else ""
    if lo > 0 and hi / lo > LOG_SPREAD:
        # A busy host adds millisecond stalls to sub-millisecond runs; on a linear axis the
        # bulk of the distribution would collapse into one pixel column.
        ax.set_xscale("log")
        ax.set_xlim(lo / 1.05, hi)
        note += ", log scale"
    else:
        ax.set_xlim(lo - 0.02 * (hi - lo), hi)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(f"latency (ms){note}")
    ax.set_ylabel("fraction of iterations")
    ax.set_title(title)
    ax.grid(alpha=0.3)


def policy_per_step(report: dict[str, Any]) -> bytes | None:
    """The RL policy's value per group at the start and after every step: what it learned
    (the groups that moved most are labelled, the rest drawn thin)."""
    pol = (report.get("search") or {}).get("policy")
    if not pol or len(pol["by_step"]) < 2:
        return None
    values = np.asarray(pol["by_step"], dtype=float)  # steps x groups
    moved = np.abs(values[-1] - values[0])
    top = set(np.argsort(-moved)[:8].tolist())
    fig, ax = plt.subplots(figsize=(8, 4.5))
    steps = range(values.shape[0])
    for j, name in enumerate(pol["groups"]):
        if j in top:
            ax.plot(steps, values[:, j], marker="o", label=name)
        else:
            ax.plot(steps, values[:, j], color="lightgray", linewidth=0.8)
    ax.set_xticks(list(steps))
    ax.set_xticklabels(["start", *(str(i) for i in steps[1:])])
    ax.set_xlabel("after step")
    ax.set_ylabel(pol.get("meaning", "policy"))
    ax.set_title(f"RL policy per step ({pol.get('updates', 0)} updates; 8 that moved most named)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _png(fig)


COMPRESS_PLOTS: dict[str, Callable[[dict[str, Any]], bytes | None]] = {
    "accuracy_vs_latency": accuracy_vs_latency,
    "latency_per_step": latency_per_step,
    "policy_per_step": policy_per_step,
    "channels_per_layer": channels_per_layer,
    "latency_distribution": latency_distribution,
}


# ---- benchmark -------------------------------------------------------------------------


def _by_profile(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in report["entries"]:
        out.setdefault(e["profile"], []).append(e)
    return out


def benchmark_cdf(report: dict[str, Any]) -> bytes | None:
    """CDF of every timed iteration per model, one panel per profile."""
    groups = _by_profile(report)
    n = len(groups)
    fig, axes = plt.subplots(1, n, figsize=(max(7, 6 * n), 4), squeeze=False)
    for ax, (prof, entries) in zip(axes[0], groups.items(), strict=True):
        _cdf_panel(ax, [(e["model"], e["latency"]) for e in entries], prof)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Latency distribution per model and profile")
    return _png(fig)


def benchmark_p50(report: dict[str, Any]) -> bytes | None:
    """p50 per model grouped by profile; whiskers reach p90."""
    groups = _by_profile(report)
    models: list[str] = []
    for e in report["entries"]:
        if e["model"] not in models:
            models.append(e["model"])
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(models) * len(groups) + 2), 4.5))
    for m, model in enumerate(models):
        xs, p50, up = [], [], []
        for g, entries in enumerate(groups.values()):
            for e in entries:
                if e["model"] == model:
                    xs.append(g + (m - (len(models) - 1) / 2) * width)
                    p50.append(e["latency"]["p50_ms"])
                    up.append(e["latency"]["p90_ms"] - e["latency"]["p50_ms"])
        bars = ax.bar(xs, p50, width=width, label=model, yerr=[[0] * len(up), up], capsize=3)
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in p50], fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(list(groups))
    lats = [e["latency"] for e in report["entries"]]
    log = max(x["p90_ms"] for x in lats) / min(x["p50_ms"] for x in lats) > LOG_SPREAD
    if log:  # same reason as the CDF: stalls on a busy host would flatten every bar
        ax.set_yscale("log")
    ax.set_ylabel("p50 latency (ms), whisker to p90" + (", log scale" if log else ""))
    ax.set_title("p50 latency per model, grouped by profile")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


BENCHMARK_PLOTS: dict[str, Callable[[dict[str, Any]], bytes | None]] = {
    "latency_cdf": benchmark_cdf,
    "p50_by_profile": benchmark_p50,
}


def draw(report: dict[str, Any]) -> dict[str, bytes]:
    """Every plot of a loaded report (see :func:`edgeprune.report.load.load_report`)."""
    table = COMPRESS_PLOTS if report["kind"] == "compress" else BENCHMARK_PLOTS
    out = {}
    for name, fn in table.items():
        png = fn(report)
        if png is not None:
            out[name] = png
    return out
