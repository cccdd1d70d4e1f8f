"""The landing's rules: the step windows and which measured try is kept."""

import pytest

from edgeprune.pipeline.search.landing import pick_landing, step_aim, step_window


def test_the_final_window_is_within_the_tolerance_below_the_goal() -> None:
    assert step_window(1.0, 1.0, True, 0.03) == pytest.approx((0.97, 1.0))
    assert step_aim(1.0, True, 0.03) == pytest.approx(0.99)
    assert step_aim(1.2, False, 0.03) == 1.2


def test_an_intermediate_window_never_reaches_below_the_final_one() -> None:
    # far from the goal: 3x the tolerance under the target, the tolerance over it
    assert step_window(2.0, 1.0, False, 0.03) == pytest.approx((1.82, 2.06))
    # a target just above the goal: the lower edge stops at the final window's
    lo, hi = step_window(1.02, 1.0, False, 0.03)
    assert lo == pytest.approx(0.97) and hi == pytest.approx(1.0506)


def test_the_slowest_try_inside_the_window_is_kept() -> None:
    tries = [{"measured": 1.05}, {"measured": 0.98}, {"measured": 0.99}, {"measured": 0.90}]
    assert pick_landing(tries, (0.97, 1.0)) == ({"measured": 0.99}, True)
    # none inside: the slowest one under the top (most channels that still meet it)
    assert pick_landing([{"measured": 0.9}, {"measured": 0.95}], (0.97, 1.0)) == (
        {"measured": 0.95},
        False,
    )
    # all over: the fastest
    assert pick_landing([{"measured": 1.2}, {"measured": 1.1}], (0.97, 1.0)) == (
        {"measured": 1.1},
        False,
    )
    with pytest.raises(ValueError):
        pick_landing([], (0.97, 1.0))


def _two_groups():
    """Group 0 is coarse (16 per step), group 1 fine (1 per step): cost = channels kept."""
    from edgeprune.pipeline.search.cost import Calibration, CostModel, LayerCost
    from edgeprune.pipeline.search.task import StepTask

    layers = [
        LayerCost("a", 1, 64, (), ((0, 1),), lambda ci, co: 16.0 * co),
        LayerCost("b", 1, 8, (), ((1, 1),), lambda ci, co: 1.0 * co),
    ]
    widths = {0: 64, 1: 8}
    cost = CostModel(layers, widths, 0.0, Calibration(unit=1.0))
    return StepTask(
        widths=widths,
        grids={0: (16, 32, 48, 64), 1: tuple(range(1, 9))},
        scores={0: [1.0] * 64, 1: [1.0] * 8},
        cost=cost,
        target=600.0,
    )


def test_a_cycling_landing_finds_the_single_step_that_lands_inside() -> None:
    from edgeprune.pipeline.search.landing import fine_move

    task = _two_groups()
    # Measured as predicted: 32x16 + 4 = 516 under [560, 600]; 48x16 + 4 = 772 over it. No
    # step of the coarse group lands inside; the fine group cannot reach it from 516 either.
    under = {"keep": {0: 32, 1: 4}, "measured": 516.0}
    over = {"keep": {0: 48, 1: 4}, "measured": 772.0}
    assert fine_move(task, [under, over], (560.0, 600.0)) is None
    # A window the fine group reaches in one step from the under try: 516 -> 517.
    got = fine_move(task, [under, over], (517.0, 530.0))
    assert got == {0: 32, 1: 5}
    # The try's own miss scales every prediction: measured 10% over its prediction, the
    # step down from 48 lands inside at (32x16 + 4) x 1.1 = 567.6.
    slow = {"keep": {0: 48, 1: 4}, "measured": 772.0 * 1.1}
    assert fine_move(task, [slow], (560.0, 600.0)) == {0: 32, 1: 4}
    # Plans already measured are never proposed again.
    again = {"keep": {0: 32, 1: 4}, "measured": 567.6}
    assert fine_move(task, [slow, again], (560.0, 600.0)) is None
