"""Searchers behind one ask/tell contract, and the registry that builds them by name.

======== ================================= ==========================================
name     searcher                          reward the loop computes (``reward_kind``)
======== ================================= ==========================================
rl       :class:`RLSearcher` (RL-Pruner)   ``latency``: accuracy x (latency/budget)^w
rl-flops :class:`RLSearcher`, same policy  ``flops``: accuracy + coef x MACs reduction
uniform  :class:`UniformSearcher`          ``latency`` (logged only; never steers it)
magnitude :class:`MagnitudeSearcher`       ``latency`` (logged only; never steers it)
======== ================================= ==========================================

See :mod:`edgeprune.pipeline.search.base` for the loop that drives them.
"""

from __future__ import annotations

from typing import Any

from edgeprune.errors import SearchError
from edgeprune.pipeline.search.base import (
    Candidate,
    Outcome,
    Searcher,
    allocate_removal,
    settings_from_config,
)
from edgeprune.pipeline.search.magnitude import MagnitudeSearcher, MagnitudeSettings
from edgeprune.pipeline.search.rl import RLSearcher, RLSettings, epsilon_at, update_pd
from edgeprune.pipeline.search.uniform import UniformSearcher

SEARCHER_REWARD: dict[str, str] = {
    "rl": "latency",
    "rl-flops": "flops",
    "uniform": "latency",
    "magnitude": "latency",
}
SEARCHER_NAMES: tuple[str, ...] = tuple(SEARCHER_REWARD)


def make_searcher(name: str, config: Any = None, seed: int = 0) -> Searcher:
    """Build a searcher by registry name.

    Args:
        name: ``rl``, ``rl-flops``, ``uniform`` or ``magnitude``.
        config: A mapping or object carrying settings by field name (``RLSettings``
            fields for ``rl``/``rl-flops``, ``MagnitudeSettings`` fields for
            ``magnitude``); missing fields keep their defaults, others are ignored.
        seed: Seeds the RL searcher's generator (the baselines are deterministic).

    Returns:
        The searcher; its ``reward_kind`` says which reward the loop must compute.

    Raises:
        SearchError: unknown name, or a setting out of range.
    """
    if name in ("rl", "rl-flops"):
        settings = settings_from_config(RLSettings, config)
        return RLSearcher(settings, seed, name=name, reward_kind=SEARCHER_REWARD[name])
    if name == "uniform":
        return UniformSearcher()
    if name == "magnitude":
        return MagnitudeSearcher(settings_from_config(MagnitudeSettings, config))
    raise SearchError(f"unknown searcher {name!r}; use one of {', '.join(SEARCHER_NAMES)}")


__all__ = [
    "SEARCHER_NAMES",
    "SEARCHER_REWARD",
    "Candidate",
    "MagnitudeSearcher",
    "MagnitudeSettings",
    "Outcome",
    "RLSearcher",
    "RLSettings",
    "Searcher",
    "UniformSearcher",
    "allocate_removal",
    "epsilon_at",
    "make_searcher",
    "update_pd",
]
