"""Plans, rounding, and pruned models that compute the original function minus the removed
channels, on every zoo model, an option-A ResNet and a user-style grouped-conv model."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import nn

from edgeprune.errors import PruningError
from edgeprune.models import ZOO, create_model
from edgeprune.models.resnet import resnet20_option_a
from edgeprune.models.testing import GroupedConvNet, TinyConvNet
from edgeprune.pipeline.pruning.groups import GroupSet, build_groups
from edgeprune.pipeline.pruning.plan import PruningPlan, channel_grid, plan_from_ratios, round_keep
from edgeprune.pipeline.pruning.prune import prune
from edgeprune.pipeline.pruning.surgery import zero_removed_

FACTORIES = {name: (lambda n=name: create_model(n)) for name in sorted(ZOO)}
FACTORIES["resnet20_option_a"] = resnet20_option_a
FACTORIES["grouped_conv_user"] = GroupedConvNet
X1 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
_CACHE: dict[str, tuple[nn.Module, GroupSet]] = {}


def _realistic_bn_(model: nn.Module) -> nn.Module:
    """Give BN layers data statistics so activations are O(1) (fresh models can shrink the
    signal to 1e-10, where any absolute tolerance passes)."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average over the batches below
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32, generator=gen))
    return model.eval()


def _model_and_groups(name: str) -> tuple[nn.Module, GroupSet]:
    if name not in _CACHE:
        torch.manual_seed(0)
        model = _realistic_bn_(FACTORIES[name]())
        _CACHE[name] = (model, build_groups(model, X1))
    return _CACHE[name]


def _out_width(model: nn.Module, layer: str) -> int:
    m = model.get_submodule(layer)
    return int(getattr(m, "out_channels", getattr(m, "out_features", -1)))


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_random_plan_equals_original_with_removed_channels_zeroed(name: str) -> None:
    model, groups = _model_and_groups(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = random.Random(hash(name) % 1000)
    multiple = 1 if rng.random() < 0.5 else 8
    ratios = {g.id: rng.uniform(0.3, 1.0) for g in groups.prunable}
    plan = plan_from_ratios(groups, ratios, multiple)
    assert plan.keep, "the plan should prune something"
    result = prune(model, groups, plan, "l1")

    for gid, keep in plan.keep.items():
        info = groups[gid]
        assert len(result.removed[gid]) == info.width - keep
        assert _out_width(result.model, info.name) == keep
    # The input model is untouched.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    reference = copy.deepcopy(model)
    zero_removed_(reference, {g.id: g for g in groups}, result.removed)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref, out, full = reference(x), result.model(x), model(x)
    diff = (out - ref).abs().max().item()
    effect = (out - full).abs().max().item()
    # float32 rounding grows with the outputs (resnet50's untrained logits reach ~10)
    assert diff <= 1e-5 * max(1.0, ref.abs().max().item())
    # The removal changes the output by orders of magnitude more than the residual: the
    # comparison can tell a right cut from a wrong one at this output scale.
    assert diff <= 1e-3 * effect, (diff, effect)


@pytest.mark.parametrize("multiple", [8, 16])
@pytest.mark.parametrize("name", ["mobilenetv2", "googlenet", "grouped_conv_user"])
def test_rounding_holds_for_every_pruned_group(name: str, multiple: int) -> None:
    model, groups = _model_and_groups(name)
    rng = random.Random(multiple)
    plan = plan_from_ratios(
        groups, {g.id: rng.uniform(0.0, 1.0) for g in groups.prunable}, multiple
    )
    pruned = prune(model, groups, plan, "l2").model
    for info in groups.prunable:
        kept = _out_width(pruned, info.name)
        assert kept == plan.kept(info)
        assert kept in channel_grid(info.width, multiple, info.channel_step)
        # Whole multiples; below one multiple, quarter multiples (see channel_grid).
        assert kept == info.width or kept % (multiple if kept >= multiple else multiple // 4) == 0


def test_round_keep_rule() -> None:
    assert round_keep(64, 0.5, 16) == 32
    assert round_keep(64, 0.6, 16) == 32  # 38.4 -> nearest multiple
    assert round_keep(64, 0.4, 16) == 32  # 25.6 -> nearest multiple
    assert round_keep(64, 0.01, 16) == 4  # below one multiple: quarter multiples
    assert round_keep(64, 0.2, 16) == 12
    assert round_keep(64, 1.0, 16) == 64
    assert round_keep(24, 1.0, 16) == 24  # never more than the width
    assert round_keep(24, 0.9, 16) == 24  # the width itself is on the grid
    assert round_keep(40, 0.7, 16) == 32
    assert round_keep(10, 0.0, 1) == 1
    assert channel_grid(3, 16) == (3,)  # narrower than a quarter multiple: keep all


def test_grouped_conv_keeps_equal_groups() -> None:
    model, groups = _model_and_groups("grouped_conv_user")
    stem = next(g for g in groups if g.name == "stem.0")
    result = prune(model, groups, PruningPlan({stem.id: 20}), "l1")
    removed = result.removed[stem.id]
    assert len(removed) == 12
    block = stem.width // 4
    positions = [{i % block for i in removed if i // block == b} for b in range(4)]
    assert all(p == positions[0] for p in positions)
    assert result.model.get_submodule("grouped.0").in_channels == 20


def test_prune_is_deterministic() -> None:
    model = TinyConvNet()
    groups = build_groups(model, X1)
    plan = plan_from_ratios(groups, {g.id: 0.5 for g in groups.prunable}, 8)
    a, b = prune(model, groups, plan, "cluster"), prune(model, groups, plan, "cluster")
    assert dict(a.removed) == dict(b.removed)
    with torch.no_grad():
        assert torch.equal(a.model(X1), b.model(X1))


def test_plan_round_trips_through_dict() -> None:
    plan = PruningPlan({3: 16, 1: 8}, channel_multiple=8)
    again = PruningPlan.from_dict(plan.to_dict())
    assert again == plan and hash(again) == hash(plan)
    assert list(again.keep) == [1, 3]
    with pytest.raises(PruningError, match="not a pruning plan"):
        PruningPlan.from_dict({"keep": [1, 2]})
    with pytest.raises(PruningError, match="format"):
        PruningPlan.from_dict({"format": 99, "keep": {}})
    with pytest.raises(PruningError, match="channel_multiple"):
        PruningPlan({}, channel_multiple=0)


def test_bad_plans_raise_one_clear_error_each() -> None:
    model = TinyConvNet()
    groups = build_groups(model, X1)
    down = next(g for g in groups if g.name == "down.0")
    fc = next(g for g in groups if g.name == "fc")
    cases = [
        (PruningPlan({99: 4}), "unknown group 99"),
        (PruningPlan({down.id: 0}), r"outside \[1, 32\]"),
        (PruningPlan({down.id: 33}), r"outside \[1, 32\]"),
        (PruningPlan({fc.id: 5}), "frozen"),
        (PruningPlan({down.id: 12}, channel_multiple=8), "not on the channel grid"),
    ]
    for plan, message in cases:
        with pytest.raises(PruningError, match=message):
            prune(model, groups, plan)
    with pytest.raises(PruningError, match="outside"):
        plan_from_ratios(groups, {down.id: 1.5})
    with pytest.raises(PruningError, match="unknown group id"):
        plan_from_ratios(groups, {42: 0.5})
    with pytest.raises(PruningError, match="unknown importance criterion"):
        prune(model, groups, PruningPlan({down.id: 16}), "l3")
