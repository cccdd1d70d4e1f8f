"""Step targets of a run's goal, and skipping the steps a model already meets."""

import pytest

from edgeprune.pipeline.search.schedule import Goal


def test_geometric_targets_end_on_the_goal():
    g = Goal("latency", start=1.0, value=0.25, steps=2)
    assert g.target(0) == pytest.approx(0.5)  # equal ratios: 1 -> 0.5 -> 0.25
    assert g.target(1) == g.target(5) == 0.25
    assert not g.is_final(0) and g.is_final(1)


def test_first_open_skips_the_steps_already_met():
    # Found in the 25% benchmark: depth pruning landed at 0.1857 ms, below the second
    # step's target (0.19 ms); planning onto it removed nothing and ended the search with
    # "nothing left to remove" while the budget (0.1786 ms) was still reachable.
    g = Goal("latency", start=0.2143, value=0.1786, steps=3)  # targets 0.2017, 0.1898, 0.1786
    assert g.target(1) > 0.1857 > g.value
    assert g.first_open(1, 0.1857) == 2 and g.is_final(2)
    # A model above the step's target keeps the step.
    assert g.first_open(0, 0.25) == 0
    assert g.first_open(1, 0.195) == 1
    # The final step is never skipped, even when met (the loop stops before it).
    assert g.first_open(0, 0.1) == 2
