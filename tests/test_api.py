"""The library API: the README's example as written, non-classifier outputs, bad arguments."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

import edgeprune
from edgeprune.errors import EdgepruneError, PruningError, SearchError
from edgeprune.models.testing import (
    TinyConvNet,
    TinyDetector,
    TinySegNet,
    detection_score,
    make_shapes,
    train_detector,
)
from edgeprune.outputs import flatten_outputs

ROOT = Path(__file__).resolve().parents[1]
FAST = {"search.steps": 1, "search.samples": 2, "search.rl_epochs": 1, "finetune.total_epochs": 0}


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- library-example -->\n```python\n(.*?)```", text, re.S)
    assert m, "README lost its library example"
    return m.group(1)


def test_readme_library_example_runs_as_written(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_readme_example(), encoding="utf-8")
    env = {**os.environ, "EDGEPRUNE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "detector"
    report = json.loads((run / "report.json").read_text())
    assert report["metric"] == {"name": "cell accuracy", "percent": True}
    assert report["final"]["macs"] < report["baseline"]["macs"]
    heads = [g for g in report["channels"] if g["frozen"]]
    assert {g["name"] for g in heads} == {"cls_head", "box_head"}
    assert all(g["after"] == g["before"] for g in heads)
    graph = onnx.load(str(run / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["out.0", "out.1"]
    assert "cell accuracy" in (run / "report.md").read_text()
    # the latency table's own error on this host, measured by the build of this run
    check = report["lut"]["self_check"]
    assert check["n"] >= 2 and 0 <= check["median_abs_pct"] <= check["max_abs_pct"]
    assert "self-check on this host" in (run / "report.md").read_text()


def _pixel_accuracy(model: torch.nn.Module, data) -> float:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        pred = model(data.images)["out"].argmax(1)
    return float((pred == data.masks).float().mean())


def test_a_segmentation_model_with_dict_output_compresses(tmp_path: Path) -> None:
    torch.manual_seed(0)
    shapes = make_shapes(256, seed=1)
    model = TinySegNet().eval()
    result = edgeprune.compress(
        model,
        torch.zeros(1, 3, 32, 32),
        evaluate=lambda m: _pixel_accuracy(m, shapes[128:]),
        calib_data=[(shapes.images[i : i + 64], shapes.masks[i : i + 64]) for i in (0, 64)],
        metric="pixel accuracy",
        speedup=1.3,
        out=tmp_path / "run",
        settings={**FAST, "search.depth": "off"},
    )
    x = shapes.images[:2]
    out = result.model(x)
    assert set(out) == {"out"} and out["out"].shape == (2, 4, 32, 32)
    assert result.report["final"]["macs"] < result.report["baseline"]["macs"]
    assert result.report["final"]["accuracy"]["test"] is None
    assert [o.name for o in onnx.load(str(result.onnx_path)).graph.output] == ["out"]
    # the classifier keeps its channels, the saved model replays on the user's object
    assert result.model.classifier.out_channels == 4
    with pytest.raises(PruningError, match="base=your_unpruned_model"):
        edgeprune.load_pruned(result.run_dir / "model_pruned")
    again = edgeprune.load_pruned(result.run_dir / "model_pruned", base=model)
    torch.testing.assert_close(again(x)["out"], out["out"])
    assert model.enc1[0].out_channels == 16  # the user's model is not modified


def test_detector_heads_are_frozen_and_outputs_keep_their_shapes() -> None:
    from edgeprune.pipeline.pruning.groups import build_groups
    from edgeprune.pipeline.pruning.prune import apply_removed

    model = train_detector(TinyDetector(), make_shapes(128, seed=2), epochs=1)
    x = torch.zeros(1, 3, 32, 32)
    groups = build_groups(model, x)
    assert groups.output_shapes == ((1, 4, 8, 8), (1, 4, 8, 8))
    assert {g.name for g in groups.frozen} == {"cls_head", "box_head"}
    removed = {g.id: tuple(range(g.width // 2)) for g in groups.prunable}
    pruned = apply_removed(model, groups, removed)
    assert [t.shape for t in flatten_outputs(pruned(x))] == [(1, 4, 8, 8), (1, 4, 8, 8)]
    assert 0.0 <= detection_score(pruned, make_shapes(64, seed=3)) <= 1.0


def test_bad_arguments_get_one_clear_error(tmp_path: Path) -> None:
    model = TinyDetector()
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(SearchError, match="needs calib_data"):
        edgeprune.compress(model, x, evaluate=lambda m: 0.5, out=tmp_path / "a")
    with pytest.raises(SearchError, match=r"either data= .* or evaluate="):
        edgeprune.compress(
            model, x, evaluate=lambda m: 0.5, calib_data=[x], data="digits", out=tmp_path / "b"
        )
    with pytest.raises(SearchError, match="go with evaluate="):
        edgeprune.compress(model, x, calib_data=[x], out=tmp_path / "c")
    with pytest.raises(EdgepruneError, match=r"example_input must be one image batch"):
        edgeprune.compress(model, torch.zeros(3, 32, 32), out=tmp_path / "d")
    with pytest.raises(EdgepruneError, match="no field 'stepz'"):
        edgeprune.compress(model, x, settings={"search.stepz": 1}, out=tmp_path / "e")
    with pytest.raises(SearchError, match="taylor"):
        edgeprune.compress(
            model,
            x,
            evaluate=lambda m: 0.5,
            calib_data=[x],
            settings={"search.criterion": "taylor"},
            out=tmp_path / "f",
        )
    with pytest.raises(SearchError, match="calib_data gave no batches"):
        edgeprune.compress(model, x, evaluate=lambda m: 0.5, calib_data=[], out=tmp_path / "g")


def test_an_evaluate_that_returns_no_number_is_named(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match=r"evaluate\(model\) returned str"):
        edgeprune.compress(
            TinyConvNet(),
            torch.zeros(1, 3, 32, 32),
            evaluate=lambda m: "good",
            calib_data=[torch.randn(8, 3, 32, 32)],
            out=tmp_path / "run",
            settings=FAST,
        )


def test_a_classifier_with_data_and_per_layer_limits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyConvNet(width=32)
    settings = {**FAST, "data.limit": 400, "search.val_subset": 60, "search.depth": "off"}
    result = edgeprune.compress(
        model,
        data="digits",
        min_keep={"down.0": 0.5},  # unlimited, this MACs goal cuts down.0 to 16 of 64
        out=tmp_path / "run",
        settings={**settings, "goal.flops_ratio": 0.8},
    )
    rows = {r["name"]: r for r in result.report["channels"]}
    assert rows["down.0"]["after"] >= 32
    assert result.report["metric"] == {"name": "top-1", "percent": True}
    assert result.report["final"]["accuracy"]["test"] is not None
    with pytest.raises(SearchError, match=r"min_keep names \['nope'\]"):
        edgeprune.compress(
            model, data="digits", min_keep={"nope": 0.5}, out=tmp_path / "b", settings=settings
        )
    with pytest.raises(EdgepruneError, match=r"min_keep fractions must be in \(0, 1\]"):
        edgeprune.compress(model, data="digits", min_keep={"down.0": 1.5}, out=tmp_path / "c")


def test_min_keep_cuts_the_grid_of_the_group_producing_the_layer() -> None:
    from edgeprune.pipeline.pruning.groups import build_groups
    from edgeprune.pipeline.pruning.plan import limited_grid

    groups = {g.name: g for g in build_groups(TinyConvNet(width=32), torch.zeros(1, 3, 32, 32))}
    stem, down = groups["stem.0"], groups["down.0"]
    assert limited_grid(stem, 8)[0] == 2
    assert limited_grid(stem, 8, {"stem.1": 0.75}) == (24, 32)  # its BN names it too
    assert limited_grid(stem, 8, {"conv_a": 0.5})[0] == 16  # coupled by the residual add
    assert limited_grid(down, 8, {"stem.0": 0.75})[0] == 2  # another group's limit
