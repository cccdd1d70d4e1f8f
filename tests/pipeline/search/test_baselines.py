"""Uniform and magnitude baselines driven to a cost target, and the magnitude ranking
checked against Torch-Pruning's own global pruning on a tiny CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from edgeprune.pipeline.pruning.plan import channel_grid
from edgeprune.pipeline.search import make_searcher
from edgeprune.pipeline.search.cost import Calibration, CostModel, LayerCost
from edgeprune.pipeline.search.magnitude import magnitude_keep, magnitude_plan
from edgeprune.pipeline.search.task import StepTask, normalize_scores
from edgeprune.pipeline.search.uniform import uniform_plan


def _channels_task(widths: dict[int, int], target: float, multiple: int = 1, scores=None):
    layers = [
        LayerCost(f"l{g}", 1, w, (), ((g, 1),), lambda ci, co: float(co)) for g, w in widths.items()
    ]
    cost = CostModel(layers, widths, 0.0, Calibration(unit=1.0), "channels")
    rng = np.random.default_rng(0)
    scores = scores or {g: rng.random(w) for g, w in widths.items()}
    grids = {g: channel_grid(w, multiple) for g, w in widths.items()}
    return StepTask(widths, grids, scores, cost, target)


def test_uniform_same_ratio_everywhere_at_the_smallest_ratio_that_fits() -> None:
    widths = {0: 16, 1: 32, 2: 64}
    task = _channels_task(widths, target=56)
    keep = uniform_plan(task, widths)
    assert keep == {0: 8, 1: 16, 2: 32}
    assert task.fits(keep)


def test_uniform_with_a_coarse_multiple_still_lands_under_the_target() -> None:
    widths = {0: 16, 1: 32, 2: 64}
    task = _channels_task(widths, target=100, multiple=16)
    keep = uniform_plan(task, widths)
    assert task.fits(keep) and all(k in task.grids[g] for g, k in keep.items())


def test_uniform_searcher_runs_the_contract() -> None:
    s = make_searcher("uniform")
    task = _channels_task({0: 16, 1: 32}, target=24)
    s.start_step(task)
    (cand,) = s.propose()
    assert s.propose() == []
    assert task.fits(cand.keep) and cand.removed_channels == 24
    assert s.state_dict()["base_widths"] == [[0, 16], [1, 32]]


def test_normalize_scores_like_torch_pruning() -> None:
    s = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(normalize_scores(s, "mean"), s / 2.0)
    np.testing.assert_allclose(normalize_scores(s, "max"), s / 3.0)
    np.testing.assert_allclose(normalize_scores(np.zeros(3)), np.ones(3))


def test_magnitude_removes_globally_smallest_channels_until_it_fits() -> None:
    scores = {0: np.array([0.1, 5.0, 6.0, 7.0]), 1: np.array([0.2, 0.3, 8.0, 9.0])}
    task = _channels_task({0: 4, 1: 4}, target=5, scores=scores)
    assert magnitude_plan(task) == {0: 3, 1: 2}  # 0.1, 0.2, 0.3 went


def test_magnitude_rounding_rounds_pruned_groups_down_to_the_grid() -> None:
    rng = np.random.default_rng(1)
    widths = {0: 32, 1: 64}
    task = _channels_task(
        widths, target=80, multiple=8, scores={0: rng.random(32), 1: rng.random(64)}
    )
    keep = magnitude_plan(task)
    assert task.fits(keep)
    assert all(k in channel_grid(widths[g], 8) for g, k in keep.items())


def _tiny_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 24, 3), nn.BatchNorm2d(24), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10),
    )  # fmt: skip


@pytest.mark.parametrize(("ratio", "round_to"), [(0.2, None), (0.35, None), (0.2, 8)])
def test_magnitude_matches_torch_pruning_global_pruning(ratio: float, round_to: int | None) -> None:
    x = torch.randn(1, 3, 16, 16)
    convs = (0, 3, 6)
    model = _tiny_cnn()
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    raw = tp.importance.GroupMagnitudeImportance(p=2, normalizer=None)
    scores = {}
    for group in dg.get_all_groups(ignored_layers=[model[11]], root_module_types=[nn.Conv2d]):
        conv = group[0].dep.target.module
        scores[next(i for i in convs if model[i] is conv)] = raw(group).numpy()
    widths = {i: model[i].out_channels for i in convs}
    total = sum(widths.values())
    step = total - int(total * (1 - ratio))  # Torch-Pruning's n_pruned

    task = _channels_task(
        widths,
        target=total - step,
        multiple=round_to or 1,
        scores={i: normalize_scores(v) for i, v in scores.items()},
    )
    keep = magnitude_keep(task, step)

    ref = _tiny_cnn()
    pruner = tp.pruner.BasePruner(
        ref,
        x,
        importance=tp.importance.GroupMagnitudeImportance(p=2),  # normalizer="mean"
        global_pruning=True,
        pruning_ratio=ratio,
        ignored_layers=[ref[11]],
        round_to=round_to,
    )
    pruner.step()
    assert keep == {i: ref[i].out_channels for i in convs}
