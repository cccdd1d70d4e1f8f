"""Reward functions on hand-computed values, input validation, and the factory."""

from __future__ import annotations

import math

import pytest

from edgeprune.errors import SearchError
from edgeprune.pipeline.search.reward import (
    Metrics,
    RewardSettings,
    flops_reward,
    latency_reward,
    make_reward,
    params_reward,
)


def test_latency_reward_both_sides_matches_mnasnet_formula() -> None:
    # 2x over budget with w=-0.07: 0.8 * 2 ** -0.07
    assert latency_reward(0.8, 8.0, 4.0) == pytest.approx(0.8 * 2**-0.07)
    assert latency_reward(0.8, 8.0, 4.0) == pytest.approx(0.762110, abs=1e-6)
    # under budget is rewarded a little in "both" mode
    assert latency_reward(0.8, 2.0, 4.0) == pytest.approx(0.8 * 0.5**-0.07)
    assert latency_reward(0.8, 2.0, 4.0) > 0.8
    assert latency_reward(0.8, 4.0, 4.0) == pytest.approx(0.8)


def test_latency_reward_over_mode_only_penalises_above_budget() -> None:
    assert latency_reward(0.8, 2.0, 4.0, mode="over") == 0.8
    assert latency_reward(0.8, 4.0, 4.0, mode="over") == 0.8
    # the hard-ish MnasNet variant: w = -1 above budget
    assert latency_reward(0.8, 5.0, 4.0, w=-1.0, mode="over") == pytest.approx(0.8 * 4 / 5)


def test_latency_reward_zero_exponent_ignores_latency() -> None:
    assert latency_reward(0.7, 100.0, 1.0, w=0.0) == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"accuracy": 1.5, "latency_ms": 1.0, "budget_ms": 1.0}, "accuracy"),
        ({"accuracy": -0.1, "latency_ms": 1.0, "budget_ms": 1.0}, "accuracy"),
        ({"accuracy": math.nan, "latency_ms": 1.0, "budget_ms": 1.0}, "accuracy"),
        ({"accuracy": 0.5, "latency_ms": 0.0, "budget_ms": 1.0}, "latency_ms"),
        ({"accuracy": 0.5, "latency_ms": 1.0, "budget_ms": -2.0}, "budget_ms"),
        ({"accuracy": 0.5, "latency_ms": 1.0, "budget_ms": 1.0, "w": 0.1}, "w must"),
        ({"accuracy": 0.5, "latency_ms": 1.0, "budget_ms": 1.0, "mode": "under"}, "mode"),
    ],
)
def test_latency_reward_rejects_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        latency_reward(**kwargs)


def test_flops_and_params_rewards_are_accuracy_plus_coef_times_reduction() -> None:
    # 40% fewer MACs, coef 0.5: 0.9 + 0.5 * 0.4
    assert flops_reward(0.9, 60, 100, 0.5) == pytest.approx(1.1)
    assert params_reward(0.9, 250, 1000, 0.2) == pytest.approx(0.9 + 0.2 * 0.75)
    assert flops_reward(0.9, 100, 100, 0.5) == pytest.approx(0.9)  # unpruned: no bonus
    with pytest.raises(ValueError, match="base_macs"):
        flops_reward(0.9, 60, 0, 0.5)
    with pytest.raises(ValueError, match="coef"):
        params_reward(0.9, 60, 100, -1.0)


def test_make_reward_builds_each_kind() -> None:
    m = Metrics(accuracy=0.8, latency_ms=8.0, macs=50, params=400)
    lat = make_reward(RewardSettings(kind="latency", budget_ms=4.0))
    assert lat(m) == pytest.approx(0.8 * 2**-0.07)
    over = make_reward(RewardSettings(kind="latency", budget_ms=16.0, mode="over"))
    assert over(m) == pytest.approx(0.8)
    fl = make_reward(RewardSettings(kind="flops", base_macs=100, flops_coef=0.4))
    assert fl(m) == pytest.approx(0.8 + 0.4 * 0.5)
    pa = make_reward(RewardSettings(kind="params", base_params=1000, params_coef=1.0))
    assert pa(m) == pytest.approx(0.8 + 0.6)


def test_make_reward_reports_missing_constants() -> None:
    with pytest.raises(SearchError, match="budget_ms"):
        make_reward(RewardSettings(kind="latency"))
    with pytest.raises(SearchError, match="base_macs"):
        make_reward(RewardSettings(kind="flops"))
    with pytest.raises(SearchError, match="unknown reward kind"):
        make_reward(RewardSettings(kind="speed"))
    with pytest.raises(SearchError, match="mode"):
        make_reward(RewardSettings(budget_ms=1.0, mode="sideways"))
    lat = make_reward(RewardSettings(budget_ms=1.0))
    with pytest.raises(ValueError, match="latency_ms"):
        lat(Metrics(accuracy=0.5, latency_ms=None, macs=1, params=1))


def test_reward_settings_from_config_reads_mappings_and_objects() -> None:
    s = RewardSettings.from_config({"budget_ms": 3.0, "w": -0.5, "other": 1, "mode": None})
    assert (s.budget_ms, s.w, s.mode) == (3.0, -0.5, "both")

    class Cfg:
        budget_ms = 2.0
        mode = "over"

    s2 = RewardSettings.from_config(Cfg(), kind="flops", base_macs=10)
    assert (s2.kind, s2.budget_ms, s2.mode, s2.base_macs) == ("flops", 2.0, "over", 10)
