"""Uniform and magnitude baselines: allocation on hand-computed cases, and the magnitude
ranking checked against Torch-Pruning's own global pruning on a tiny CNN."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from edgeprune.errors import SearchError
from edgeprune.pipeline.plan import channel_grid
from edgeprune.pipeline.search import MagnitudeSearcher, Outcome, make_searcher
from edgeprune.pipeline.search.magnitude import global_magnitude_removal, normalize_scores
from edgeprune.pipeline.search.uniform import uniform_removal


def test_uniform_same_ratio_everywhere_without_rounding() -> None:
    # rho = 6 / 112: keeps 15.14 -> 15, 30.29 -> 30, 60.57 -> 61
    assert uniform_removal([16, 32, 64], [16, 32, 64], 6, 1) == [1, 2, 3]
    # the next step continues the cumulative ratio from the base widths: rho = 12/112
    assert uniform_removal([16, 32, 64], [15, 30, 61], 6, 1) == [1, 1, 4]


def test_uniform_with_a_coarse_multiple_bumps_the_ratio_instead_of_stalling() -> None:
    # rho = 11/224 rounds every group back to its width; the smallest ratio that removes
    # something is just above 1/16, where the 128 group drops to 112
    assert uniform_removal([32, 64, 128], [32, 64, 128], 11, 16) == [0, 0, 16]
    # below one multiple the grid steps by a quarter multiple
    assert uniform_removal([16, 16], [16, 16], 4, 16) == [4, 4]
    # groups at their floor (a quarter multiple) give nothing; nothing left -> all zeros
    assert uniform_removal([16, 16], [4, 4], 4, 16) == [0, 0]


def test_uniform_searcher_runs_the_contract() -> None:
    s = make_searcher("uniform")
    s.start_step({3: 16, 5: 32, 8: 64}, 6, 1)
    (cand,) = s.propose()
    assert s.propose() == []
    assert dict(cand.keep) == {3: 15, 5: 30, 8: 61} and cand.removed_channels == 6
    s.observe([Outcome(cand, 0.5, 0.8)])
    assert s.choose() == cand
    assert s.end_step(Outcome(cand, 0.0, 0.1), 0.9) is True  # no collapse guard
    state = json.loads(json.dumps(s.state_dict()))
    again = make_searcher("uniform")
    again.load_state_dict(state)
    again.start_step(dict(cand.keep), 6, 1)
    assert dict(again.choose().keep) == {3: 14, 5: 29, 8: 57}  # base widths restored
    assert again.choose().tag == "step1/uniform"


def test_normalize_scores_like_torch_pruning() -> None:
    s = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(normalize_scores(s, "mean"), [0.5, 1.0, 1.5])
    np.testing.assert_allclose(normalize_scores(s, "max"), [1 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(normalize_scores(normalize_scores(s, "mean"), "mean"), [0.5, 1, 1.5])


def test_magnitude_removes_globally_smallest_normalised_channels() -> None:
    a = np.array([1.0, 2.0, 3.0, 2.0])  # mean 2 -> [0.5, 1, 1.5, 1]
    b = np.array([10.0, 30.0, 20.0, 40.0])  # mean 25 -> [0.4, 1.2, 0.8, 1.6]
    # 3 smallest normalised: b0 (0.4), a0 (0.5), b2 (0.8)
    assert global_magnitude_removal([a, b], [4, 4], 3, 1, round_to_multiple=False) == [1, 2]
    # without normalisation the raw scores rank all of group a first
    got = global_magnitude_removal([a, b], [4, 4], 3, 1, round_to_multiple=False, normalizer="none")
    assert got == [3, 0]
    # the floor (1 channel) stops group a; the next smallest come from b
    got = global_magnitude_removal([a, b], [4, 4], 5, 1, round_to_multiple=False, normalizer="none")
    assert got == [3, 2]


def test_magnitude_rounding_rounds_pruned_groups_down_to_the_multiple() -> None:
    rng = np.random.default_rng(0)
    scores = [rng.random(32), rng.random(64), rng.random(24)]
    plain = global_magnitude_removal(scores, [32, 64, 24], 10, 8, round_to_multiple=False)
    rounded = global_magnitude_removal(scores, [32, 64, 24], 10, 8, round_to_multiple=True)
    assert sum(plain) == 10
    for w, p, r in zip([32, 64, 24], plain, rounded, strict=True):
        if p == 0:
            assert r == 0
        else:
            assert (w - r) in channel_grid(w, 8) and r >= p
            assert w - r == max(8, (w - p) // 8 * 8)


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

    s = make_searcher("magnitude", {"round_to_multiple": round_to is not None})
    s.start_step(widths, step, round_to or 1)
    s.set_scores(scores)
    (cand,) = s.propose()

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
    assert dict(cand.keep) == {i: ref[i].out_channels for i in convs}


def test_magnitude_searcher_needs_valid_scores() -> None:
    s = MagnitudeSearcher()
    s.start_step({0: 4, 1: 4}, 2, 1)
    with pytest.raises(SearchError, match="set_scores"):
        s.propose()
    with pytest.raises(SearchError, match="no scores for groups"):
        s.set_scores({0: np.ones(4)})
    with pytest.raises(SearchError, match="group 1 needs 4"):
        s.set_scores({0: np.ones(4), 1: np.ones(3)})
    with pytest.raises(SearchError, match="normalizer"):
        make_searcher("magnitude", {"normalizer": "median"})
