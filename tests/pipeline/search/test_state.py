"""The run's state survives a JSON round trip, and a foreign checkpoint is refused."""

from __future__ import annotations

import json

import pytest

from edgeprune.errors import SearchError
from edgeprune.pipeline.search.state import SearchState, StepRecord


def _state() -> SearchState:
    step = StepRecord(
        step=1, target=0.5, final=False, candidates=3, best_reward=0.7, chosen="step0/x",
        chosen_reward=0.7, landing_tries=({"predicted": 0.49, "measured": 0.51},),
        proxy_accuracy_before_ft=0.6, val_accuracy_after_ft=None, proxy_accuracy_after_ft=0.7,
        predicted_ms=0.49, latency_ms=0.51, value=0.51, macs=10, params=5, widths={"0": 8},
    )  # fmt: skip
    return SearchState(
        phase="search", step=1, redos=0, baseline_ms=1.0, baseline_stats={"p50_ms": 1.0},
        budget_ms=0.5, goal_kind="latency", goal_value=0.5, value=0.51, latency_ms=0.51,
        macs=10, params=5, sparsity=0.5, accuracy=0.7, baseline_proxy_accuracy=0.9,
        removed_base={"0": [1, 3]}, survivors={"0": [0, 2]}, multiple=16, steps=(step,),
        calibration=((1.0, 0.9),),
    )  # fmt: skip


def test_state_round_trips_through_json_and_is_frozen() -> None:
    st = _state()
    again = SearchState.from_dict(json.loads(json.dumps(st.to_dict())))
    assert again == st
    with pytest.raises(AttributeError):
        st.step = 2  # type: ignore[misc]
    assert st.replace(step=2).step == 2 and st.step == 1


def test_checkpoint_of_another_version_is_refused() -> None:
    d = _state().to_dict()
    d["version"] = 1
    with pytest.raises(SearchError, match="another edgeprune version"):
        SearchState.from_dict(d)
    d = _state().to_dict()
    del d["steps"]
    with pytest.raises(SearchError, match="corrupt"):
        SearchState.from_dict(d)
