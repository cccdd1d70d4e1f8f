"""Importance criteria on layers where the right answer is known."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import PruningError
from edgeprune.models.testing import GroupedConvNet
from edgeprune.pipeline.pruning.groups import GroupInfo, build_groups
from edgeprune.pipeline.pruning.importance import (
    BNScaleImportance,
    ClusterImportance,
    MagnitudeImportance,
    RandomImportance,
    TaylorImportance,
    get_importance,
)
from edgeprune.pipeline.pruning.prune import removed_from_scores

X = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


class _Net(nn.Module):
    """conv1 (4 filters) -> BN -> ReLU -> conv2 -> pool -> fc; conv1's group is the test."""

    def __init__(self, bn: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.fc = nn.Linear(6, 3)
        with torch.no_grad():
            self.conv2.weight.fill_(0.1)  # every channel is consumed alike

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(F.relu(self.bn(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _setup(filters: torch.Tensor, bn: bool = True) -> tuple[_Net, GroupInfo]:
    net = _Net(bn)
    with torch.no_grad():
        net.conv1.weight.copy_(filters)
    groups = build_groups(net, X)
    return net, next(g for g in groups if g.name == "conv1")


def _removed(criterion, net: nn.Module, info: GroupInfo, n_keep: int) -> tuple[int, ...]:
    return removed_from_scores(info, criterion(info, net, n_keep), n_keep)


def _filters() -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    a, b, c = (torch.randn(3, 3, 3, generator=gen) for _ in range(3))
    # 0 and 1 are the same filter (1 slightly larger); 3 is small but unlike the others.
    return torch.stack([a, 1.1 * a, b, 0.1 * c])


def test_l1_removes_the_smallest_and_cluster_removes_a_duplicate() -> None:
    net, info = _setup(_filters())
    assert _removed(MagnitudeImportance(1), net, info, 3) == (3,)
    assert _removed(get_importance("l1"), net, info, 3) == (3,)
    removed = _removed(ClusterImportance(), net, info, 3)
    assert removed in ((0,), (1,))
    # The duplicate pair loses its smaller-norm member first when both sit at the centroid.
    assert _removed(ClusterImportance(), net, info, 3) == removed


def test_cluster_is_deterministic_and_keeps_one_per_cluster() -> None:
    gen = torch.Generator().manual_seed(9)
    a, b = torch.randn(3, 3, 3, generator=gen), torch.randn(3, 3, 3, generator=gen)
    # Two clusters of three near-identical filters each.
    f = torch.stack([a, 1.01 * a, 0.99 * a, b, 1.02 * b, 0.98 * b])
    net = _Net()
    net.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
    net.bn = nn.BatchNorm2d(6)
    net.conv2 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
    with torch.no_grad():
        net.conv1.weight.copy_(f)
    info = next(g for g in build_groups(net, X) if g.name == "conv1")
    first = ClusterImportance(seed=3)(info, net, 2)
    assert torch.equal(first, ClusterImportance(seed=3)(info, net, 2))
    kept = set(range(6)) - set(removed_from_scores(info, first, 2))
    assert len(kept & {0, 1, 2}) == 1 and len(kept & {3, 4, 5}) == 1


def test_l2_and_l1_disagree_where_they_should() -> None:
    f = torch.ones(4, 3, 3, 3) * 0.5
    f[0] = 0.0
    f[0, 0, 0, 0] = 6.0  # L1 = 6 (< 13.5 of the others), squared L2 = 36 (> 6.75)
    net, info = _setup(f)
    assert _removed(MagnitudeImportance(1), net, info, 3) == (0,)
    assert 0 not in _removed(MagnitudeImportance(2), net, info, 3)


def test_bn_scale_follows_gamma_and_falls_back_without_bn() -> None:
    net, info = _setup(_filters())
    with torch.no_grad():
        net.bn.weight.copy_(torch.tensor([1.0, 0.05, 1.0, 1.0]))
    assert _removed(BNScaleImportance(), net, info, 3) == (1,)
    net2, info2 = _setup(_filters(), bn=False)
    assert _removed(BNScaleImportance(), net2, info2, 3) == (3,)  # L1 fallback


def _batches(n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(7)
    return [
        (torch.randn(4, 3, 8, 8, generator=gen), torch.randint(0, 3, (4,), generator=gen))
        for _ in range(n)
    ]


def test_taylor_removes_a_channel_that_does_not_affect_the_loss_in_eval_mode() -> None:
    net, info = _setup(_filters())
    with torch.no_grad():
        net.conv1.weight[2] *= 10  # largest filter...
        net.conv2.weight[:, 2] = 0.0  # ...whose output nothing reads
    net.train()
    stats = (net.bn.running_mean.clone(), net.bn.running_var.clone())
    tracked = net.bn.num_batches_tracked.clone()
    taylor = TaylorImportance(_batches(), max_batches=2)
    scores = taylor(info, net, 3)
    assert _removed(taylor, net, info, 3) == (2,)
    assert _removed(MagnitudeImportance(1), net, info, 3) == (3,)
    # Eval mode: BN statistics untouched, training flag restored, no .grad left behind.
    assert torch.equal(net.bn.running_mean, stats[0]) and torch.equal(net.bn.running_var, stats[1])
    assert torch.equal(net.bn.num_batches_tracked, tracked)
    assert net.training
    assert all(p.grad is None for p in net.parameters())
    # Gradients are cached per weight version: same scores, and recomputed after a change.
    assert torch.equal(scores, taylor(info, net, 3))
    with torch.no_grad():
        net.conv2.weight[:, 2] = 1.0
    assert not torch.equal(scores, taylor(info, net, 3))


def test_taylor_without_data_is_a_clear_error() -> None:
    net, info = _setup(_filters())
    with pytest.raises(PruningError, match="no calibration batches"):
        TaylorImportance([])(info, net, 3)
    with pytest.raises(PruningError, match="TaylorImportance"):
        get_importance("taylor")
    with pytest.raises(PruningError, match="unknown importance criterion"):
        get_importance("entropy")


def test_random_is_seeded() -> None:
    net, info = _setup(_filters())
    a, b = RandomImportance(1)(info, net, 2), RandomImportance(1)(info, net, 2)
    assert torch.equal(a, b) and a.shape == (4,)
    assert not torch.equal(a, RandomImportance(2)(info, net, 2))


def test_grouped_conv_scores_remove_whole_positions() -> None:
    net = GroupedConvNet(groups=4)
    groups = build_groups(net, torch.randn(1, 3, 32, 32))
    info = next(g for g in groups if g.name == "grouped.0")
    for crit in ("l1", "l2", "bn_scale", "random", "cluster"):
        removed = removed_from_scores(info, get_importance(crit)(info, net, 48), 48)
        assert len(removed) == 16
        positions = {i % 16 for i in removed}
        assert len(positions) == 4, crit  # the same 4 positions in each of the 4 blocks
