"""report.md rendered from the fixed compress fixture: numbers, rounding, plots."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeprune.report import compress_doc, load_report, markdown, render_run
from edgeprune.report.blocks import Table
from edgeprune.report.markdown import table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("accuracy_vs_latency", "latency_per_step", "channels_per_layer", "latency_distribution")


def _markdown_only(run_dir: Path) -> str:
    """The Markdown without drawing plots (fast): content checks that need no figures."""
    return markdown.render(compress_doc.build(load_report(run_dir), figures=()))


@pytest.fixture
def md(rendered_run: Path) -> str:
    return (rendered_run / "report.md").read_text(encoding="utf-8")


def test_headline_numbers_and_rounding(md: str) -> None:
    # Fixture: baseline p50 0.437977 ms, final 0.204233 ms; val 0.987654 -> 0.975309;
    # MACs 41,218,698 -> 13,456,789; budget 0.2184 ms.
    assert md.startswith("# edgeprune compress: resnet20 on cpu-ort-1t\n")
    assert (
        "Latency budget 0.218 ms on cpu-ort-1t: met, final latency 0.204 ms, baseline 0.438 ms "
        "(every latency in this report is on one scale: the final interleaved measurement, p50 "
        "of each model; in-run figures are rescaled to it)."
    ) in md
    assert "Measured speedup 2.14x for 3.06x fewer MACs." in md
    assert "Search stopped: goal met after 3 prune steps." in md
    for row in (
        "| p50 latency (ms) | 0.438 | 0.204 | 2.14x faster |",
        "| p90 latency (ms) | 0.451 | 0.210 | 2.15x faster |",
        "| p99 latency (ms) | 1.082 | 0.563 | 1.92x faster |",
        "| latency CoV | 22.83% | 23.92% |  |",
        "| val top-1 | 98.77% | 97.53% | -1.23 pp |",
        "| test top-1 | 98.11% | 97.21% | -0.89 pp |",
        "| MACs | 41.22M | 13.46M | 3.06x fewer |",
        "| params | 0.272M | 0.090M | 3.02x fewer |",
        "| ONNX file | 1.07 MiB | 371.6 KiB | 2.94x smaller |",
        "| measured (p50) | 2.14x |",
        "| measured p50 ratio | 2.14x |",
        "| median block ratio | 2.12x |",
        "| MACs ratio | 3.06x |",
    ):
        assert row in md, row


def test_per_profile_latency_table(md: str) -> None:
    assert (
        "| cpu-ort-1t | baseline | 61 | 0.418 | 0.438 | 0.451 | 0.461 | 1.082 | 0.460 | 22.83% |"
        in md
    )
    assert (
        "| cpu-ort-1t | final | 61 | 0.195 | 0.204 | 0.210 | 0.211 | 0.563 | 0.214 | 23.92% |" in md
    )


def test_search_trace(md: str) -> None:
    assert "3 prune steps (0 redone after an accuracy collapse), 18 candidates evaluated" in md
    assert "latency source: lut" in md
    assert (
        "| 1 | 6 | 0.9540 | rl-e0-s1 | 0.9540 | 97.98% | 98.98% | - | 0.320 | 0.326 | - | 27.47M |"
        in md
    )
    assert (
        "| 3 | 6 | 0.9769 | rl-e0-s0 | 0.9769 | 96.80% | 97.80% | - | 0.192 | 0.196 | - | 14.14M |"
        in md
    )
    assert "mean absolute prediction error 4.12%, worst 7.33% over 3 steps" in md


def test_channels_export_environment_config(md: str) -> None:
    assert "| 4 | layer2.0.conv1 | 32 | 16 | 50.00% |  |" in md
    assert "| 12 | fc | 10 | 10 | 100.00% | produces the model output (classifier) |" in md
    assert "| all |  | 458 | 270 | 58.95% |  |" in md
    assert "| final | model.onnx | 17 | torchscript | 1x3x32x32 | 1.9e-06 | 371.6 KiB |" in md
    assert "| cpu model | Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz |" in md
    assert "| onnxruntime | 1.31.1 |" in md
    assert "| intra op threads | 1 |" in md
    assert "| torch threads (search) | 2 |" in md
    assert "| search.reward.w | -0.07 |" in md
    assert "| total | 412.7 s |" in md


def test_plots_are_png_files_next_to_the_markdown(md: str, rendered_run: Path) -> None:
    for name in PLOTS:
        assert f"](plots/{name}.png)" in md
        png = (rendered_run / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 10_000


def test_optional_parts_missing(edited) -> None:  # type: ignore[no-untyped-def]
    def sparsity_goal_no_search(r):  # type: ignore[no-untyped-def]
        r["goal"].update(budget_ms=None, budget_met=None, speedup=None, sparsity=0.5)
        r["search"].update(steps=[], candidates=[])
        r["final"]["accuracy"]["test"] = None
        r["baseline"]["accuracy"]["test"] = None
        r["lut"] = None
        r.pop("export")

    d = edited("report.json", sparsity_goal_no_search)
    md = render_run(d)["report.md"].read_text(encoding="utf-8")  # with plots: none to draw
    assert (
        "Goal: sparsity 0.5; final latency 0.204 ms (final interleaved measurement, p50 of "
        "each model)." in md
    )
    assert "| test top-1 | - | - | - |" in md
    assert "accuracy_vs_latency.png" not in md and "latency_per_step.png" not in md
    assert "latency_distribution.png" in md
    assert "Export checks" not in md and "lookup table" not in md


def test_table_cells_are_escaped() -> None:
    t = Table(("a", "b"), (("x|y", "1"),), align="lr")
    assert table(t) == "| a | b |\n|:---|---:|\n| x\\|y | 1 |"
    with pytest.raises(ValueError, match="has 1 cells, expected 2"):
        Table(("a", "b"), (("x",),))


def test_noise_note_when_tails_are_heavy(edited) -> None:  # type: ignore[no-untyped-def]
    d = edited("report.json", lambda r: r["final"]["latency"]["cpu-ort-1t"].update(p90_ms=0.9))
    md = _markdown_only(d)
    assert "Noisy measurement: p90 is more than 1.5x p50 for final on cpu-ort-1t;" in md
    assert "(1-minute load average 1.04)" in md
