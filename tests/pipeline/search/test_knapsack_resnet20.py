"""The knapsack on a real latency table: resnet20 on the local ONNX Runtime CPU profile."""

from __future__ import annotations

import pytest
import torch

from edgeprune.latency.lut import LatencyLUT
from edgeprune.models import load_model
from edgeprune.pipeline.pruning.groups import build_groups
from edgeprune.pipeline.pruning.importance import get_importance
from edgeprune.pipeline.pruning.plan import channel_grid
from edgeprune.pipeline.search.cost import latency_cost_model
from edgeprune.pipeline.search.knapsack import solve_knapsack
from edgeprune.pipeline.search.magnitude import magnitude_plan
from edgeprune.pipeline.search.task import StepTask, normalize_scores
from edgeprune.pipeline.search.uniform import uniform_plan
from edgeprune.profiles import load_profile


@pytest.mark.slow
def test_knapsack_meets_the_lut_target_on_resnet20_and_keeps_more_importance() -> None:
    torch.manual_seed(0)
    model = load_model("resnet20", 10).eval()
    profile = load_profile("cpu-ort-1t")
    lut = LatencyLUT.build(model, profile, channel_multiple=16, max_points_per_axis=4)
    groups = build_groups(model, torch.zeros(1, 3, 32, 32))
    cost = latency_cost_model(groups, lut, model)
    l1 = get_importance("l1")
    widths = {g.id: g.width for g in groups.prunable}
    full = cost.predict(widths)
    for fraction in (0.7, 0.5):
        task = StepTask(
            widths=widths,
            grids={g.id: channel_grid(g.width, 16, g.channel_step) for g in groups.prunable},
            scores={g.id: normalize_scores(l1(g, model, g.width).numpy()) for g in groups.prunable},
            cost=cost,
            target=fraction * full,
        )
        ks = solve_knapsack(task)
        assert task.fits(ks), fraction
        assert cost.predict(ks) > 0.9 * task.target  # uses the budget, does not overshoot it
        for other in (magnitude_plan(task), uniform_plan(task, widths)):
            assert task.fits(other)
            assert task.total_value(ks) >= task.total_value(other), fraction
