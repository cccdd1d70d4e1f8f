"""The search's proxy data (BN batches, Taylor batches, validation subset) covers every class.

ImageFolder sources decode class by class, so every split comes out class-sorted; a slice
``x[:n]`` once gave BatchNorm re-estimation 256 images of one class.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from edgeprune.config import RunConfig
from edgeprune.data import load_data, stratified_draw
from edgeprune.pipeline.compress import _setup
from edgeprune.pipeline.run_dir import RunDir
from tests.data.conftest import make_imagefolder
from tests.pipeline.test_compress import FAST_PROFILE

CLASSES = tuple(f"c{i}" for i in range(8))


def test_stratified_draw_is_balanced_shuffled_and_seeded() -> None:
    y = torch.arange(10).repeat_interleave(100)  # class-sorted like an ImageFolder
    idx = stratified_draw(y, 200, seed=3)
    assert torch.bincount(y[idx], minlength=10).tolist() == [20] * 10
    assert len(set(y[idx[:20]].tolist())) >= 5  # shuffled: the first batch mixes classes
    assert torch.equal(idx, stratified_draw(y, 200, seed=3))
    assert not torch.equal(idx, stratified_draw(y, 200, seed=4))
    assert stratified_draw(y, 5000, seed=0).numel() == 1000


def test_class_ordered_imagefolder_gives_proxy_batches_of_every_class(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "data", CLASSES, per_class=40, test_per_class=1)
    assert load_data(str(root), val_fraction=0.25, seed=0).train_y[:30].unique().numel() == 1
    profile = tmp_path / "fast.yaml"
    profile.write_text(FAST_PROFILE)
    cfg = RunConfig.validate_dict(
        {
            "profile": str(profile),
            "model": {"name": "edgeprune.models.testing:TinyConvNet", "baseline_epochs": 1},
            "data": {"source": str(root), "val_fraction": 0.25},
            "search": {"use_lut": False, "val_subset": 50, "bn_batches": 2},
        }
    )
    run = RunDir(tmp_path / "run")
    run.start(cfg)
    ctx = _setup(cfg, run, Console(stderr=True))
    task = ctx.task
    data = task.data
    assert len(task.bn_inputs) == 2 and all(b.shape[0] == 64 for b in task.bn_inputs)
    assert set(task.val_y.tolist()) == set(range(len(CLASSES)))
    assert torch.bincount(task.val_y).min() >= 50 // len(CLASSES)
    for labels in task.taylor_labels:
        assert labels.unique().numel() == len(CLASSES)
    # the BN batches are built from this draw, in this order
    idx = stratified_draw(data.train_y, 64 * 2, cfg.seed)
    for b in range(2):
        assert data.train_y[idx[64 * b : 64 * (b + 1)]].unique().numel() == len(CLASSES)
