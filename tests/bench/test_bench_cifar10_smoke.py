"""The CIFAR-10 peer benchmark's ``--smoke`` mode: the pipeline end to end, not its numbers.

Runs ``python bench/bench_cifar10.py --smoke`` into a temporary folder (tiny CIFAR subset,
1 epoch, 1-2 big prune steps, tiny measurement loop), checks the results JSON, the
Markdown and the plot, then runs it again to check that every run comes from the cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "bench_cifar10.py"
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
METHODS = {
    "edgeprune",
    "edgeprune-width",
    "knapsack",
    "knapsack-width",
    "rl-flops",
    "uniform",
    "magnitude",
    "magnitude-rounded",
}
BUDGETS = {0.5, 0.35}


def _smoke(out: Path, cache: Path, *extra: str) -> tuple[dict, float]:
    start = time.perf_counter()  # reported, never asserted: a loaded CI box is slow
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--cache", str(cache)]
    proc = subprocess.run(
        [*cmd, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "cifar10_resnet20.json").read_text()), time.perf_counter() - start


def _check_row(row: dict, base: dict, res: dict) -> None:
    name = f"{row['method']}@{row['budget_fraction']}"
    assert 0.0 <= row["test_top1"] <= 1.0, name
    assert 0.0 < row["p50_ms"] <= row["p90_ms"], name
    assert 0 < row["macs"] < base["macs"], name
    assert row["macs_ratio"] == pytest.approx(base["macs"] / row["macs"]), name
    assert row["speedup_measured"] > 0, name
    # judged by the decision statistic, the rule the searches were held to
    assert row["meets_budget"] == (row["speedup_by_statistic"] >= 1 / row["budget_fraction"]), name
    assert row["budget_ms"] == pytest.approx(row["budget_fraction"] * base["p50_ms"]), name
    assert row["search_s"] >= 0 and row["finetune_s"] >= 0 and row["run_s"] > 0, name
    st = res["settings"]
    assert row["kd_epochs"] == pytest.approx(st["total_epochs"]), name  # one KD budget for all
    assert len(row["p50_ms_repeats"]) == st["repeats"], name
    assert row["round_to_multiple"] is (row["method"] != "magnitude"), name


@pytest.mark.slow
@pytest.mark.timeout(900)  # two benchmark subprocesses of up to 300 s each
def test_smoke_writes_one_row_per_method_and_budget_then_reuses_runs(tmp_path):
    if not ARCHIVE.is_file():
        pytest.skip(f"needs the CIFAR-10 archive at {ARCHIVE}")
    out, cache = tmp_path / "out", tmp_path / "cache"
    res, _ = _smoke(out, cache)

    assert res["smoke"] is True and res["kind"] == "bench-cifar10"
    pairs = [(r["method"], r["budget_fraction"]) for r in res["rows"]]
    assert sorted(pairs) == sorted((m, b) for m in METHODS for b in BUDGETS)
    base = res["baseline"]
    assert 0.0 <= base["test_top1"] <= 1.0 and base["p50_ms"] > 0 and not base["cached"]
    for row in res["rows"]:
        _check_row(row, base, res)
        assert row["status"] == "ran"
    # One stopping rule for all: every method is given the same measured speedup goal.
    for row in res["rows"]:
        assert row["goal"] == {"speedup": pytest.approx(1 / row["budget_fraction"]),
                               "flops_ratio": None}, row["method"]  # fmt: skip
    assert {w["budget_fraction"] for w in res["winners"]} == BUDGETS
    env = res["environment"]
    for key in ("cpu_model", "onnxruntime", "torch", "torch_pruning", "edgeprune"):
        assert env[key], key
    assert res["timing_s"]["total"] > 0 and res["final_benchmark"]["repeats"] == 5

    md = (out / "cifar10_resnet20.md").read_text()
    assert md.count("\n| 50% (") == len(METHODS) and md.count("\n| 35% (") == len(METHODS)
    assert "cifar10_resnet20_accuracy_vs_latency.png" in md
    png = (out / "cifar10_resnet20_accuracy_vs_latency.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

    # A rerun trains nothing and runs no method again; it only re-measures.
    again, _ = _smoke(tmp_path / "out2", cache)
    assert again["baseline"]["cached"]
    assert {r["status"] for r in again["rows"]} == {"cached"}
    assert [r["test_top1"] for r in again["rows"]] == [r["test_top1"] for r in res["rows"]]


@pytest.mark.slow
@pytest.mark.timeout(900)  # two benchmark subprocesses of up to 300 s each
def test_smoke_with_seeds_repeats_each_method_and_reports_the_spread(tmp_path):
    if not ARCHIVE.is_file():
        pytest.skip(f"needs the CIFAR-10 archive at {ARCHIVE}")
    args = ("--seeds", "3", "4", "--methods", "uniform", "--budgets", "0.5", "--one-seed", "0.35")
    res, _ = _smoke(tmp_path / "out", tmp_path / "cache", *args)
    # 0.35 is an extra budget run with the first seed only.
    assert [(r["method"], r["budget_fraction"], r["seed"]) for r in res["rows"]] == [
        ("uniform", 0.5, 3),
        ("uniform", 0.35, 3),
        ("uniform", 0.5, 4),
    ]
    assert {Path(r["run_dir"]).name for r in res["rows"]} == {
        "uniform-b50-s3",
        "uniform-b35-s3",
        "uniform-b50-s4",
    }
    assert res["one_seed_budgets"] == [0.35]
    # Every row records the code that made it, and the table says so.
    code = res["environment"]["code_version"]
    assert {r["made_by"]["code_version"] for r in res["rows"]} == {code}
    md = (tmp_path / "out" / "cifar10_resnet20.md").read_text()
    assert "## Over seeds" in md and "| 50% | uniform | 2 |" in md and "| 35% | uniform | 1 |" in md
    assert f"code {code} (3 rows)" in md
    # --cached-only assembles a table from the cache and starts no run.
    again, _ = _smoke(
        tmp_path / "out2",
        tmp_path / "cache",
        *args[:4],
        "uniform",
        "magnitude",
        *args[5:],
        "--cached-only",
    )
    assert again["cached_only"] is True
    assert [(r["method"], r["budget_fraction"], r["seed"]) for r in again["rows"]] == [
        ("uniform", 0.5, 3),
        ("uniform", 0.35, 3),
        ("uniform", 0.5, 4),
    ]
    assert not (Path(again["run_root"]) / "magnitude-b50-s3").exists()
