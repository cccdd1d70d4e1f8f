"""Searchers behind one ask/tell contract, and the registry that builds them by name.

Every searcher's candidates meet the step's cost target by the cost model, so they differ
only in *where* the channels go:

========= ==================================== ===========================================
name      searcher                             reward the driver computes (``reward_kind``)
========= ==================================== ===========================================
rl        :class:`RLSearcher` (RL-Pruner) on    ``accuracy`` (the run's reward.kind)
          top of the knapsack and magnitude
rl-flops  :class:`RLSearcher`, same policy      ``flops``: accuracy + coef x MACs reduction
random    :class:`RLSearcher`, learning off     ``accuracy`` (the ablation of ``rl``)
cluster-  :class:`ClusterRLSearcher`: RL over  ``accuracy``; channels kept by the
rl        kept-cluster fractions per group      ``cluster`` criterion
knapsack  :class:`KnapsackSearcher` (HALP)      logged only; one candidate per step
magnitude :class:`MagnitudeSearcher`            logged only; one candidate per step
uniform   :class:`UniformSearcher`              logged only; one candidate per step
========= ==================================== ===========================================

See :mod:`edgeprune.pipeline.search.base` for the contract and
:mod:`edgeprune.pipeline.search.driver` for the loop that drives them.
"""

from __future__ import annotations

from typing import Any

from edgeprune.errors import SearchError
from edgeprune.pipeline.search.base import (
    Candidate,
    Outcome,
    Searcher,
    settings_from_config,
)
from edgeprune.pipeline.search.cluster_rl import ClusterRLSearcher
from edgeprune.pipeline.search.knapsack import KnapsackSearcher, project, solve_knapsack
from edgeprune.pipeline.search.magnitude import MagnitudeSearcher
from edgeprune.pipeline.search.rl import RLSearcher, RLSettings, epsilon_at, policy_step
from edgeprune.pipeline.search.uniform import UniformSearcher

SEARCHER_REWARD: dict[str, str] = {
    "rl": "accuracy",
    "rl-flops": "flops",
    "random": "accuracy",
    "cluster-rl": "accuracy",
    "knapsack": "accuracy",
    "magnitude": "accuracy",
    "uniform": "accuracy",
}
SEARCHER_NAMES: tuple[str, ...] = tuple(SEARCHER_REWARD)


def make_searcher(name: str, config: Any = None, seed: int = 0) -> Searcher:
    """Build a searcher by registry name.

    Args:
        name: One of :data:`SEARCHER_NAMES`.
        config: A mapping or object carrying ``RLSettings`` fields by name (for ``rl`` and
            ``rl-flops``); missing fields keep their defaults, others are ignored.
        seed: Seeds the RL searcher's generator (the baselines are deterministic).

    Returns:
        The searcher; its ``reward_kind`` says which reward the loop must compute.

    Raises:
        SearchError: unknown name, or a setting out of range.
    """
    if name in ("rl", "rl-flops", "random"):
        learn = {"learn": False} if name == "random" else {}
        settings = settings_from_config(RLSettings, config, **learn)
        return RLSearcher(settings, seed, name=name, reward_kind=SEARCHER_REWARD[name])
    if name == "cluster-rl":
        return ClusterRLSearcher(settings_from_config(RLSettings, config), seed)
    if name == "uniform":
        return UniformSearcher()
    if name == "magnitude":
        return MagnitudeSearcher()
    if name == "knapsack":
        return KnapsackSearcher()
    raise SearchError(f"unknown searcher {name!r}; use one of {', '.join(SEARCHER_NAMES)}")


__all__ = [
    "SEARCHER_NAMES",
    "SEARCHER_REWARD",
    "Candidate",
    "ClusterRLSearcher",
    "KnapsackSearcher",
    "MagnitudeSearcher",
    "Outcome",
    "RLSearcher",
    "RLSettings",
    "Searcher",
    "UniformSearcher",
    "epsilon_at",
    "make_searcher",
    "policy_step",
    "project",
    "solve_knapsack",
]
