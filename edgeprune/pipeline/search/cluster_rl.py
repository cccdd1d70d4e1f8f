"""``cluster-rl``: RL over each group's number of filter clusters (Wu, Song & Zeng, 2023).

The second seed paper clusters a layer's filters and keeps one representative per set of
similar filters, so a small filter that does something no other does survives; the RL's
action per layer is the *cluster dimension*, the number of clusters, which sets the
layer's width. Here:

- the action is, per group, the fraction of its channels (of the first step's widths)
  kept as clusters; the policy is the mean of those fractions, started from the first
  step's uniform plan (no group favoured) and carried across the steps;
- a candidate samples ``mean + N(0, 1) * noise_ratio * U(0, 1)`` per group, scales the
  fractions down together until the plan fits the step's latency target (so the sampled
  *shape* survives; a greedy cut would pull every sample back to the knapsack's plan),
  snaps them to the channel grid and is projected onto the target like every other
  candidate; what it learns from is the evaluated plan's fractions;
- which channels stay inside a group is the ``cluster`` criterion
  (:class:`~edgeprune.pipeline.pruning.importance.ClusterImportance`: k-means into as many
  clusters as channels kept, the filter nearest each centroid kept): the driver uses it
  whatever ``--criterion`` says;
- the update, buffer, seeds, collapse guard and resume are the RL searcher's
  (:mod:`.rl`): an advantage-weighted step of the mean, each fraction's change clipped to
  at most ``c / 2`` (a fraction, not a ratio: a ratio clip would pin a group the first
  plan cut to 3% at 3% for the whole run).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgeprune.pipeline.search.knapsack import project
from edgeprune.pipeline.search.rl import RLSearcher, RLSettings
from edgeprune.pipeline.search.task import Keep, StepTask, smallest_fitting, snap_up
from edgeprune.pipeline.search.uniform import uniform_plan

#: Std of the exploration noise on a kept fraction (times U(0, 1)), in fraction units.
NOISE_RATIO = 0.1
#: Kept fractions stay in [MIN_RATIO, 1].
MIN_RATIO = 0.02


class ClusterRLSearcher(RLSearcher):
    """RL over kept-cluster fractions per group; see the module docstring."""

    def __init__(self, settings: RLSettings | None = None, seed: int = 0) -> None:
        super().__init__(settings, seed, name="cluster-rl", reward_kind="accuracy")
        self.base: dict[int, int] | None = None  # widths the fractions are of

    def _fresh_policy(self, task: StepTask) -> np.ndarray:
        if self.base is None:
            self.base = {int(g): int(w) for g, w in task.widths.items()}
        plan = project(task, uniform_plan(task, task.widths))
        return np.array(self._action(task, plan), dtype=np.float64)

    def _sample(self, task: StepTask) -> Keep:
        assert self.pd is not None and self.base is not None
        noise = self.rng.standard_normal(self.pd.shape[0]) * NOISE_RATIO * self.rng.random()
        ratios = np.clip(self.pd + noise, MIN_RATIO, 1.0)
        base = self.base

        def scaled(shrink: float) -> Keep:
            return {
                g: snap_up(task, g, min(task.widths[g], (1 - shrink) * r * base[g]))
                for g, r in zip(task.widths, ratios, strict=True)
            }

        return project(task, smallest_fitting(task, scaled, 1.0))

    def _action(self, task: StepTask, keep: Keep) -> tuple[float, ...]:
        assert self.base is not None
        return tuple(keep[g] / self.base[g] for g in task.widths)

    def _apply(self, direction: np.ndarray) -> np.ndarray:
        assert self.pd is not None
        s = self.settings
        change = s.step_length * direction
        if s.ppo_clip > 0:
            change = np.clip(change, -s.ppo_clip / 2, s.ppo_clip / 2)
        return np.clip(self.pd + change, MIN_RATIO, 1.0)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["base"] = None if self.base is None else [[g, w] for g, w in self.base.items()]
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        base = state.get("base")
        self.base = None if base is None else {int(g): int(w) for g, w in base}
