"""The validation split: seeded, stratified, disjoint; limit subsamples evenly; stats exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeprune.data import load_data
from edgeprune.data.splits import balanced_subsample, channel_stats, stratified_split
from tests.data.conftest import make_npz


def _ids(x: torch.Tensor) -> set[int]:
    """The npz fixture stores each image's index in pixel (0, 0, 0)."""
    return set(x[:, 0, 0, 0].tolist())


def test_split_is_reproducible_disjoint_and_complete(tmp_path: Path) -> None:
    path = make_npz(tmp_path / "a.npz", n=40, classes=4)
    a = load_data(path, image_size=16, val_fraction=0.25, seed=3, cache_dir=tmp_path)
    b = load_data(path, image_size=16, val_fraction=0.25, seed=3, cache_dir=tmp_path)
    c = load_data(path, image_size=16, val_fraction=0.25, seed=4, cache_dir=tmp_path)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    assert _ids(a.val_x) != _ids(c.val_x)
    assert _ids(a.train_x).isdisjoint(_ids(a.val_x))
    assert _ids(a.train_x) | _ids(a.val_x) == set(range(40))
    # Stratified: 10 images per class -> round(2.5) = 2 validation images each.
    assert torch.bincount(a.val_y, minlength=4).tolist() == [2, 2, 2, 2]


def test_digits_test_split_does_not_move_with_the_seed() -> None:
    a, b = load_data("digits", seed=0), load_data("digits", seed=1)
    assert torch.equal(a.test_x, b.test_x)
    assert not torch.equal(a.val_x, b.val_x)


def test_stratified_split_keeps_one_of_each() -> None:
    y = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    train, val = stratified_split(y, 0.1, torch.Generator().manual_seed(0), ("a", "b"))
    # Class 0 has 2 images: round(0.2) = 0, raised to 1 so it is still validated.
    assert torch.bincount(y[val]).tolist() == [1, 1]
    assert torch.bincount(y[train]).tolist() == [1, 9]


def test_limit_is_balanced_and_seeded(tmp_path: Path) -> None:
    path = make_npz(tmp_path / "a.npz", n=40, classes=4)
    d = load_data(path, image_size=16, val_fraction=0.25, limit=20, cache_dir=tmp_path)
    assert d.train_x.shape[0] + d.val_x.shape[0] == 20
    assert torch.bincount(torch.cat([d.train_y, d.val_y])).tolist() == [5, 5, 5, 5]
    assert d.test_x.shape[0] == 8  # under the limit: untouched
    again = load_data(path, image_size=16, val_fraction=0.25, limit=20, cache_dir=tmp_path)
    assert torch.equal(d.train_x, again.train_x)


def test_balanced_subsample_fills_from_larger_classes() -> None:
    y = torch.tensor([0] * 2 + [1] * 10 + [2] * 10)
    idx = balanced_subsample(y, 12, torch.Generator().manual_seed(0))
    assert torch.bincount(y[idx]).tolist() == [2, 5, 5]
    assert torch.equal(idx, torch.sort(idx).values) and idx.unique().numel() == 12


def test_channel_stats_match_numpy() -> None:
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(x)
    arr = x.numpy().astype(np.float64) / 255.0
    assert np.allclose(mean, arr.mean(axis=(0, 2, 3)))
    assert np.allclose(std, arr.std(axis=(0, 2, 3)))


def test_stats_are_computed_on_the_train_split_only(tmp_path: Path) -> None:
    d = load_data(make_npz(tmp_path / "a.npz"), image_size=16, cache_dir=tmp_path)
    mean, std = channel_stats(d.train_x)
    assert np.allclose(d.mean, mean) and np.allclose(d.std, std)
    assert d.std[1] > 0  # constant channels keep a finite std (1/255 floor)
