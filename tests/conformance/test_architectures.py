"""The structures users ship go through ``edgeprune.compress`` end to end, or are frozen
group by group with a reason; Torch-Pruning's failures never reach the user raw.

Each architecture (``edgeprune.models.conformance``) is compressed at 1.5x on
``cpu-ort-1t`` with a fidelity metric; the checks are on behaviour, not the clock: groups
found, channels removed (fewer MACs), the ONNX export equal to torch, latency measured,
``load_pruned(base=)`` reproducing the pruned model. Whether 1.5x was met on this host is
in the conformance table (``bench/bench_conformance.py``), not asserted here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeprune.models.conformance import ARCHITECTURES, ConvNeXt, ShuffleNetV2, YoloV8
from edgeprune.pipeline.pruning.groups import build_groups

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from conformance_run import run_one

SIZES = {"yolov8": 64}
needs_ultralytics = pytest.mark.skipif(
    importlib.util.find_spec("ultralytics") is None,
    reason="ultralytics not installed (AGPL-3.0, test-only: pip install ultralytics)",
)


def _check(row, tmp_path: Path) -> dict:  # type: ignore[no-untyped-def]
    assert row.error is None, row.error
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["final"]["macs"] < report["baseline"]["macs"]
    assert row.groups > len(row.frozen)  # something was prunable and pruned
    assert all(reason.strip() and "\n" not in reason for reason in row.frozen.values())
    assert row.speedup_measured is not None and row.speedup_measured > 0
    assert report["goal"]["budget_met"] in (True, False)
    # float32 rounding: ~1e-7 for classifiers, ~1e-3 for a detector's pixel-unit boxes
    assert row.export_max_abs_diff is not None and row.export_max_abs_diff < 5e-3
    assert row.replay_max_abs_diff is not None and row.replay_max_abs_diff <= 1e-5
    return report


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_compresses_end_to_end(name: str, tmp_path: Path) -> None:
    factory, exercises = ARCHITECTURES[name]
    row = run_one(name, factory(), exercises, tmp_path / "run", size=SIZES.get(name, 32))
    report = _check(row, tmp_path)
    if name == "yolov8":
        # C2f's chunk + concat is what Torch-Pruning maps wrongly: those groups are frozen
        # with the reason, the rest of the detector still prunes; outputs keep their shapes.
        assert any("split/concat" in r for r in row.frozen.values())
        assert report["baseline"]["macs"] > report["final"]["macs"]
    if name == "shufflenetv2":
        assert any("Torch-Pruning" in r for r in row.frozen.values())


@pytest.mark.slow
@pytest.mark.timeout(600)
@needs_ultralytics
def test_ultralytics_yolov8n_compresses(tmp_path: Path) -> None:
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml").model  # built from the YAML: no weights downloaded
    row = run_one("yolov8n", model, "Ultralytics DetectionModel", tmp_path / "run", size=64)
    _check(row, tmp_path)
    assert any("split/concat" in r for r in row.frozen.values())


def test_layernorm_over_a_permute_is_traced_and_probed_as_safe() -> None:
    """ConvNeXt's layer scale is a bare parameter of the block (no layer of its own) and its
    LayerNorm normalises the channels: neither is an 'unused layer' or an unsafe group."""
    groups = build_groups(ConvNeXt().eval(), torch.randn(1, 3, 32, 32))
    assert [g.name for g in groups.frozen] == ["fc"]
    trunk = next(g for g in groups.prunable if "stages.0.gamma" in g.members)
    assert "stages.0.norm" in trunk.members


def test_channel_shuffle_freezes_the_groups_it_breaks_and_prunes_the_rest() -> None:
    """Torch-Pruning raises ZeroDivisionError mapping this shuffle; the groups through it are
    frozen with a one-line reason, the branches inside the units stay prunable."""
    groups = build_groups(ShuffleNetV2().eval(), torch.randn(1, 3, 32, 32))
    reasons = [g.frozen_reason or "" for g in groups.frozen]
    assert any("Torch-Pruning cannot map channels through" in r for r in reasons)
    assert len(groups.prunable) >= 5


def test_c2f_chunk_concat_groups_are_frozen_not_crashing() -> None:
    groups = build_groups(YoloV8().eval(), torch.randn(1, 3, 64, 64))
    frozen = {g.name: g.frozen_reason for g in groups.frozen}
    assert "b2.cv1.conv" in frozen and "split/concat" in (frozen["b2.cv1.conv"] or "")
    assert {"b2.m.0.cv1.conv", "b1.conv", "sppf.cv1.conv"} <= {g.name for g in groups.prunable}


class _GroupedStack(nn.Module):
    """Grouped 3x3 convs with 2, 3, 4, 8 and 16 groups, group widths 4 to 24."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 48, 3, padding=1)]
        cin = 48
        for groups, width in ((2, 24), (3, 16), (4, 12), (8, 6), (16, 4)):
            c = groups * width
            layers += [nn.Conv2d(cin, c, 1), nn.Conv2d(c, c, 3, padding=1, groups=groups)]
            cin = c
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_grouped_convs_get_their_group_count_as_channel_step() -> None:
    groups = build_groups(_GroupedStack(), torch.randn(1, 3, 16, 16))
    steps = {g.name: g.channel_step for g in groups.prunable}
    # a grouped conv's own output and the 1x1 conv feeding it: both step by its group count
    assert steps == {
        "body.0": 1, "body.1": 2, "body.2": 2, "body.3": 3, "body.4": 3, "body.5": 4,
        "body.6": 4, "body.7": 8, "body.8": 8, "body.9": 16,
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(600)
@needs_ultralytics
def test_readme_yolo_example_runs_as_written(tmp_path: Path) -> None:
    import os
    import re
    import subprocess

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- yolo-example -->\n```python\n(.*?)```", readme, re.S)
    assert m, "README lost its YOLOv8 example"
    (tmp_path / "yolo.py").write_text(m.group(1), encoding="utf-8")
    env = {**os.environ, "EDGEPRUNE_CACHE": os.environ.get("EDGEPRUNE_CACHE", str(tmp_path))}
    proc = subprocess.run(
        [sys.executable, "yolo.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=540,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "groups frozen" in proc.stdout
    assert (tmp_path / "runs" / "yolov8n" / "model.onnx").is_file()
