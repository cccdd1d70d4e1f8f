"""Peak memory of the data path at 224 px: decoded in memory vs streamed, by dataset size.

Generates ImageFolder sets of N JPEG images (256x256 noise with a coloured square, 3
classes; seeded), then for each set and loader runs, in a fresh subprocess: open the data
at 224 px (``data.loader`` memory or stream, 2 DataLoader workers), draw the search's
in-memory subsets (1,000 validation images for the proxy, 4 BatchNorm batches), and run
one pass over every training batch (batch 64, decode + augmentation + normalisation; no
model, so the figure is the data path's). It records the peak RSS of the main process and
of its worker processes (``getrusage``) and the seconds per pass.

Writes ``bench/results/streaming_224.json`` (source of truth) and ``.md``.

Usage: ``python bench/bench_streaming.py [--sizes 512 2048 8192]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CLASSES = ("red", "green", "blue")


def make_folder(root: Path, n: int, seed: int = 0) -> Path:
    """``root/train/<class>/*.jpg`` (n images) + ``root/test/<class>/`` (n // 10)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("test", max(n // 10, 3))):
        for i in range(count):
            label = i % 3
            img = rng.integers(0, 110, (256, 256, 3), dtype=np.uint8)
            y, x, s = rng.integers(0, 128), rng.integers(0, 128), rng.integers(64, 128)
            img[y : y + s, x : x + s, label] = 230
            d = root / split / CLASSES[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i:06d}.jpg", quality=90)
    return root


CHILD = r"""
import json, resource, sys, time, torch
from pathlib import Path
from edgeprune.data import open_data, stratified_draw
torch.set_num_threads(1)
root, loader, cache = sys.argv[1], sys.argv[2], Path(sys.argv[3])
t0 = time.perf_counter()
data = open_data(root, image_size=224, loader=loader, workers=2, cache_dir=cache)
opened = time.perf_counter() - t0
val = data.take("val", stratified_draw(data.val_y, 1000, 2))
bn = data.take("train", stratified_draw(data.train_y, 256, 0))
t1 = time.perf_counter()
n = 0
if loader == "stream":
    gen = torch.Generator().manual_seed(0)
    it = data.batches("train", 64, shuffle=True, augment=True, generator=gen)
else:
    from edgeprune.data import iterate_batches
    it = iterate_batches(data.train_x, data.train_y, 64, shuffle=True, augment=True,
                         generator=torch.Generator().manual_seed(0), mean=data.mean, std=data.std)
for xb, yb in it:
    n += int(yb.shape[0])
epoch = time.perf_counter() - t1
print(json.dumps({
    "open_s": opened, "epoch_s": epoch, "images_seen": n, "loader": type(data).__name__,
    "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "peak_rss_workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
}))
"""


def run_one(root: Path, loader: str, cache: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), loader, str(cache)],
        capture_output=True,
        text=True,
        check=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def render(res: dict[str, Any]) -> str:
    env = res["environment"]
    lines = [
        "# Data path memory at 224 px: in memory vs streamed",
        "",
        f"{env['cpu_model']} ({env['logical_cores']} logical cores), Python {env['python']}, "
        f"torch {env['torch']}. Created {res['created']}. Each row is a fresh process: open "
        "the set at 224 px, draw the proxy's 1,000 validation images and 256 BatchNorm "
        "images into memory, then one pass over every training batch (64, augmented). No "
        "model: the figures are the data path's. Peak RSS by `getrusage` (workers: the "
        "largest of the 2 DataLoader worker processes).",
        "",
        "| train images | decoded size MB | loader | peak RSS main MB | peak RSS worker MB | "
        "open s | pass s |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['n']} | {r['decoded_mb']:.0f} | {r['loader']} | {r['peak_rss_main_mb']:.0f} | "
            f"{r['peak_rss_workers_mb']:.0f} | {r['open_s']:.1f} | {r['epoch_s']:.1f} |"
        )
    lines += ["", res["summary"], ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 8192])
    args = ap.parse_args()
    from edgeprune._io import atomic_write_json, atomic_write_text
    from edgeprune.targets.timing import host_info

    rows = []
    with tempfile.TemporaryDirectory(prefix="ep-stream-") as tmp:
        for n in args.sizes:
            root = make_folder(Path(tmp) / f"set{n}", n)
            for loader in ("memory", "stream"):
                r = run_one(root, loader, Path(tmp) / f"cache-{n}-{loader}")
                r.update(n=n, decoded_mb=n * 0.9 * 3 * 224 * 224 / 2**20, loader=loader)
                rows.append(r)
                print(json.dumps(r), flush=True)
    mem = [r for r in rows if r["loader"] == "memory"]
    st = [r for r in rows if r["loader"] == "stream"]
    summary = (
        f"From {rows[0]['n']} to {rows[-1]['n']} training images, the in-memory path's peak "
        f"RSS went {mem[0]['peak_rss_main_mb']:.0f} -> {mem[-1]['peak_rss_main_mb']:.0f} MB; "
        f"the streamed path's {st[0]['peak_rss_main_mb']:.0f} -> "
        f"{st[-1]['peak_rss_main_mb']:.0f} MB (main) and {st[0]['peak_rss_workers_mb']:.0f}"
        f" -> {st[-1]['peak_rss_workers_mb']:.0f} MB (a worker)."
    )
    res = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": host_info(),
        "rows": rows,
        "summary": summary,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "streaming_224.json", res)
    atomic_write_text(RESULTS / "streaming_224.md", render(res))
    print(summary)


if __name__ == "__main__":
    main()
