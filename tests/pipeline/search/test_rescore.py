"""Screen, then confirm: a step's best candidates are re-scored on a disjoint draw."""

from __future__ import annotations

from pathlib import Path

import torch

import edgeprune
from edgeprune.config import RunConfig
from edgeprune.data import load_data
from edgeprune.models import load_model
from edgeprune.models.testing import TinyConvNet
from edgeprune.pipeline.tasks import ClassifierTask


def _config(**search: object) -> RunConfig:
    raw = RunConfig().model_dump(mode="json")
    raw["search"].update(search)
    return RunConfig.validate_dict(raw)


def test_the_rescore_draw_is_disjoint_stratified_and_as_large_as_the_proxys() -> None:
    data = load_data("digits")
    task = ClassifierTask.from_config(data, _config(val_subset=60))
    assert task.rescore_x is not None and task.rescore_y is not None
    assert task.score_size() == 60 and task.rescore_size() == 60
    proxy = {tuple(x.flatten().tolist()) for x in task.val_x}
    again = {tuple(x.flatten().tolist()) for x in task.rescore_x}
    assert not proxy & again  # no image in both draws
    counts = torch.bincount(task.rescore_y, minlength=len(data.classes))
    assert int(counts.max()) - int(counts.min()) <= 1  # class-balanced, never a slice
    # The proxy takes every validation image: nothing is left, so no re-score (not a
    # draw overlapping the proxy's).
    full = ClassifierTask.from_config(data, _config(val_subset=1000))
    assert full.rescore_size() == 0 and full.rescore(TinyConvNet()) is None
    assert ClassifierTask.from_config(data, _config(val_subset=60, rescore_top=0)).rescore_x is None


def test_a_step_keeps_the_finalist_best_on_both_draws(tmp_path: Path) -> None:
    torch.manual_seed(0)
    settings = {
        "search.steps": 1, "search.samples": 4, "search.rl_epochs": 1, "search.depth": "off",
        "search.val_subset": 60, "finetune.total_epochs": 0, "goal.flops_ratio": 0.6,
    }  # fmt: skip
    model = load_model("resnet20", 10)  # many groups: the candidates' plans differ
    result = edgeprune.compress(model, data="digits", out=tmp_path / "run", settings=settings)
    step = result.report["search"]["steps"][0]
    rows = step["rescored"]
    assert len(rows) >= 2, step
    for row in rows:
        assert 0.0 <= row["rescore"] <= 1.0
        assert min(row["proxy"], row["rescore"]) <= row["both"] <= max(row["proxy"], row["rescore"])
    best = max(rows, key=lambda r: r["reward"])
    assert step["chosen"] == best["tag"]
