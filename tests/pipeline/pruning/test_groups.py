"""Channel groups: ids, members, frozen groups and refused models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import PruningError
from edgeprune.models.resnet import resnet20_option_a
from edgeprune.models.testing import DataDependentNet, GroupedConvNet, TinyConvNet
from edgeprune.pipeline.pruning.groups import build_groups, count_macs_params
from edgeprune.pipeline.pruning.plan import PruningPlan
from edgeprune.pipeline.pruning.prune import prune

X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _by_name(groups):
    return {g.name: g for g in groups}


def test_tiny_groups_members_widths_and_classifier_frozen() -> None:
    model = TinyConvNet()
    groups = build_groups(model, X)
    by = _by_name(groups)
    assert [g.id for g in groups] == list(range(len(groups)))
    # The residual add couples the stem with conv_a/bn_a; down.0 consumes them.
    assert set(by["stem.0"].members) == {"stem.0", "stem.1", "conv_a", "bn_a", "down.0"}
    assert by["stem.0"].width == 16 and by["down.0"].width == 32
    assert by["fc"].frozen and "classifier" in by["fc"].frozen_reason
    assert [g.name for g in groups.prunable] == ["stem.0", "down.0"]
    assert all(0 < g.macs_share <= 1 for g in groups.prunable)
    assert (groups.macs, groups.params) == count_macs_params(model, X)
    assert groups.output_shapes == ((1, 10),)


def test_ids_are_deterministic_across_builds_and_copies() -> None:
    a = build_groups(TinyConvNet(), X)
    b = build_groups(TinyConvNet(), torch.zeros(1, 3, 32, 32))
    assert [g.to_dict() for g in a] == [g.to_dict() for g in b]


def test_build_does_not_touch_the_model() -> None:
    model = TinyConvNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    build_groups(model, X)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_option_a_zero_pad_group_is_frozen_with_reason() -> None:
    groups = build_groups(resnet20_option_a(), X)
    by = _by_name(groups)
    stem = by["conv1"]
    assert stem.frozen and stem.frozen_reason.startswith("unsafe to prune")
    # The per-block groups (conv1 of each block) stay prunable.
    assert len(groups.prunable) == 9
    assert all(g.name.endswith(".conv1") for g in groups.prunable)
    with pytest.raises(PruningError, match="frozen"):
        PruningPlan({stem.id: 8}).validate(groups)


def test_grouped_conv_groups_have_channel_step() -> None:
    by = _by_name(build_groups(GroupedConvNet(groups=4), X))
    assert by["stem.0"].channel_step == 4  # feeds the grouped conv's inputs
    assert by["grouped.0"].channel_step == 4
    assert by["head.0"].channel_step == 1


def test_ignored_layers_freeze_their_group() -> None:
    by = _by_name(build_groups(TinyConvNet(), X, ignored_layers=["conv_a"]))
    assert by["stem.0"].frozen and "conv_a" in by["stem.0"].frozen_reason
    assert not by["down.0"].frozen
    with pytest.raises(PruningError, match="not layers of"):
        build_groups(TinyConvNet(), X, ignored_layers=["nope"])


def test_data_dependent_control_flow_is_refused() -> None:
    with pytest.raises(PruningError, match=r"data-dependent control flow.*make the forward static"):
        build_groups(DataDependentNet(), X)


class _BranchOnInput(nn.Module):
    """Both branches reachable: which runs depends on the input's sign."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a(x) if x.mean() > 0 else self.b(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_branch_on_input_sign_is_refused() -> None:
    with pytest.raises(PruningError, match="data-dependent control flow"):
        build_groups(_BranchOnInput(), torch.ones(1, 3, 32, 32))


class _OddOut(TinyConvNet):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, str]:  # type: ignore[override]
        return super().forward(x), "meta"


def test_bad_models_and_inputs_raise_one_clear_error() -> None:
    with pytest.raises(PruningError, match="does not run on an input of shape"):
        build_groups(TinyConvNet(), torch.randn(1, 1, 32, 32))
    with pytest.raises(PruningError, match="output holds a str"):
        build_groups(_OddOut(), X)


def test_prune_refuses_a_model_that_does_not_match_its_groups() -> None:
    model = TinyConvNet()
    groups = build_groups(model, X)
    gid = _by_name(groups)["down.0"].id
    pruned = prune(model, groups, PruningPlan({gid: 16})).model
    with pytest.raises(PruningError, match="does not match its groups"):
        prune(pruned, groups, PruningPlan({gid: 8}))


def test_a_group_pruned_to_one_channel_stays_prunable_when_retraced() -> None:
    # Multi-step pruning re-traces the pruned model; a group at its minimum width must keep
    # its place (not turn "unsafe") so the group list matches the base model's.
    from edgeprune.pipeline.pruning.prune import prune

    model = TinyConvNet()
    groups = build_groups(model, X)
    target = groups.prunable[0]
    pruned = prune(model, groups, PruningPlan({target.id: 1}), "l1").model
    again = build_groups(pruned, X)
    assert [g.name for g in again.prunable] == [g.name for g in groups.prunable]
    assert again[target.id].width == 1 and not again[target.id].frozen
