"""Residual blocks found by probing: exact removal, shapes kept, user models by structure."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import PruningError
from edgeprune.models import load_model
from edgeprune.pipeline.pruning.blocks import drop_blocks, find_blocks
from edgeprune.pipeline.pruning.groups import build_groups
from edgeprune.pipeline.pruning.plan import plan_from_ratios
from edgeprune.pipeline.pruning.prune import prune

X = torch.zeros(1, 3, 32, 32)


def _trained_like(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so a wrong removal shows."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))
    return model.eval()


def _zero_branch(model: nn.Module, layer: str) -> nn.Module:
    z = copy.deepcopy(model)
    for p in z.get_submodule(layer).parameters(recurse=False):
        p.data.zero_()
    return z


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_dropping_a_block_equals_zeroing_its_residual_branch(name):
    model = _trained_like(load_model(name, 10))
    blocks = find_blocks(model, X)
    assert blocks
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for b in blocks:
        # the branch's closing layer is the last layer with weights the block runs
        with torch.no_grad():
            ref = _zero_branch(model, b.layers[-1])(x)
            out = drop_blocks(model, [b.name])(x)
        assert (out - ref).abs().max().item() <= 1e-5 * max(ref.abs().max().item(), 1.0), b.name


def test_resnet20_offers_the_blocks_that_keep_their_shape_only():
    blocks = find_blocks(load_model("resnet20", 10), X)
    names = [b.name for b in blocks]
    # the first block of layer2 and layer3 downsamples (stride 2, more channels): never offered
    assert names == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1",
                     "layer3.2"]  # fmt: skip
    assert {b.stage for b in blocks} == {"layer1", "layer2", "layer3"}


def test_models_without_residual_blocks_offer_none():
    assert find_blocks(load_model("vgg16_bn", 10), X) == ()
    assert find_blocks(load_model("edgeprune.models.testing:TinyConvNet", 10), X) == ()


class _Unit(nn.Module):
    """A user's residual unit with an unusual name and a same-shape plain sibling."""

    def __init__(self, c: int, residual: bool) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.n = nn.BatchNorm2d(c)
        self.b = nn.Conv2d(c, c, 1)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(F.relu(self.n(self.a(x))))
        return x + y if self.residual else y


class _UserNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.trunk = nn.Sequential(_Unit(8, True), _Unit(8, False), _Unit(8, True))
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.trunk(self.stem(x)), 1).flatten(1))


def test_user_model_blocks_are_found_by_structure_not_by_class_name():
    model = _UserNet().eval()
    names = [b.name for b in find_blocks(model, X)]
    # trunk.1 keeps its shape but is not residual; trunk (the stage) is not one block
    assert names == ["trunk.0", "trunk.2"]
    dropped = drop_blocks(model, names)
    assert isinstance(dropped.trunk[0], nn.Identity) and isinstance(model.trunk[0], _Unit)


def test_channels_prune_on_a_model_without_blocks():
    model = _trained_like(load_model("resnet20", 10))
    reduced = drop_blocks(model, ["layer1.0", "layer2.2"])
    groups = build_groups(reduced, X)
    assert not any(m.startswith("layer1.0.") for g in groups for m in g.members)
    plan = plan_from_ratios(groups, {g.id: 0.5 for g in groups.prunable}, 4)
    out = prune(reduced, groups, plan).model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_unknown_block_name_is_refused():
    with pytest.raises(PruningError, match="find_blocks"):
        drop_blocks(load_model("resnet20", 10), ["layer9.0"])
