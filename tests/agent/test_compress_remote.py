"""`edgeprune compress --profile P` where P measures on a local agent: end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edgeprune.cli import main
from tests.agent.helpers import require_server_packages, start_agent

require_server_packages()

TOKEN_ENV = "EDGEPRUNE_TEST_COMPRESS_TOKEN"


@pytest.mark.slow
def test_compress_with_a_remote_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = start_agent(tmp_path / "agent")
    try:
        monkeypatch.setenv(TOKEN_ENV, agent.token)
        profile = tmp_path / "remote-cpu.yaml"
        profile.write_text(
            yaml.safe_dump(
                {
                    "name": "remote-cpu",
                    "description": "cpu-ort-1t measured by an agent",
                    "runtime": "onnxruntime",
                    "input_shape": [3, 32, 32],
                    "measurement": {
                        "warmup_iters": 2,
                        "warmup_ms": 0,
                        "min_iters": 20,
                        "min_duration_ms": 50,
                        "blocks": 2,
                    },
                    "remote": {"urls": [agent.url], "token_env": TOKEN_ENV, "retries": 1},
                }
            )
        )
        config = tmp_path / "run.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "model": {"name": "edgeprune.models.testing:TinyConvNet", "baseline_epochs": 1},
                    "data": {"source": "digits", "limit": 200},
                    "goal": {"speedup": 1.2, "max_steps": 2},
                    "search": {
                        "searcher": "uniform",
                        "samples": 2,
                        "rl_epochs": 1,
                        "use_lut": False,
                        "val_subset": 50,
                        "bn_batches": 1,
                        "steps": 2,
                    },
                    "finetune": {"step_epochs": 0, "total_epochs": 0, "batch_size": 64},
                }
            )
        )
        out = tmp_path / "run"
        before = agent.health()["queue"]["measurements"]
        rc = main(
            ["compress", "--config", str(config), "--profile", str(profile), "--out", str(out)]
        )
        assert rc == 0
        report = json.loads((out / "report.json").read_text())
        assert report  # the run finished and wrote its report
        # The latency figures came from the agent, not from this process.
        assert agent.health()["queue"]["measurements"] > before
        assert agent.url in (out / "report.json").read_text()
    finally:
        agent.stop()
