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
