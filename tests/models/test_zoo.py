"""The built-in zoo: shapes, sizes, the structure pruning relies on, and ONNX export parity."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgeprune.errors import ModelError
from edgeprune.models import ZOO, ModelSpec, create_model, model_names
from edgeprune.models.mobilenet import SqueezeExcite
from edgeprune.models.resnet import resnet20_option_a
from edgeprune.models.testing import DataDependentNet, GroupedConvNet, TinyConvNet

# Parameter counts (num_classes=10) in millions: published figures where they exist
# (ResNet-20 0.27M, ResNet-56 0.85M, DenseNet-BC-40 ~0.18M), loose bounds otherwise.
PARAMS_M = {
    "resnet20": (0.26, 0.28),
    "resnet56": (0.84, 0.87),
    "vgg16_bn": (14.0, 15.5),
    "mobilenetv2": (2.1, 2.4),
    "mobilenetv3_small": (1.3, 1.7),
    "googlenet": (0.3, 0.5),
    "densenet": (0.15, 0.22),
}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _with_bn_stats(model: nn.Module) -> nn.Module:
    """Run two train-mode batches so BN running stats are not the trivial (0, 1)."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 32, 32))
    return model.eval()


def test_zoo_names_are_public_list() -> None:
    # the 224-px models are checked in test_imagenet.py
    assert model_names() == sorted([*PARAMS_M, "resnet18", "resnet50", "mobilenetv2_224"])
    assert "resnet20_option_a" not in ZOO


@pytest.mark.parametrize("name", sorted(PARAMS_M))
def test_forward_shape_and_size(name: str) -> None:
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    lo, hi = PARAMS_M[name]
    assert lo <= _n_params(create_model(name)) / 1e6 <= hi


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
@pytest.mark.parametrize("name", sorted(PARAMS_M))
def test_onnx_export_matches_torch(name: str, tmp_path) -> None:
    model = _with_bn_stats(create_model(name, num_classes=7))
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        model,
        (x,),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (2, 7)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'resnet21'.*resnet20.*vgg16_bn"):
        create_model("resnet21")


def test_resnet_option_b_has_projection_shortcuts() -> None:
    model = create_model("resnet20")
    one_by_one = [
        m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
    ]
    assert len(one_by_one) == 2  # entries of stages 2 and 3


def test_resnet_option_a_zero_pads_its_shortcuts() -> None:
    model = resnet20_option_a(num_classes=5).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert _n_params(model) < _n_params(create_model("resnet20", num_classes=5))
    # The stage-2 entry block's shortcut is x[:, :, ::2, ::2] zero-padded 16 -> 32 channels.
    block = model.layer2[0]
    x = torch.randn(1, 16, 32, 32)
    with torch.no_grad():
        main = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        out = block(x)
    shortcut = out - main  # before the final ReLU where out > 0
    mask = out > 0
    assert torch.allclose(
        shortcut[:, 8:24][mask[:, 8:24]], x[:, :, ::2, ::2][mask[:, 8:24]], atol=1e-5
    )
    assert torch.allclose(shortcut[:, :8][mask[:, :8]], torch.zeros(()), atol=1e-5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_mobilenetv3_uses_se_hardswish_and_cifar_strides() -> None:
    model = create_model("mobilenetv3_small")
    assert sum(isinstance(m, SqueezeExcite) for m in model.modules()) == 9
    assert any(isinstance(m, nn.Hardswish) for m in model.modules())
    assert model.features[0][0].stride == (1, 1)
    with torch.no_grad():
        assert model.features(torch.randn(1, 3, 32, 32)).shape[-2:] == (4, 4)


def test_concat_models_concatenate() -> None:
    goog = create_model("googlenet")
    inception = goog.features[3]
    x = torch.randn(1, inception.b1[0].in_channels, 8, 8)
    branches = [inception.b1, inception.b2, inception.b3, inception.b4]
    assert inception(x).shape[1] == sum(b(x).shape[1] for b in branches)
    dense = create_model("densenet")
    layer = dense.features[0][0]
    x = torch.randn(1, layer.bn1.num_features, 8, 8)
    out = layer(x)
    assert torch.equal(out[:, : x.shape[1]], x)  # input passes through, growth appended
    assert out.shape[1] == x.shape[1] + 12


def test_model_spec_round_trip_and_build() -> None:
    spec = ModelSpec("resnet20", num_classes=3)
    again = ModelSpec.from_dict(spec.to_dict())
    assert again == spec
    assert again.build()(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    user = ModelSpec("edgeprune.models.testing:TinyConvNet", num_classes=4)
    assert isinstance(user.build(), TinyConvNet)
    with pytest.raises(ModelError, match="num_classes"):
        ModelSpec("resnet20", num_classes=0)
    with pytest.raises(ModelError, match="expected keys"):
        ModelSpec.from_dict({"name": "resnet20", "classes": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "vgg16_bn"  # type: ignore[misc]


def test_tiny_models() -> None:
    x = torch.randn(2, 3, 32, 32)
    for factory in (TinyConvNet, GroupedConvNet, DataDependentNet):
        assert factory(num_classes=3)(x).shape == (2, 3)
    grouped = [
        m
        for m in GroupedConvNet().modules()
        if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels
    ]
    assert grouped and grouped[0].groups in (2, 4)


def test_data_dependent_net_switches_branch_on_input() -> None:
    model = DataDependentNet().eval()
    ran: list[str] = []
    model.branch_pos.register_forward_hook(lambda *_: ran.append("pos"))
    model.branch_neg.register_forward_hook(lambda *_: ran.append("neg"))
    # The stem ends in ReLU, so its output sum is > 0 unless everything is clipped; a
    # strongly negative bias on the stem BN makes it all zero.
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
        model.stem[1].bias.fill_(-1e6)
        model(torch.randn(1, 3, 32, 32))
    assert ran == ["pos", "neg"]
