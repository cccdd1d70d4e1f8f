"""Sections shared by the compress and benchmark reports: latency tables, noise, host."""

from __future__ import annotations

from typing import Any

from edgeprune.report import fmt
from edgeprune.report.blocks import Para, Table

NOISY_P90_OVER_P50 = 1.5
_SETTING_KEYS = (
    "runtime",
    "onnxruntime_version",
    "tensorrt_version",
    "execution_provider",
    "intra_op_threads",
    "inter_op_threads",
    "allow_spinning",
    "graph_optimization",
    "precision",
    "batch",
    "input_shape",
    "cuda_graph",
    "data_transfers",
)


def noise_note(series: list[tuple[str, str, dict[str, Any]]], env: dict[str, Any]) -> list[Para]:
    """A warning when tails are heavy (p90 > 1.5x p50): the host was busy while timing."""
    noisy = [
        f"{model} on {prof}"
        for prof, model, s in series
        if s["p50_ms"] > 0 and s["p90_ms"] / s["p50_ms"] > NOISY_P90_OVER_P50
    ]
    if not noisy:
        return []
    load = env.get("load_avg_1m")
    load_text = "" if load is None else f" (1-minute load average {load:.2f})"
    return [
        Para(
            f"Noisy measurement: p90 is more than {NOISY_P90_OVER_P50}x p50 for "
            f"{', '.join(noisy)}; the host was busy{load_text}. The p50 figures and ratios are "
            "usable; re-run on a quiet machine before quoting tail latencies."
        )
    ]


def latency_rows(series: list[tuple[str, str, dict[str, Any]]]) -> Table:
    """One row per (profile, model, LatencyStats dict)."""
    rows = tuple(
        (
            prof,
            model,
            str(s.get("count", fmt.MISSING)),
            fmt.ms(s.get("min_ms")),
            fmt.ms(s["p50_ms"]),
            fmt.ms(s["p90_ms"]),
            fmt.ms(s.get("p95_ms")),
            fmt.ms(s.get("p99_ms")),
            fmt.ms(s.get("mean_ms")),
            fmt.pct(s.get("cov")),
        )
        for prof, model, s in series
    )
    return Table(
        (
            "profile",
            "model",
            "iterations",
            "min ms",
            "p50 ms",
            "p90 ms",
            "p95 ms",
            "p99 ms",
            "mean ms",
            "CoV",
        ),
        rows,
        align="ll",
    )


def environment_pairs(env: dict[str, Any], settings: dict[str, Any]) -> list[tuple[str, str]]:
    """Host facts plus the measurement settings that change latency figures."""
    pairs = [(k.replace("_", " "), fmt.text(v)) for k, v in env.items()]
    pairs += [(k.replace("_", " "), fmt.text(settings[k])) for k in _SETTING_KEYS if k in settings]
    return pairs
