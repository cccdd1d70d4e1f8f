"""Benchmark reports: the fixed 3-model x 2-profile fixture, and a real measured run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from edgeprune.cli import main
from edgeprune.models.testing import TinyConvNet
from edgeprune.pipeline.export import export_onnx
from edgeprune.profiles import load_profile
from edgeprune.report import load_report, render_benchmark, summary_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _text(table) -> str:  # type: ignore[no-untyped-def]
    console = Console(width=160, record=True)
    console.print(table)
    return console.export_text()


def test_models_x_profiles_table(bench_dir: Path) -> None:
    paths = render_benchmark(bench_dir)
    assert set(paths) == {"benchmark.md", "benchmark.html"}
    md = paths["benchmark.md"].read_text(encoding="utf-8")
    assert md.startswith("# edgeprune benchmark: 3 models x 2 profiles\n")
    assert (
        "| model | cpu-ort-1t p50 ms | cpu-ort-1t p90 ms | cpu-ort-1t speedup "
        "| cpu-ort-2t p50 ms | cpu-ort-2t p90 ms | cpu-ort-2t speedup |"
    ) in md
    # Fixture p50/p90: 0.43894/0.454572, 0.206855/0.213798, 1.393071/1.451482 (1 thread).
    assert "| resnet20 | 0.439 | 0.455 | 1.00x | 0.253 | 0.261 | 1.00x |" in md
    assert "| resnet20_pruned | 0.207 | 0.214 | 2.12x | 0.119 | 0.124 | 2.12x |" in md
    assert "| resnet56 | 1.393 | 1.451 | 0.32x | 0.810 | 0.843 | 0.31x |" in md
    assert "the first model (resnet20)" in md
    for name in ("p50_by_profile", "latency_cdf"):
        assert f"](plots/{name}.png)" in md
        assert (bench_dir / "plots" / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    html = paths["benchmark.html"].read_text(encoding="utf-8")
    assert html.count('<img src="data:image/png;base64,') == 2
    assert "http://" not in html and "https://" not in html


def test_summary_tables(bench_dir: Path, rendered_run: Path) -> None:
    text = _text(summary_table(load_report(bench_dir)))
    assert "resnet20_pruned" in text and "cpu-ort-2t" in text
    assert "1.393" in text and "0.32x" in text
    text = _text(summary_table(load_report(rendered_run)))
    assert "0.438 ms" in text and "2.14x faster" in text and "98.77%" in text


def test_cli_report_renders_every_report_in_the_dir(
    compress_dir: Path, bench_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (compress_dir / "benchmark.json").write_bytes((bench_dir / "benchmark.json").read_bytes())
    assert main(["report", str(compress_dir)]) == 0
    printed = capsys.readouterr().out
    for name in ("report.md", "report.html", "benchmark.md", "benchmark.html"):
        assert (compress_dir / name).stat().st_size > 0
        assert str(compress_dir / name) in printed
    assert len(list((compress_dir / "plots").glob("*.png"))) == 6


PROFILE_YAML = """\
name: {name}
runtime: onnxruntime
input_shape: [3, 32, 32]
measurement:
  warmup_iters: 2
  warmup_ms: 0
  min_iters: 8
  min_duration_ms: 0
  blocks: 2
onnxruntime:
  intra_op_threads: {threads}
"""


def test_real_benchmark_through_the_cli(tmp_path: Path) -> None:
    """3 real ONNX models x 2 profiles measured by onnxruntime, reported by `benchmark`."""
    profiles = []
    for threads in (1, 2):
        p = tmp_path / f"tiny-{threads}t.yaml"
        p.write_text(PROFILE_YAML.format(name=f"tiny-{threads}t", threads=threads), "utf-8")
        profiles.append(p)
    prof = load_profile(profiles[0])
    torch.manual_seed(0)
    models = []
    for width in (4, 8, 16):
        out = tmp_path / f"tiny{width}.onnx"
        export_onnx(TinyConvNet(width=width), prof, out)
        models.append(out)
    out_dir = tmp_path / "bench"
    argv = ["benchmark", *map(str, models), "--profile", str(profiles[0]), "--profile",
            str(profiles[1]), "--out", str(out_dir)]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads((out_dir / "benchmark.json").read_text(encoding="utf-8"))
    md = (out_dir / "benchmark.md").read_text(encoding="utf-8")
    for e in doc["entries"]:
        assert e["model"] in md
    first = doc["entries"][0]
    row = f"| tiny4 | {first['latency']['p50_ms']:.3f} | {first['latency']['p90_ms']:.3f} | 1.00x |"
    assert row in md
    assert (out_dir / "benchmark.html").read_text(encoding="utf-8").count("data:image/png") == 2
