"""A winner over seeds is called only beyond the seeds' spread; otherwise it is a tie."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from peer_results import seed_summary, winners


def _rows(method: str, accs: list[float], meets: bool = True) -> list[dict]:
    return [
        {"method": method, "seed": s, "budget_fraction": 0.35, "test_top1": a,
         "meets_budget": meets}
        for s, a in enumerate(accs)
    ]  # fmt: skip


def test_a_margin_beyond_the_spread_is_a_win() -> None:
    rows = _rows("edgeprune", [0.80, 0.81, 0.80]) + _rows("knapsack", [0.78, 0.78, 0.785])
    [w] = winners(rows, [0.35])
    assert w["winner"] == "edgeprune" and w["called"] is True
    assert w["margin_pp"] > w["spread_pp"]


def test_a_margin_inside_the_spread_is_a_tie() -> None:
    rows = _rows("edgeprune", [0.80, 0.77, 0.79]) + _rows("knapsack", [0.785, 0.78, 0.78])
    [w] = winners(rows, [0.35])
    assert w["called"] is False


def test_one_seed_is_no_call_and_a_miss_is_not_eligible() -> None:
    rows = _rows("edgeprune", [0.80]) + _rows("knapsack", [0.70])
    [w] = winners(rows, [0.35])
    assert w["winner"] == "edgeprune" and w["called"] is None
    rows = _rows("edgeprune", [0.90, 0.91], meets=True) + _rows("uniform", [0.95, 0.96], False)
    rows[-1]["meets_budget"] = True  # one of two seeds met it: not every run did
    [w] = winners(rows, [0.35])
    assert w["winner"] == "edgeprune" and w["meeting"] == ["edgeprune"]
    summary = {s["method"]: s for s in seed_summary(rows, [0.35])}
    assert summary["uniform"]["met"] == 1 and summary["uniform"]["n"] == 2
