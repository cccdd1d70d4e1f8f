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


def test_a_search_started_again_schedules_its_steps_anew():
    """Depth revisited after step 3: the new start's schedule begins at step 3, so the next
    step is its first target, not the budget in one cut."""
    g = Goal("latency", start=1.0, value=0.25, steps=2, offset=3)
    assert g.target(3) == pytest.approx(0.5) and not g.is_final(3)
    assert g.target(4) == 0.25 and g.is_final(4)
    assert g.first_open(3, 0.9) == 3


def test_the_next_depth_option_has_more_blocks_and_is_reachable():
    from edgeprune.pipeline.search.driver import _deeper_option
    from edgeprune.pipeline.search.state import SearchState

    options = [
        {"blocks": 0, "dropped": [], "reachable": True},
        {"blocks": 2, "dropped": ["a", "b"], "reachable": True},
        {"blocks": 4, "dropped": ["a", "b", "c", "d"], "reachable": False},
        {"blocks": 6, "dropped": list("abcdef"), "reachable": True},
    ]
    st = SearchState(
        phase="search", step=3, redos=0, baseline_ms=1.0, baseline_stats={}, budget_ms=0.1,
        goal_kind="latency", goal_value=0.1, value=0.2, latency_ms=0.2, macs=1, params=1,
        sparsity=0.5, accuracy=0.5, baseline_proxy_accuracy=0.9, removed_base={},
        survivors={}, multiple=1, depth={"options": options}, dropped_blocks=("a", "b"),
    )  # fmt: skip
    assert _deeper_option(st) == list("abcdef")  # 4 blocks cannot reach: skipped
    assert _deeper_option(st.replace(dropped_blocks=tuple("abcdef"))) is None
    assert _deeper_option(st.replace(depth=None)) is None


def test_a_step_whose_window_the_model_is_in_is_skipped():
    # seen: 4 blocks dropped measured 0.378 ms, the first step's target 0.3698 ms with a
    # window up to 0.381 ms: the step kept every channel and the search ended "out of reach"
    g = Goal("latency", start=0.378, value=0.355, steps=3)
    assert g.target(0) < 0.378 < g.target(0) * 1.03
    assert g.first_open(0, 0.378) == 0
    assert g.first_open(0, 0.378, slack=0.03) == 1
