"""The content of a benchmark report, built from ``benchmark.json``."""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from edgeprune.report import fmt
from edgeprune.report.blocks import Block, Document, Figure, Heading, Para, Table, kv_table
from edgeprune.report.sections import environment_pairs, latency_rows, noise_note


def _ordered(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def matrix(r: dict[str, Any]) -> Table:
    """Models (rows) x profiles (p50, p90, speedup vs the first model for each profile)."""
    models = _ordered([e["model"] for e in r["entries"]])
    profiles = _ordered([e["profile"] for e in r["entries"]])
    cell = {(e["model"], e["profile"]): e for e in r["entries"]}
    headers = ["model"]
    for p in profiles:
        headers += [f"{p} p50 ms", f"{p} p90 ms", f"{p} speedup"]
    rows = []
    for m in models:
        row = [m]
        for p in profiles:
            e = cell.get((m, p))
            if e is None:
                row += [fmt.MISSING] * 3
            else:
                row += [
                    fmt.ms(e["latency"]["p50_ms"]),
                    fmt.ms(e["latency"]["p90_ms"]),
                    fmt.speedup(e["speedup_vs_first"]),
                ]
        rows.append(tuple(row))
    return Table(tuple(headers), tuple(rows))


def _profiles(r: dict[str, Any]) -> Table:
    rows = []
    seen: set[str] = set()
    for e in r["entries"]:
        if e["profile"] in seen:
            continue
        seen.add(e["profile"])
        ps = e.get("profile_settings") or {}
        st = e["latency"].get("settings") or {}
        threads = st.get("intra_op_threads")
        rows.append(
            (
                e["profile"],
                fmt.text(ps.get("runtime") or st.get("runtime")),
                fmt.text(ps.get("precision") or st.get("precision")),
                fmt.text(ps.get("batch") or st.get("batch")),
                fmt.text(ps.get("input_shape") or st.get("input_shape")),
                fmt.text(threads),
                fmt.text(st.get("blocks")),
                str(ps.get("device") or "-"),
            )
        )
    return Table(
        ("profile", "runtime", "precision", "batch", "input", "threads", "blocks", "device"),
        tuple(rows),
        align="llllrrrl",
    )


def _models(r: dict[str, Any]) -> Table:
    rows = []
    seen: set[str] = set()
    for e in r["entries"]:
        if e["model"] not in seen:
            seen.add(e["model"])
            rows.append(
                (e["model"], str(e.get("onnx_path", "-")), str(e.get("onnx_sha256") or "-")[:12])
            )
    return Table(("model", "file", "sha256"), tuple(rows), align="lll")


def _runtime_versions(r: dict[str, Any]) -> dict[str, Any]:
    # host_info has no TensorRT version; each target records its runtime's in the settings.
    return {
        k: v
        for e in r["entries"]
        for k, v in (e["latency"].get("settings") or {}).items()
        if k.endswith("_version")
    }


def build(r: dict[str, Any], figures: Container[str]) -> Document:
    """The benchmark report's blocks; ``figures`` are the plot names that were drawn."""
    models = _ordered([e["model"] for e in r["entries"]])
    profiles = _ordered([e["profile"] for e in r["entries"]])
    host = r.get("host") or {}
    series = [(e["profile"], e["model"], e["latency"]) for e in r["entries"]]
    subtitle = f"created {r.get('created', '-')} · host {host.get('cpu_model', '-')}"
    blocks: list[Block] = [
        Para(
            f"{len(models)} models on {len(profiles)} profiles, measured in interleaved "
            "blocks (every model gets a share of each round, in rotated order, so background "
            f"noise hits all alike). Speedup is the p50 of the first model ({models[0]}) on "
            "the same profile divided by the model's p50."
        ),
        Heading("Models x profiles"),
        matrix(r),
    ]
    if "p50_by_profile" in figures:
        blocks.append(
            Figure(
                "p50_by_profile", "p50 latency per model, grouped by profile; whiskers reach p90."
            )
        )
    if "latency_cdf" in figures:
        blocks.append(
            Figure(
                "latency_cdf",
                "Cumulative distribution of every timed iteration "
                "per model, one panel per profile.",
            )
        )
    blocks += [
        Heading("Latency statistics"),
        latency_rows(series),
        *noise_note(series, host),
        Heading("Models"),
        _models(r),
        Heading("Profiles"),
        _profiles(r),
        Heading("Environment"),
        kv_table(environment_pairs(host, _runtime_versions(r))),
    ]
    return Document(
        f"edgeprune benchmark: {len(models)} models x {len(profiles)} profiles",
        subtitle,
        tuple(blocks),
    )
