"""INT8 recipes on a CPU profile: speed against FP32 (interleaved) and top-1, per recipe.

Exports the shared CIFAR-10 resnet20 (``../shared/baselines/resnet20-cifar10.pt``) to FP32
ONNX, quantizes it with every recipe :func:`edgeprune.calibration.int8.candidate_recipes`
offers for the profile (256 calibration images from the training split), and measures each
INT8 model against FP32 in interleaved blocks; the recipe choice is made as ``edgeprune
export --int8`` makes it (fastest within 1 point of FP32 on the validation split), and the
test split is then scored for every recipe.

Writes ``bench/results/int8_<model>_<profile>.json`` (source of truth) and ``.md``.

Usage: ``python bench/bench_int8.py [--weights W] [--data cifar10-jpg.tar.gz]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from edgeprune._io import atomic_write_json, atomic_write_text
from edgeprune.calibration.int8 import RECIPES, choose_recipe, compare_int8, export_int8
from edgeprune.data import load_data
from edgeprune.models import load_model
from edgeprune.pipeline.export import export_onnx
from edgeprune.profiles import load_profile
from edgeprune.targets.timing import host_info

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SHARED = REPO.parent / "shared"


def render(res: dict[str, Any]) -> str:
    env = res["environment"]
    lines = [
        f"# INT8 recipes: {res['model']} on `{res['profile']}`",
        "",
        f"{env['cpu_model']} ({env['logical_cores']} logical cores, 1-min load "
        f"{env.get('load_avg_1m')}), onnxruntime {env['onnxruntime']}. Calibration: "
        f"{res['calib_samples']} training images. Each recipe's model measured against FP32 in "
        f"{res['blocks']} interleaved blocks; top-1 on the validation split (what the choice "
        "uses) and on the test split. Created " + res["created"] + ".",
        "",
        f"**Chosen: {res['choice']['chosen'] or 'none (ship FP32)'}**: {res['choice']['why']}.",
        "",
        "| recipe | speedup vs FP32 (p50) | p50 FP32 ms | p50 INT8 ms | val top-1 FP32 | "
        "val top-1 INT8 | test top-1 FP32 | test top-1 INT8 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["recipes"]:
        t = res["test"].get(r["name"], {})
        lines.append(
            f"| `{r['name']}` | {r['speedup_p50']:.2f}x | {r['p50_fp32_ms']:.3f} | "
            f"{r['p50_int8_ms']:.3f} | {r['top1_fp32']:.2f}% | {r['top1_int8']:.2f}% | "
            f"{t.get('top1_fp32', float('nan')):.2f}% | {t.get('top1_int8', float('nan')):.2f}% |"
        )
    lines += ["", *(f"- `{r['name']}`: {r['why']}" for r in res["recipes"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--weights", default=str(SHARED / "baselines" / "resnet20-cifar10.pt"))
    p.add_argument("--data", default=str(SHARED / "data" / "cifar10-jpg.tar.gz"))
    p.add_argument("--profile", default="cpu-ort-1t")
    p.add_argument("--calib-samples", type=int, default=256)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    profile = load_profile(args.profile)
    data = load_data(args.data, val_fraction=0.1, seed=0)
    model = load_model(args.model, data.num_classes, args.weights)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, profile, Path(tmp) / "model.onnx").path
        choice = choose_recipe(
            fp32, Path(tmp) / "model.int8.onnx", data, profile, n_samples=args.calib_samples
        )
        test = {}
        for r in choice["recipes"]:
            q = export_int8(fp32, Path(tmp) / f"{r['name']}.onnx", data,
                            n_samples=args.calib_samples, recipe=RECIPES[r["name"]])  # fmt: skip
            cmp = compare_int8(fp32, q, data, profile, split="test")
            test[r["name"]] = {k: cmp[k] for k in ("top1_fp32", "top1_int8", "speedup_p50")}
            line = f"{r['name']}: val {r['speedup_p50']:.2f}x, test re-measure "
            print(line + f"{cmp['speedup_p50']:.2f}x, top-1 {cmp['top1_int8']:.2f}%", flush=True)
    res = {
        "kind": "bench-int8",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": host_info(),
        "model": args.model,
        "weights": args.weights,
        "profile": profile.name,
        "blocks": profile.measurement.blocks,
        "calib_samples": args.calib_samples,
        "choice": {k: choice[k] for k in ("chosen", "why")},
        "recipes": choice["recipes"],
        "test": test,
        "wall_s": time.perf_counter() - t0,
    }
    stem = f"int8_{args.model}_{profile.name}"
    atomic_write_json(args.out / f"{stem}.json", res)
    atomic_write_text(args.out / f"{stem}.md", render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
