"""Parallel work with the sequential results: a step's candidates scored in worker
processes, and the latency table's points measured on a pool of agents at once."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import threading
import time
from pathlib import Path

import pytest
import torch

import edgeprune
from edgeprune.models.testing import TinyDetector, detection_score, make_shapes, train_detector


def _run(tmp_path: Path, name: str, workers: int) -> tuple[dict, list[dict], set[int]]:
    torch.manual_seed(0)
    shapes = make_shapes(384, seed=4)
    model = train_detector(TinyDetector(), shapes[:256], epochs=1)
    pids = tmp_path / f"{name}.pids"

    def evaluate(m: torch.nn.Module) -> float:
        with open(pids, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
        return detection_score(m, shapes[256:])

    result = edgeprune.compress(
        model,
        torch.zeros(1, 3, 32, 32),
        evaluate=evaluate,
        calib_data=[shapes.images[:64]],
        out=tmp_path / name,
        settings={
            "goal.flops_ratio": 0.6,  # counted, not measured: the runs are comparable
            "search.steps": 2,
            "search.samples": 4,
            "search.rl_epochs": 2,
            "search.workers": workers,
            "finetune.total_epochs": 0,
        },
    )
    log = [json.loads(line) for line in (result.run_dir / "search.jsonl").read_text().splitlines()]
    return result.report, log, {int(p) for p in pids.read_text().split()}


def test_candidates_scored_in_workers_give_the_one_process_result(tmp_path: Path) -> None:
    seq, seq_log, seq_pids = _run(tmp_path, "one", 1)
    par, par_log, par_pids = _run(tmp_path, "two", 2)
    assert seq_pids == {os.getpid()}
    assert len(par_pids - {os.getpid()}) >= 2  # scored in two forked workers
    keys = ("step", "tag", "keep", "accuracy", "reward", "macs")
    assert [{k: r.get(k) for k in keys} for r in par_log] == [
        {k: r.get(k) for k in keys} for r in seq_log
    ]
    assert par["channels"] == seq["channels"]
    assert [s["chosen"] for s in par["search"]["steps"]] == [
        s["chosen"] for s in seq["search"]["steps"]
    ]
    assert par["final"]["accuracy"] == seq["final"]["accuracy"]


@pytest.mark.slow
def test_lut_points_run_on_every_agent_at_once_one_per_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeprune.latency.lut_measure import LayerConfig, PointMeasurer, layer_onnx, point_shape
    from edgeprune.profiles import MeasurementSettings, load_profile
    from edgeprune.targets.agent_client import AgentClient
    from tests.agent.helpers import require_server_packages, start_agent

    require_server_packages()
    token = secrets.token_urlsafe(24)
    agents = [start_agent(tmp_path / f"agent{i}", token=token) for i in range(2)]
    try:
        monkeypatch.setenv("EDGEPRUNE_TEST_POOL_TOKEN", token)
        remote = {"urls": [a.url for a in agents], "token_env": "EDGEPRUNE_TEST_POOL_TOKEN"}
        base = load_profile("cpu-ort-1t").model_dump()
        profile = type(load_profile("cpu-ort-1t")).model_validate({**base, "remote": remote})
        spans: list[tuple[str, float, float]] = []
        lock = threading.Lock()
        real = AgentClient.measure

        def timed(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            t0 = time.monotonic()
            try:
                return real(self, *args, **kwargs)
            finally:
                with lock:
                    spans.append((self.url, t0, time.monotonic()))

        monkeypatch.setattr(AgentClient, "measure", timed)
        settings = MeasurementSettings(
            warmup_iters=2, warmup_ms=0, min_iters=20, min_duration_ms=80
        )
        meas = PointMeasurer(profile, settings)
        config = LayerConfig(kind="conv", kernel=(3, 3), stride=(1, 1), padding=(1, 1),
                             dilation=(1, 1), groups_mode="dense", groups=1, depth_mult=1,
                             in_hw=(16, 16), batch=1)  # fmt: skip
        items = [(layer_onnx(config, 8, c), point_shape(config, 8)) for c in (4, 8, 16, 32)]
        times = meas.min_of_passes(items, passes=2)
        assert all(0 < t < 1e6 for t in times) and meas.points_measured == 8
        assert {u for u, _, _ in spans} == {a.url for a in agents}
        for url in {u for u, _, _ in spans}:  # one request in flight per agent
            mine = sorted((a, b) for u, a, b in spans if u == url)
            assert all(b1 <= a2 for (_, b1), (a2, _) in itertools.pairwise(mine))
        overlap = any(
            u1 != u2 and a1 < b2 and a2 < b1 for u1, a1, b1 in spans for u2, a2, b2 in spans
        )
        assert overlap, "the agents never measured at the same time"
    finally:
        for a in agents:
            a.stop()
