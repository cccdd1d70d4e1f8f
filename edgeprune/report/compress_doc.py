"""The content of a compress report, built from ``report.json`` (kind "compress")."""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from edgeprune.report import fmt
from edgeprune.report.blocks import Block, Document, Figure, Heading, Para, Table, flatten, kv_table
from edgeprune.report.sections import environment_pairs, latency_rows, noise_note

_LAT_ROWS = (
    ("p50 latency (ms)", "p50_ms"),
    ("p90 latency (ms)", "p90_ms"),
    ("p99 latency (ms)", "p99_ms"),
    ("mean latency (ms)", "mean_ms"),
)


def _pp(before: Any, after: Any) -> str:
    if before is None or after is None:
        return fmt.MISSING
    return f"{100 * (after - before):+.2f} pp"


def _diff(before: Any, after: Any) -> float | None:
    return None if before is None or after is None else after - before


def _scale(r: dict[str, Any]) -> tuple[float, float, str]:
    """Baseline and final latency on the report's one scale, and how it was measured."""
    sc = r.get("latency_scale")
    prof = r["profile"]["name"]
    if sc:  # reports since the one-scale change
        return sc["baseline_ms"], sc["final_ms"], sc["basis"]
    return (
        r["baseline"]["latency"][prof]["p50_ms"],
        r["final"]["latency"][prof]["p50_ms"],
        "p50 measured at the end",
    )


def _retakes(v: dict[str, Any]) -> str:
    retaken, kept = v.get("retaken_blocks", 0), v.get("disturbed_blocks_kept", 0)
    text = (
        ", none disturbed"
        if not retaken and not kept
        else f", {retaken} disturbed block pairs retaken, {kept} kept"
    )
    if v.get("others_cores") is not None:
        text += f"; other processes kept {v['others_cores']:.1f} cores busy meanwhile"
    return text


def _goal_text(r: dict[str, Any]) -> str:
    goal, prof = r["goal"], r["profile"]["name"]
    base_ms, final_ms, basis = _scale(r)
    budget = goal.get("budget_ms")
    if budget is not None:
        met = "met" if goal.get("budget_met") else "NOT met"
        head = (
            f"Latency budget {fmt.ms(budget)} ms on {prof}: {met}, final latency "
            f"{fmt.ms(final_ms)} ms, baseline {fmt.ms(base_ms)} ms (every latency in this "
            f"report is on one scale: the {basis}; in-run figures are rescaled to it)."
        )
    else:
        which = [f"{k} {goal[k]}" for k in ("sparsity", "flops_ratio") if goal.get(k)]
        head = (
            f"Goal: {', '.join(which) or 'see configuration'}; final latency "
            f"{fmt.ms(final_ms)} ms ({basis})."
        )
    v = goal.get("verdict")
    if v:
        head += (
            f" Verdict: ratio {v['ratio']:.3f} (90% interval {v['interval'][0]:.3f}-"
            f"{v['interval'][1]:.3f} over {v['blocks']} interleaved blocks"
            f"{_retakes(v)}) against the budget's {v['needed_ratio']:.3f}; "
            f"{'certain' if v['certain'] else 'a close call'}, the search's own landing "
            f"{'agrees' if v.get('in_run_met') == v['met'] else 'disagrees'}."
        )
    sp = r["speedup"]
    text = (
        f"{head} Measured speedup {fmt.speedup(sp.get('measured', sp['measured_p50']))} for "
        f"{fmt.speedup(sp.get('macs_ratio'))} fewer MACs. Search stopped: "
        f"{goal.get('stop_reason') or '-'} after {len(r['search']['steps'])} prune steps."
    )
    for w in r.get("warnings") or ():
        text += f" WARNING: {w}."
    return text


def _results(r: dict[str, Any]) -> Table:
    prof = r["profile"]["name"]
    b, f = r["baseline"], r["final"]
    bl, fl = b["latency"][prof], f["latency"][prof]
    rows: list[tuple[str, str, str, str]] = []
    for label, key in _LAT_ROWS:
        change = fmt.speedup(bl[key] / fl[key]) + " faster" if fl[key] else fmt.MISSING
        rows.append((label, fmt.ms(bl[key]), fmt.ms(fl[key]), change))
    rows.append(("latency CoV", fmt.pct(bl.get("cov")), fmt.pct(fl.get("cov")), ""))
    name, percent = fmt.metric_of(r)
    for split in ("val", "test"):
        ba, fa = b["accuracy"].get(split), f["accuracy"].get(split)
        if ba is None and fa is None and name != "top-1":
            continue
        change = _pp(ba, fa) if percent else fmt.metric(_diff(ba, fa), False)
        rows.append((f"{split} {name}", fmt.metric(ba, percent), fmt.metric(fa, percent), change))
    rows.append(
        (
            "MACs",
            fmt.macs_m(b["macs"]),
            fmt.macs_m(f["macs"]),
            fmt.speedup(b["macs"] / max(f["macs"], 1)) + " fewer",
        )
    )
    rows.append(
        (
            "params",
            fmt.params_m(b["params"]),
            fmt.params_m(f["params"]),
            fmt.speedup(b["params"] / max(f["params"], 1)) + " fewer",
        )
    )
    if b.get("onnx_bytes") and f.get("onnx_bytes"):
        rows.append(
            (
                "ONNX file",
                fmt.size(b["onnx_bytes"]),
                fmt.size(f["onnx_bytes"]),
                fmt.speedup(b["onnx_bytes"] / f["onnx_bytes"]) + " smaller",
            )
        )
    return Table(("", "baseline", "pruned", "change"), tuple(rows))


def _speedup(r: dict[str, Any]) -> Table:
    sp = r["speedup"]
    stat = sp.get("statistic", "p50")
    rows = (
        (
            f"measured ({stat})",
            fmt.speedup(sp.get("measured", sp["measured_p50"])),
            f"baseline / pruned {stat} in the final interleaved measurement (the report's "
            "scale; decisions used this statistic)",
        ),
        (
            "measured p50 ratio",
            fmt.speedup(sp["measured_p50"]),
            "baseline p50 / pruned p50, interleaved blocks, same process",
        ),
        (
            "median block ratio",
            fmt.speedup(sp.get("median_block_ratio")),
            "median over blocks of baseline / pruned (robust to drift)",
        ),
        (
            "MACs ratio",
            fmt.speedup(sp.get("macs_ratio")),
            "baseline MACs / pruned MACs (what FLOPs-based tools call speedup)",
        ),
    )
    return Table(("speedup", "value", "how it is computed"), rows, align="lrl")


def _search(r: dict[str, Any], figures: Container[str]) -> list[Block]:
    s = r["search"]
    cands = s["candidates"]
    sources = sorted({str(c.get("latency_source")) for c in cands})
    oracle = s.get("oracle") or {}
    out: list[Block] = [
        Heading("Search"),
        Para(
            f"Searcher {s.get('searcher', '-')}, channel multiple "
            f"{s.get('channel_multiple', '-')}, "
            f"{len(s['steps'])} prune steps ({s.get('redos', 0)} redone after an accuracy "
            f"collapse), {len(cands)} candidates evaluated (latency source: "
            f"{', '.join(sources) or '-'}; latency cache hits {oracle.get('hits', '-')}, misses "
            f"{oracle.get('misses', '-')}). Each step has a latency target (the last one the "
            "budget); every candidate is projected onto it by the latency table, the kept plan "
            "is measured and re-planned until it lands (measured plans). Candidate accuracy is "
            "the validation proxy (after BatchNorm re-estimation, before fine-tuning); the "
            "test split was not used."
            + (
                f" Step latencies (targets, LUT predictions, measurements) were taken on the "
                f"scale of the baseline measured at the start and are shown x"
                f"{r['latency_scale']['to_final']:.3f} on the report's scale."
                if r.get("latency_scale") and s.get("goal_kind", "latency") == "latency"
                else ""
            )
        ),
    ]
    if "latency_per_step" in figures:
        out.append(
            Figure(
                "latency_per_step",
                "Measured latency of the model kept at each "
                "step (interleaved with the baseline) and the LUT's prediction for "
                "it, against the budget; accuracy below.",
            )
        )
    rows = tuple(
        (
            str(st["step"]),
            str(st.get("candidates", "-")),
            fmt.ratio(st.get("best_reward")),
            str(st.get("chosen", "-")),
            fmt.ratio(st.get("chosen_reward")),
            fmt.pct(st.get("proxy_accuracy_before_ft")),
            fmt.pct(st.get("val_accuracy_after_ft")),
            fmt.ms(st.get("target")) if s.get("goal_kind", "latency") == "latency" else "-",
            fmt.ms(st.get("predicted_ms")),
            fmt.ms(st.get("latency_ms")),
            str(len(st.get("landing_tries") or ())) if "landing_tries" in st else "-",
            fmt.macs_m(st.get("macs")),
        )
        for st in s["steps"]
    )
    out.append(
        Table(
            (
                "step",
                "candidates",
                "best reward",
                "kept",
                "kept reward",
                "proxy acc.",
                "val acc. after FT",
                "target ms",
                "LUT ms",
                "measured ms",
                "measured plans",
                "MACs",
            ),
            rows,
            align="rrrl",
        )
    )
    pol = s.get("policy")
    if pol:
        out.append(
            Para(
                f"RL policy ({pol.get('searcher')}): {pol.get('meaning')}, "
                f"{pol.get('updates', 0)} updates over {len(pol['by_step']) - 1} steps."
            )
        )
        if "policy_per_step" in figures:
            out.append(
                Figure("policy_per_step", "The policy per group at the start and after each step.")
            )
    lut = r.get("lut")
    if lut and lut.get("prediction_error"):
        err = lut["prediction_error"]
        out.append(
            Para(
                f"Latency lookup table (channel multiple {lut.get('channel_multiple', '-')}): mean "
                f"absolute prediction error {fmt.pct(err.get('mape'))}, worst "
                f"{fmt.pct(err.get('max_abs_pct'))} over {err.get('n', 0)} steps "
                f"({lut.get('note', '')})."
            )
        )
    check = (lut or {}).get("self_check") or {}
    if check.get("n"):
        out.append(
            Para(
                f"The table's self-check on this host, at build time: held-out layer sizes "
                f"predicted with a median error of {check['median_abs_pct']:.1f}% and a worst "
                f"of {check['max_abs_pct']:.1f}% ({check['n']} points measured in that build)."
                + _align_note(lut)
            )
        )
    return out


def _align_note(lut: dict[str, Any] | None) -> str:
    align = (lut or {}).get("fast_path_align")
    if not align:
        return ""
    if align == 1:
        return " Every channel count ran the runtime's fast path here (no slow path)."
    return (
        f" Channel counts divisible by {align} ran the runtime's fast path here (read off "
        "this host's discovery curve); the table times the others' slower path apart."
    )


def _channels(r: dict[str, Any], figures: Container[str]) -> list[Block]:
    rows = r["channels"]
    out: list[Block] = [Heading("Channels per layer")]
    if "channels_per_layer" in figures:
        out.append(
            Figure(
                "channels_per_layer",
                "Output channels of every dependency group before and after pruning.",
            )
        )
    total_b = sum(c["before"] for c in rows)
    total_a = sum(c["after"] for c in rows)
    body = [
        (
            str(c["group"]),
            str(c.get("name") or "-"),
            str(c["before"]),
            str(c["after"]),
            fmt.pct(c["after"] / c["before"] if c["before"] else None),
            str(c.get("frozen") or ""),
        )
        for c in rows
    ]
    body.append(
        ("all", "", str(total_b), str(total_a), fmt.pct(total_a / total_b if total_b else None), "")
    )
    out.append(
        Table(
            ("group", "layer", "before", "after", "kept", "frozen because"),
            tuple(body),
            align="rlrrrl",
        )
    )
    return out


def _depth(r: dict[str, Any]) -> list[Block]:
    d = r.get("depth")
    if not d or not d.get("blocks"):
        return []
    dropped = d.get("dropped") or []
    start = d.get("start_latency_ms")
    summary = (
        f"{len(dropped)} of {len(d['blocks'])} droppable residual blocks replaced by their "
        f"shortcut before the channel search"
        + (f" ({fmt.ms(start)} ms measured without them)" if start is not None else "")
        + "; the channel table refers to the model without them. Each block count was "
        "completed by the channel knapsack at the budget, recovered by "
        f"{d.get('recovery_epochs', 0):.2g} KD epochs and scored by proxy accuracy; the best "
        "was kept."
    )
    stages = tuple(
        (
            st["stage"] or "(top)",
            str(len(st["kept"])),
            str(len(st["dropped"])),
            ", ".join(st["dropped"]) or "-",
        )
        for st in d.get("stages", [])
    )
    options = tuple(
        (
            str(o["blocks"]),
            fmt.ms(o.get("floor_ms")),
            "yes" if o.get("reachable") else "no",
            fmt.ms(o.get("predicted_ms")),
            fmt.pct(o.get("proxy_accuracy")),
        )
        for o in d.get("options", [])
    )
    return [
        Heading("Blocks (depth pruning)"),
        Para(summary),
        Table(("stage", "kept", "dropped", "dropped blocks"), stages, align="lrrl"),
        Table(
            ("blocks dropped", "floor ms", "reaches budget", "plan ms (LUT)", "proxy acc."),
            options,
            align="rrlrr",
        ),
    ]


def _precisions(r: dict[str, Any]) -> list[Block]:
    p = r.get("precisions")
    if not p:
        return []
    rows = tuple(
        (
            name.upper() + (" (shipped, judged)" if name == "int8" else ""),
            str(p[name]["onnx"]),
            fmt.ms(p[name]["baseline_latency_ms"]),
            fmt.ms(p[name]["latency_ms"]),
            fmt.pct(None if p[name]["top1"] is None else p[name]["top1"] / 100),
        )
        for name in ("int8", "fp32")
    )
    return [
        Heading("Precisions"),
        Para(
            f"The profile runs INT8 ({p['int8']['recipe']}): the search measured INT8 models "
            f"and the budget is judged on the INT8 export. INT8 runs "
            f"{fmt.speedup(p['int8_vs_fp32_speedup'])} FP32's speed (p50, interleaved); "
            + (f"top-1 on the {p['split']} split." if p.get("split") else "top-1 not measured.")
        ),
        Table(
            ("precision", "file", "baseline ms", "pruned ms", "pruned top-1"), rows, align="llrrr"
        ),
    ]


def _export(r: dict[str, Any]) -> list[Block]:
    exp = r.get("export") or {}
    if not exp:
        return []
    rows = tuple(
        (
            side,
            str(e.get("path", "-")),
            fmt.text(e.get("opset")),
            fmt.text(e.get("exporter")),
            fmt.text(e.get("input_shape")),
            fmt.sci(e.get("max_abs_diff")),
            fmt.size(e.get("size_bytes")),
            str(e.get("sha256") or "-")[:12],
        )
        for side, e in exp.items()
    )
    return [
        Heading("Export checks"),
        Para(
            "Each ONNX file passed the ONNX checker and was compared with the PyTorch "
            "model on the same input (max abs diff of the outputs)."
        ),
        Table(
            ("model", "file", "opset", "exporter", "input", "max abs diff", "size", "sha256"),
            rows,
            align="llrlrrrl",
        ),
    ]


def build(r: dict[str, Any], figures: Container[str]) -> Document:
    """The compress report's blocks; ``figures`` are the plot names that were drawn."""
    prof = r["profile"]["name"]
    model = (r["baseline"].get("model") or {}).get("name") or r["config"].get("model", {}).get(
        "name", "model"
    )
    data = r.get("data") or {}
    subtitle = (
        f"created {r.get('created', '-')} · edgeprune {r.get('edgeprune_version', '-')}"
        f" · data {data.get('name', '-')} ({data.get('train', '-')} train / "
        f"{data.get('val', '-')} val / {data.get('test', '-')} test images)"
    )
    blocks: list[Block] = [
        Para(_goal_text(r)),
        Heading("Results"),
        _results(r),
        Heading("Speedup: measured vs MACs"),
        _speedup(r),
    ]
    if "accuracy_vs_latency" in figures:
        blocks.append(
            Figure(
                "accuracy_vs_latency",
                "Validation accuracy vs latency of every "
                "evaluated candidate (LUT predictions, rescaled to the final measurement), "
                "the Pareto front, the budget, and the baseline and final models as measured "
                "at the end (after fine-tuning): one latency scale.",
            )
        )
    series = [
        (p, side, r[side]["latency"][p])
        for p in r["final"]["latency"]
        for side in ("baseline", "final")
        if p in r[side]["latency"]
    ]
    blocks += [Heading("Latency per profile"), latency_rows(series)]
    blocks += noise_note(series, r.get("environment") or {})
    if "latency_distribution" in figures:
        blocks.append(
            Figure(
                "latency_distribution",
                "Cumulative distribution of every timed "
                "iteration of the exported baseline and final ONNX models.",
            )
        )
    blocks += _precisions(r) + _search(r, figures) + _depth(r) + _channels(r, figures) + _export(r)
    settings = r["final"]["latency"][prof].get("settings") or {}
    blocks += [
        Heading("Environment"),
        kv_table(
            [
                *environment_pairs(r.get("environment") or {}, settings),
                ("torch threads (search)", fmt.text(r["config"].get("threads"))),
            ]
        ),
    ]
    timing = r.get("timing_s") or {}
    if timing:
        blocks += [
            Heading("Wall time"),
            kv_table([(k.replace("_", " "), fmt.seconds(v)) for k, v in timing.items()]),
        ]
    blocks += [
        Heading("Configuration"),
        kv_table([(k, fmt.text(v)) for k, v in flatten(r["config"])]),
    ]
    return Document(f"edgeprune compress: {model} on {prof}", subtitle, tuple(blocks))
