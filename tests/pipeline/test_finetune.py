import copy

import pytest
import torch
import torch.nn.functional as F

from edgeprune.config import FinetuneConfig
from edgeprune.data import load_data
from edgeprune.models.testing import TinyConvNet
from edgeprune.pipeline.finetune import distill_, kd_loss
from edgeprune.pipeline.train import evaluate


def test_kd_loss_terms():
    torch.manual_seed(0)
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    # Student == teacher: the KL term vanishes, only the CE share remains.
    assert kd_loss(s, s, y, 2.0, 0.75).item() == pytest.approx(0.25 * F.cross_entropy(s, y).item())
    kl = F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean")
    expected = 0.75 * 4 * kl + 0.25 * F.cross_entropy(s, y)
    assert kd_loss(s, t, y, 2.0, 0.75).item() == pytest.approx(expected.item(), rel=1e-5)


def test_distill_keeps_the_best_validation_epoch_and_leaves_teacher_alone():
    data = load_data("digits", limit=300)
    torch.manual_seed(0)
    teacher = TinyConvNet(num_classes=data.num_classes).eval()
    teacher_state = copy.deepcopy(teacher.state_dict())
    student = TinyConvNet(num_classes=data.num_classes)
    cfg = FinetuneConfig(lr=0.05, batch_size=64)
    result = distill_(student, teacher, data, cfg, 2, seed=1)
    assert result is not None and result.epochs == 2
    best = max(row["val_acc"] for row in result.history)
    assert result.best_val_acc == best
    assert evaluate(student, data.val_x, data.val_y, data.mean, data.std) == pytest.approx(best)
    assert all(torch.equal(v, teacher_state[k]) for k, v in teacher.state_dict().items())
    assert distill_(student, teacher, data, cfg, 0) is None
