"""The latency knapsack and the projection every searcher uses, on synthetic instances."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgeprune.latency.lut import fit_positive
from edgeprune.pipeline.search.cost import Calibration, CostModel, LayerCost
from edgeprune.pipeline.search.knapsack import project, solve_knapsack
from edgeprune.pipeline.search.magnitude import magnitude_plan
from edgeprune.pipeline.search.task import StepTask
from edgeprune.pipeline.search.uniform import uniform_plan


def _separable(rng: np.random.Generator, n_groups: int, width: int) -> tuple[StepTask, dict]:
    """Groups with their own layer each: cost = integer table of the kept width."""
    grid = tuple(range(2, width + 1, 2))
    tables = {g: {k: int(rng.integers(1, 6)) * k for k in grid} for g in range(n_groups)}
    layers = [
        LayerCost(f"l{g}", 1, width, (), ((g, 1),), lambda ci, co, t=tables[g]: float(t[co]))
        for g in range(n_groups)
    ]
    cost = CostModel(layers, dict.fromkeys(range(n_groups), width), 0.0, Calibration(unit=1.0))
    scores = {g: rng.random(width) * rng.uniform(0.2, 3) for g in range(n_groups)}
    full = cost.raw(dict.fromkeys(range(n_groups), width))
    task = StepTask(
        widths=dict.fromkeys(range(n_groups), width),
        grids=dict.fromkeys(range(n_groups), grid),
        scores=scores,
        cost=cost,
        target=0.55 * full,
    )
    return task, tables


def _brute_force(task: StepTask) -> float:
    groups = list(task.widths)
    best = -np.inf
    for combo in itertools.product(*(task.grids[g] for g in groups)):
        keep = dict(zip(groups, combo, strict=True))
        if task.fits(keep):
            best = max(best, task.total_value(keep))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_knapsack_finds_the_brute_force_optimum_on_separable_instances(seed: int) -> None:
    task, _ = _separable(np.random.default_rng(seed), n_groups=4, width=8)
    keep = solve_knapsack(task, bins=4000)
    assert task.fits(keep)
    assert task.total_value(keep) == pytest.approx(_brute_force(task))


def _coupled(rng: np.random.Generator) -> StepTask:
    """A chain g0 -> g1 -> g2 -> g3 with bilinear layer costs (non-separable)."""
    widths = {0: 16, 1: 16, 2: 32, 3: 32}
    layers = [LayerCost("stem", 3, 16, (), ((0, 1),), lambda ci, co: 3.0 * co)]
    for a, b in ((0, 1), (1, 2), (2, 3)):
        k = float(rng.uniform(0.5, 2.0))
        layers.append(
            LayerCost(f"l{a}{b}", widths[a], widths[b], ((a, 1),), ((b, 1),),
                      lambda ci, co, k=k: k * ci * co)
        )  # fmt: skip
    cost = CostModel(layers, widths, 10.0, Calibration(unit=1.0))
    return StepTask(
        widths=widths,
        grids={g: tuple(range(4, w + 1, 4)) for g, w in widths.items()},
        scores={g: rng.random(w) for g, w in widths.items()},
        cost=cost,
        target=0.4 * cost.raw(widths),
    )


@pytest.mark.parametrize("seed", range(4))
def test_knapsack_on_coupled_costs_meets_the_target_near_the_optimum(seed: int) -> None:
    task = _coupled(np.random.default_rng(seed))
    keep = solve_knapsack(task)
    assert task.fits(keep)
    assert task.total_value(keep) >= 0.97 * _brute_force(task)


def test_knapsack_retains_more_importance_than_uniform_and_magnitude() -> None:
    for seed in range(4):
        task = _coupled(np.random.default_rng(seed))
        ks = solve_knapsack(task)
        for other in (uniform_plan(task, task.widths), magnitude_plan(task)):
            assert task.fits(other)
            assert task.total_value(ks) >= task.total_value(other) - 1e-9


def test_projection_lands_on_the_target_from_both_sides() -> None:
    task = _coupled(np.random.default_rng(1))
    over = project(task, dict(task.widths))  # from the full model: step down
    assert task.fits(over)
    under = project(task, task.floor_plan())  # from the floor: grow back
    assert task.fits(under)
    # grown back as far as the target allows: any single step up no longer fits
    for plan in (over, under):
        for g in task.widths:
            bigger = [k for k in task.grids[g] if k > plan[g]]
            if bigger:
                assert not task.fits({**plan, g: bigger[0]})


def test_an_expensive_group_is_pruned_more_than_a_macs_driven_plan() -> None:
    """Two groups of equal MACs; one's channels cost 4x the latency: the latency plan cuts it."""
    widths = {0: 32, 1: 32}
    grids = {g: tuple(range(4, 33, 4)) for g in widths}
    rng = np.random.default_rng(0)
    scores = {g: 1 + 0.01 * rng.random(32) for g in widths}

    def model(weights: dict[int, float]) -> CostModel:
        layers = [
            LayerCost(f"l{g}", 1, 32, (), ((g, 1),), lambda ci, co, w=w: w * co)
            for g, w in weights.items()
        ]
        return CostModel(layers, widths, 0.0, Calibration(unit=1.0))

    lat, macs = model({0: 4.0, 1: 1.0}), model({0: 1.0, 1: 1.0})
    lat_plan = solve_knapsack(StepTask(widths, grids, scores, lat, 0.5 * lat.raw(widths)))
    macs_plan = solve_knapsack(StepTask(widths, grids, scores, macs, 0.5 * macs.raw(widths)))
    assert lat_plan[0] < macs_plan[0]
    assert lat_plan[0] < lat_plan[1]


def test_calibration_never_predicts_zero_or_less() -> None:
    # A fit that would want a negative offset (as the LUT once had: -0.061 ms) goes through
    # the origin instead, and small models stay positive.
    scale, offset = fit_positive([(1.0, 0.5), (2.0, 1.6), (3.0, 2.7)])
    assert offset >= 0 and scale > 0
    cal = Calibration(unit=1.0)
    for raw, ms in ((1.0, 0.5), (2.0, 1.6), (3.0, 2.7)):
        cal.add(raw, ms)
    assert cal.ms(0.01) > 0
    assert cal.raw_for(cal.ms(2.0)) == pytest.approx(2.0)


def test_projection_crosses_a_staircase_whose_single_steps_save_nothing() -> None:
    """Every channel count allowed (no rounding), cost paid per 16 channels (the runtime's
    staircase): stepping one channel down saves nothing, yet the plan must still fit."""
    widths = {0: 64, 1: 64}
    layers = [
        LayerCost(f"l{g}", 1, 64, (), ((g, 1),), lambda ci, co: float(-(-co // 16))) for g in widths
    ]
    cost = CostModel(layers, widths, 0.0, Calibration(unit=1.0))
    rng = np.random.default_rng(0)
    task = StepTask(
        widths,
        {g: tuple(range(1, 65)) for g in widths},
        {g: rng.random(64) for g in widths},
        cost,
        target=5.0,
    )
    keep = project(task, dict(widths))
    assert task.fits(keep)
    # landed on stair edges: no channel kept that the cost does not already pay for
    assert all(k % 16 == 0 for k in keep.values())
