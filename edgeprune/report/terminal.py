"""Terminal tables (rich) rendered from report dicts: the compress summary and the
benchmark table. Like everything in ``report/``, they read JSON-shaped data only."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from edgeprune.report import fmt

COV_WARN = 0.025  # trtexec warns above 2.5 %


def benchmark_table(report: dict[str, Any]) -> Table:
    """Model, profile, p50/p90/p99 (ms), CoV (yellow above 2.5 %), speedup vs the first."""
    host = report.get("host") or {}
    table = Table(title=f"Latency on {host.get('cpu_model', 'this host')}")
    cols = ("model", "profile", "p50 ms", "p90 ms", "p99 ms", "CoV", "speedup (p50)",
            "decision ms", "speedup (decision)")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "profile") else "right")
    for e in report["entries"]:
        lat = e["latency"]
        cov = f"{lat['cov']:.1%}"
        stat = e.get("statistic", "p50")
        fig, sp = e.get("figure_ms"), e.get("speedup_by_statistic")
        table.add_row(
            e["model"],
            e["profile"],
            f"{lat['p50_ms']:.3f}",
            f"{lat['p90_ms']:.3f}",
            f"{lat['p99_ms']:.3f}",
            f"[yellow]{cov}[/]" if lat["cov"] > COV_WARN else cov,
            f"{e['speedup_vs_first']:.2f}x",
            "-" if fig is None else f"{fig:.3f} ({stat})",
            "-" if sp is None else f"{sp:.2f}x",
        )
    return table


def compress_table(report: dict[str, Any]) -> Table:
    """Baseline vs final, for the terminal."""
    prof = report["profile"]["name"]
    b, f = report["baseline"], report["final"]
    t = Table(title=f"edgeprune compress — {prof}")
    for col in ("", "baseline", "pruned", "change"):
        t.add_column(col, justify="right")

    name, percent = fmt.metric_of(report)

    def acc(d: dict[str, Any], k: str) -> str:
        return fmt.metric(d["accuracy"].get(k), percent)

    scale = report.get("latency_scale")
    if scale:
        bp, fp, label = scale["baseline_ms"], scale["final_ms"], f"latency ({scale['statistic']})"
    else:
        bp, fp, label = b["latency"][prof]["p50_ms"], f["latency"][prof]["p50_ms"], "p50 latency"
    t.add_row(label, f"{bp:.3f} ms", f"{fp:.3f} ms", f"{bp / fp:.2f}x faster")
    budget = report["goal"]["budget_ms"]
    if budget is not None:
        t.add_row(
            "budget", "", f"{budget:.3f} ms", "met" if report["goal"]["budget_met"] else "NOT met"
        )
    t.add_row(
        "MACs",
        f"{b['macs'] / 1e6:.2f}M",
        f"{f['macs'] / 1e6:.2f}M",
        f"{b['macs'] / max(f['macs'], 1):.2f}x fewer",
    )
    t.add_row("params", f"{b['params'] / 1e6:.3f}M", f"{f['params'] / 1e6:.3f}M", "")
    t.add_row(f"val {name}", acc(b, "val"), acc(f, "val"), "")
    if b["accuracy"].get("test") is not None or name == "top-1":
        t.add_row(f"test {name}", acc(b, "test"), acc(f, "test"), "")
    return t
