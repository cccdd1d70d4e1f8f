"""Benchmark the per-layer latency LUT against real measurements (CIFAR ResNet, ORT CPU).

Builds the LUT from scratch (channel-multiple discovery included) in a fresh cache, then
measures the base model and random per-layer-width variants of it for real, each
interleaved with the base (A B A B ...), and reports the LUT's prediction error before and
after calibration. Variants come in three kinds: widths on the discovered multiple (what
the search produces), multiples of 4 off the multiple (tests the staircase rounding), and
arbitrary widths (the slow kernel path the LUT does not model).

Writes ``bench/results/lut_<model>.json`` (source of truth) and ``.md`` rendered from it.

Usage: ``python bench/bench_lut.py [--model resnet20] [--profile cpu-ort-1t] [--variants 12]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune._io import atomic_write_json, atomic_write_text
from edgeprune.latency.lut import LatencyLUT
from edgeprune.latency.oracle import LatencyOracle
from edgeprune.models import create_model
from edgeprune.pipeline.export import export_onnx
from edgeprune.pipeline.pruning.groups import GroupSet, build_groups
from edgeprune.pipeline.pruning.prune import apply_removed
from edgeprune.profiles import load_profile
from edgeprune.targets.timing import host_info

RESULTS = Path(__file__).parent / "results"
KINDS = ("on-multiple", "multiple-of-4", "any")
CIFAR_RESNETS = ("resnet20", "resnet56")


def resize_resnet_(model: nn.Module, stages: list[int], inner: list[list[int]]) -> nn.Module:
    """Rebuild a CifarResNet's convs/BNs/fc with the given widths (fresh weights, in place).

    ``stages[i]`` is the width of stage i's residual stream (stem output, every block's conv2
    and shortcut output); ``inner[i][j]`` the width between conv1 and conv2 of block j.
    """
    model.conv1 = nn.Conv2d(3, stages[0], 3, 1, 1, bias=False)
    model.bn1 = nn.BatchNorm2d(stages[0])
    prev = stages[0]
    for i, layer in enumerate((model.layer1, model.layer2, model.layer3)):
        for j, block in enumerate(layer):
            w, s = inner[i][j], block.conv1.stride
            block.conv1 = nn.Conv2d(prev, w, 3, s, 1, bias=False)
            block.bn1 = nn.BatchNorm2d(w)
            block.conv2 = nn.Conv2d(w, stages[i], 3, 1, 1, bias=False)
            block.bn2 = nn.BatchNorm2d(stages[i])
            if isinstance(block.shortcut, nn.Sequential):
                stride = block.shortcut[0].stride
                block.shortcut[0] = nn.Conv2d(prev, stages[i], 1, stride, bias=False)
                block.shortcut[1] = nn.BatchNorm2d(stages[i])
            prev = stages[i]
    model.fc = nn.Linear(prev, model.fc.out_features)
    return model.eval()


def _width(rng: random.Random, base: int, kind: str, multiple: int) -> int:
    lo = max(1, base // 4)
    if kind == "on-multiple":
        return rng.choice(range(multiple, base + 1, multiple)) if base >= multiple else base
    if kind == "multiple-of-4":
        options = [c for c in range(4, base + 1, 4) if c % multiple or c == base]
        return rng.choice([c for c in options if c >= lo] or options)
    return rng.randint(lo, base)


def variants(model_name: str, n: int, multiple: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    base = create_model(model_name)
    blocks = len(base.layer1)
    out = []
    for k in range(n):
        kind = KINDS[0] if k < n // 2 else KINDS[1] if k < 3 * n // 4 else KINDS[2]
        stages = [_width(rng, b, kind, multiple) for b in (16, 32, 64)]
        inner = [[_width(rng, b, kind, multiple) for _ in range(blocks)] for b in (16, 32, 64)]
        out.append({"name": f"v{k:02d}", "kind": kind, "stages": stages, "inner": inner})
    return out


def group_variants(
    base: nn.Module, groups: GroupSet, n: int, multiple: int, seed: int
) -> list[dict[str, Any]]:
    """Random widths per prunable channel group (any model): what the search's plans are."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        kind = KINDS[0] if k < n // 2 else KINDS[1] if k < 3 * n // 4 else KINDS[2]
        keep = {g.id: _width(rng, g.width, kind, multiple) for g in groups.prunable}
        out.append({"name": f"v{k:02d}", "kind": kind, "stages": None, "keep": keep})
    return out


def _variant_model(model_name: str, base: nn.Module, groups: Any, spec: dict) -> nn.Module:
    if spec.get("keep") is not None:
        removed = {g: tuple(range(groups[g].width - k)) for g, k in spec["keep"].items()}
        return apply_removed(base, groups, {g: r for g, r in removed.items() if r}, verify=False)
    if spec["stages"] is not None:
        return resize_resnet_(create_model(model_name), spec["stages"], spec["inner"])
    return base


def run(model_name: str, profile_name: str, n_variants: int, seed: int) -> dict:
    torch.manual_seed(0)
    profile = load_profile(profile_name)
    base = create_model(model_name).eval()
    load_start = host_info()["load_avg_1m"]
    with tempfile.TemporaryDirectory() as tmp:
        lut = LatencyLUT.build(base, profile, cache_dir=Path(tmp) / "lut")
        t0 = time.perf_counter()
        rebuilt = LatencyLUT.build(base, profile, cache_dir=Path(tmp) / "lut")
        rebuild_s = time.perf_counter() - t0
        assert rebuilt.points_measured == 0
        groups = None
        if model_name in CIFAR_RESNETS:
            specs = variants(model_name, n_variants, lut.multiple, seed)
        else:  # any other model: random widths per channel group, cut by the pruning engine
            groups = build_groups(base, torch.zeros(1, *profile.input_shape))
            specs = group_variants(base, groups, n_variants, lut.multiple, seed)
        oracle = LatencyOracle(
            profile, Path(tmp) / "oracle.jsonl", workdir=Path(tmp) / "onnx", export_fn=export_onnx
        )
        rows = []
        for spec in [{"name": "base", "kind": "base", "stages": None, "inner": None}, *specs]:
            model = _variant_model(model_name, base, groups, spec)
            cmp = oracle.measure_vs_baseline(model, base)
            t0 = time.perf_counter()
            raw_ms = lut.predict_raw_ms(model)
            predict_ms = (time.perf_counter() - t0) * 1e3
            rows.append(
                {
                    **spec,
                    "model": model,
                    "measured_median_ms": cmp.candidate.median_ms,
                    "base_median_ms": cmp.baseline.median_ms,
                    "ratio": cmp.ratio,
                    "cov": cmp.candidate.cov,
                    "lut_raw_ms": raw_ms,
                    "predict_call_ms": predict_ms,
                }
            )
    # "Measured" = the base's median over all comparisons x the interleaved ratio: drifts of
    # the shared machine's load cancel in the ratio.
    base_ref = statistics.median(r["base_median_ms"] for r in rows)
    for r in rows:
        r["measured_ms"] = base_ref * r["ratio"]

    def samples(sel: list[dict]) -> list[tuple[nn.Module, float]]:
        return [(r["model"], r["measured_ms"]) for r in sel]

    # Calibration uses candidates on the multiple (what the search produces and measures):
    # leave-one-out over them, and the fit on all of them for the off-multiple kinds.
    on_mult = [r for r in rows if r["kind"] in ("base", "on-multiple")]
    cal_all = lut.calibrate(samples(on_mult))
    for r in rows:
        fit = cal_all
        if r in on_mult:
            fit = lut.calibrate(samples([o for o in on_mult if o is not r]))
        r["lut_cal_ms"] = fit.predict_ms(r["model"])
    errors: dict[str, Any] = {}
    for name, sel in [("all", rows), ("base+on-multiple", on_mult)] + [
        (k, [r for r in rows if r["kind"] == k]) for k in KINDS[1:]
    ]:
        errors[name] = {
            "uncalibrated": lut.prediction_error(samples(sel)),
            "calibrated": _errors([(r["lut_cal_ms"], r["measured_ms"]) for r in sel]),
        }
    for r in rows:
        r.pop("model")
    return {
        "model": model_name,
        "profile": profile_name,
        "host": host_info(),
        "load_avg_1m_at_start": load_start,
        "lut": {
            "build_s": lut.build_s,
            "rebuild_from_cache_s": rebuild_s,
            "points_measured": lut.points_measured,
            "multiple": lut.multiple,
            "overhead_us": lut.overhead_us,
            "tables": len(lut.tables),
            "curve": lut.curve.to_dict() if lut.curve else None,
        },
        "calibration": {
            "fitted_on": [r["name"] for r in on_mult],
            "scale": cal_all.scale,
            "offset_ms": cal_all.offset_ms,
            "method": "leave-one-out on base+on-multiple; full fit for the other kinds",
        },
        "base_ref_ms": base_ref,
        "errors": errors,
        "variants": rows,
        "settings": {"variants": n_variants, "seed": seed, "blocks": profile.measurement.blocks},
    }


def _errors(pairs: list[tuple[float, float]]) -> dict[str, float]:
    errs = [100.0 * (p - m) / m for p, m in pairs]
    return {
        "median_abs_pct": statistics.median(abs(e) for e in errs),
        "mape": statistics.fmean(abs(e) for e in errs),
        "max_abs_pct": max(abs(e) for e in errs),
        "mean_pct": statistics.fmean(errs),
        "n": len(errs),
    }


def _pct(d: dict | None) -> str:
    if not d or not d.get("n"):
        return "-"
    med = d.get("median_abs_pct")
    head = f"{med:.1f} / " if med is not None else "- / "
    return head + f"{d['mape']:.1f} / {d['max_abs_pct']:.1f} / {d['mean_pct']:+.1f} (n={d['n']})"


def _widths(r: dict, model: str) -> str:
    if r.get("keep"):
        return f"{sum(r['keep'].values())} channels in {len(r['keep'])} groups"
    if r["stages"]:
        return str(r["stages"])
    return "[16, 32, 64]" if model in CIFAR_RESNETS else "unpruned"


def render(res: dict) -> str:
    lut, host, curve = res["lut"], res["host"], res["lut"]["curve"]
    lines = [
        f"# Latency LUT benchmark: {res['model']} on {res['profile']}",
        "",
        f"{host['cpu_model']}, {host['logical_cores']} cores, onnxruntime {host['onnxruntime']},"
        f" load average {res['load_avg_1m_at_start']:.1f} at start, "
        f"{host['load_avg_1m']:.1f} at end (shared machine).",
        "",
        f"- LUT build from an empty cache: {lut['build_s']:.1f} s ({lut['points_measured']} "
        f"timed points incl. discovery, {lut['tables']} layer configurations); "
        f"rebuild from the disk cache: {lut['rebuild_from_cache_s']:.2f} s",
        f"- discovered channel multiple: **{lut['multiple']}**; per-call overhead "
        f"{lut['overhead_us']:.1f} us",
        f"- calibration on {', '.join(res['calibration']['fitted_on'])} "
        f"({res['calibration']['method']}); full fit: scale {res['calibration']['scale']:.3f}, "
        f"offset {res['calibration']['offset_ms']:.3f} ms",
        f"- measured = base median ({res['base_ref_ms']:.3f} ms) x interleaved ratio "
        f"({res['settings']['blocks']} blocks per comparison)",
        "",
        "## Prediction error, % (median |err| / MAPE / max |err| / mean signed)",
        "",
        "| subset | uncalibrated | calibrated |",
        "|---|---|---|",
    ]
    for name, e in res["errors"].items():
        lines.append(f"| {name} | {_pct(e.get('uncalibrated'))} | {_pct(e.get('calibrated'))} |")
    lines += [
        "",
        "## Candidates",
        "",
        "| name | kind | stage widths | measured ms | LUT raw ms | LUT calibrated ms |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in res["variants"]:
        lines.append(
            f"| {r['name']} | {r['kind']} | {_widths(r, res['model'])} | "
            f"{r['measured_ms']:.3f} | {r['lut_raw_ms']:.3f} | {r['lut_cal_ms']:.3f} |"
        )
    if curve:
        lines += [
            "",
            f"## Discovery curve (3x3 conv, {curve['probe']['spatial']}x"
            f"{curve['probe']['spatial']}, c_in = c_out = C)",
            "",
            "scores (rounding cost as a fraction of a step; <= 0.25 is a stair): "
            + ", ".join(f"m={k}: {v:.2f}" for k, v in curve["scores"].items()),
            "Latency in us of C = row + column:",
            "",
            "| C | " + " | ".join(f"+{i}" for i in range(16)) + " |",
            "|---|" + "---:|" * 16,
        ]
        for start in range(0, len(curve["channels"]), 16):
            cs = curve["channels"][start : start + 16]
            us = curve["latency_us"][start : start + 16]
            lines.append(f"| {cs[0]} | " + " | ".join(f"{u:.1f}" for u in us) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        default="resnet20",
        help="a zoo model; CIFAR ResNets vary stage widths, others random group widths",
    )
    ap.add_argument("--profile", default="cpu-ort-1t")
    ap.add_argument("--variants", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    res = run(args.model, args.profile, args.variants, args.seed)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"lut_{args.model}" + ("" if args.profile == "cpu-ort-1t" else f"_{args.profile}")
    atomic_write_json(RESULTS / f"{stem}.json", res)
    atomic_write_text(RESULTS / f"{stem}.md", render(res))
    print(render(res))


if __name__ == "__main__":
    main()
