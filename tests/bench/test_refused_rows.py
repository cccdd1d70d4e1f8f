"""A method refused before pruning becomes a row with its floor, not a crash of the tables."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from peer_methods import refused_floor_ms
from peer_results import refused_row, render_markdown, winners

MESSAGE = (
    "the budget 0.190 ms is below the fastest this model gets on cpu-ort-1t: 0.231 ms "
    "predicted with every channel group at its narrowest. Options: a looser budget"
)


def test_floor_is_read_from_the_refusal():
    assert refused_floor_ms(MESSAGE) == 0.231
    deeper = MESSAGE.replace("narrowest.", "narrowest and 0.120 ms with the 7 droppable ...")
    assert refused_floor_ms(deeper) == 0.120
    assert refused_floor_ms("something else") is None


def test_refused_row_renders_and_never_wins():
    base = {"p50_ms": 0.64, "p50_ms_at_start": 0.66}
    run = SimpleNamespace(
        method="knapsack-width", fraction=0.3, status="refused", run_dir=Path("x"),
        report={"refused": MESSAGE, "floor_ms": 0.231},
    )  # fmt: skip
    row = refused_row(run, base)
    assert row["floor_fraction_predicted"] == 0.231 / 0.66 and not row["meets_budget"]
    assert winners([row], [0.3]) == [{"budget_fraction": 0.3, "meeting": [], "winner": None}]
    res = {
        "environment": {"cpu_model": "cpu", "logical_cores": 2, "onnxruntime": "1", "torch": "2",
                        "edgeprune": "0"},
        "baseline": {"test_top1": 0.86, "p50_ms": 0.64, "p90_ms": 0.7, "macs": 4e7},
        "settings": {"model": "resnet20", "baseline_epochs": 1, "step_epochs": 0.25,
                     "total_epochs": 2, "steps": 3},
        "smoke": False, "profile": {"name": "cpu-ort-1t"}, "created": "now",
        "data": {"train": 1, "val": 1, "test": 1},
        "final_benchmark": {"repeats": 3, "blocks": 5},
        "rows": [row], "winners": winners([row], [0.3]), "timing_s": {},
    }  # fmt: skip
    md = render_markdown(res, "plot.png")
    assert "| knapsack-width | refused |" in md and "floor 35% of the baseline" in md
