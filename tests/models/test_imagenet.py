"""The 224-px zoo: torchvision's architectures (parameter counts, state_dict keys), prunable,
with their residual blocks found."""

from __future__ import annotations

import pytest
import torch

from edgeprune.models import create_model, native_size
from edgeprune.pipeline.pruning.blocks import find_blocks
from edgeprune.pipeline.pruning.groups import build_groups

# torchvision.models.<name>(num_classes=1000): sum(p.numel() for p in m.parameters())
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "mobilenetv2_224": 3_504_872}
KEYS = {
    "resnet18": ("layer2.0.downsample.0.weight", "layer4.1.bn2.running_var", "fc.bias"),
    "resnet50": ("layer1.0.downsample.1.weight", "layer3.5.conv3.weight", "fc.weight"),
    "mobilenetv2_224": (
        "features.0.0.weight", "features.1.conv.1.weight", "features.2.conv.3.running_mean",
        "features.18.1.weight", "classifier.1.weight",
    ),
}  # fmt: skip
BLOCKS = {"resnet18": 5, "resnet50": 12, "mobilenetv2_224": 10}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_224px_models_match_torchvision_and_prune(name: str) -> None:
    model = create_model(name, 1000).eval()
    assert native_size(name) == 224
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]
    assert set(KEYS[name]) <= set(model.state_dict())
    x = torch.zeros(1, 3, 224, 224)
    groups = build_groups(model, x)
    assert groups.output_shapes == ((1, 1000),) and len(groups.prunable) > 10
    assert len(find_blocks(model, x)) == BLOCKS[name]
