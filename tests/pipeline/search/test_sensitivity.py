"""Group values calibrated against accuracy: the measured sensitivity and its loss curve."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edgeprune.data import load_data
from edgeprune.models.testing import TinyConvNet
from edgeprune.pipeline.pruning.groups import build_groups
from edgeprune.pipeline.search import sensitivity
from edgeprune.pipeline.search.cost import Calibration, CostModel, LayerCost
from edgeprune.pipeline.search.task import StepTask
from edgeprune.pipeline.train import evaluate, train


def test_removed_share_counts_the_weakest_channels_first() -> None:
    r = sensitivity.removed_share(np.array([1.0, 3.0, 0.0, 6.0]))
    assert r.tolist() == pytest.approx([1.0, 0.4, 0.1, 0.0, 0.0])  # keep 0..4 best
    assert sensitivity.removed_share(np.zeros(4)).tolist() == pytest.approx(
        [1.0, 0.75, 0.5, 0.25, 0.0]
    )


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    data = load_data("digits")
    model = TinyConvNet(width=32)
    train(model, data, epochs=3, progress=False, augment=False)
    return model.eval(), data


def _task(model, groups) -> StepTask:
    widths = {g.id: g.width for g in groups.prunable}
    layers = [
        LayerCost(f"l{g}", 1, w, (), ((g, 1),), lambda ci, co: float(co)) for g, w in widths.items()
    ]
    cost = CostModel(layers, widths, 0.0, Calibration(unit=1.0))
    scores = {
        g.id: g_scores.numpy()
        for g in groups.prunable
        for g_scores in [torch.rand(g.width, generator=torch.Generator().manual_seed(g.id))]
    }
    return StepTask(
        widths=widths,
        grids={g: tuple(range(4, w + 1, 4)) for g, w in widths.items()},
        scores=scores,
        cost=cost,
        target=0.5 * sum(widths.values()),
    )


def test_each_groups_curve_passes_through_its_measured_drop(trained) -> None:
    model, data = trained
    groups = build_groups(model, torch.zeros(1, 3, 32, 32))
    calls = []

    def proxy(m):
        calls.append(1)
        return evaluate(m.eval(), data.val_x, data.val_y, data.mean, data.std)

    ctx = SimpleNamespace(proxy_accuracy=proxy)
    task = _task(model, groups)
    sens = sensitivity.measure(ctx, model, groups, "l1", task)
    assert len(calls) == 1 + len(task.widths)  # the model once, then each group alone
    assert sens.fraction == pytest.approx(0.5, abs=0.05)  # the uniform plan at half the cost
    tables = sensitivity.value_tables(task, sens)
    positive = [d for d in sens.drops.values() if d > 0]
    assert positive, "cutting half of a trained group costs accuracy"
    floor = sensitivity.FLOOR_SHARE * float(np.median(positive))
    for g, table in tables.items():
        assert np.all(np.diff(table) >= -1e-12)  # more channels are never worth less
        k = sens.widths[g]
        loss = table[-1] - table[k]
        assert loss == pytest.approx(max(sens.drops[g], floor), rel=1e-9)
    # Reused by name (the depth options), nothing is measured again.
    calls.clear()
    again = sensitivity.measure(ctx, model, groups, "l1", task, sensitivity.by_name(sens, groups))
    assert not calls and again.scales == sens.scales
