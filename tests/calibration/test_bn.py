import torch
from torch import nn

from edgeprune.calibration.bn import reestimate_bn_


def test_reestimate_matches_batch_statistics_and_keeps_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
    conv_w = model[0].weight.detach().clone()
    x = torch.randn(64, 3, 8, 8) * 3 + 1
    reestimate_bn_(model, [x[:32], x[32:]])
    with torch.no_grad():
        act = model[0](x)
    # Cumulative average over two equal batches = mean of the full set.
    assert torch.allclose(model[1].running_mean, act.mean(dim=(0, 2, 3)), atol=1e-5)
    assert not model.training
    assert torch.equal(model[0].weight, conv_w)
    assert model[1].momentum == 0.1
