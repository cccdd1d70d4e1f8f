"""Group values calibrated against accuracy: each group's measured sensitivity.

The criterion (L1, Taylor, ...) ranks the channels *inside* a group well, but it says little
about what one group's channels are worth against another's. Valued by summed magnitudes,
the knapsack came last at a 40% budget on CIFAR-10 resnet20 (73.07% against rl's 78.00%,
uniform's 77.12%, magnitude's 75.77%): it cut the groups whose channels are small but few
and essential down to their floors. So every step measures, with the proxy, what cutting
each group *alone* costs, and scales that group's value curve to the measurement:

- the *operating point*: the fraction ``f`` of its width each group would lose under the
  uniform plan that meets the step's target (clamped to [0.25, 0.75], so the drop is large
  enough to read above the proxy's noise), snapped to the group's channel grid;
- the *drop* ``d_g``: proxy score of the current model minus the proxy score with only
  group ``g`` cut to that width (its least important channels by the criterion), both
  after BatchNorm re-estimation, on the same images (a paired difference: far less noisy
  than either score);
- the *loss curve*: ``loss_g(k) = s_g * r_g(k) ** 2``, where ``r_g(k)`` is the share of the
  group's criterion score removed when it keeps its ``k`` best channels, and ``s_g`` makes
  ``loss_g`` equal ``d_g`` at the operating point. Quadratic, as the second-order view of
  pruning has it (removing more of a group costs more per channel): cutting a group to its
  floor costs what it measurably costs, not a linear extrapolation of its first channels.

A group's value at width ``k`` is then ``s_g - loss_g(k)`` (the constant does not change
any choice: each group takes exactly one width). A drop at or below zero (a group whose cut
the proxy cannot see) is raised to a floor of 5% of the median positive drop, so such a
group is cheap but never free. One proxy evaluation per prunable group and step; the
report's ``search.steps[i].sensitivity`` lists the drops.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from edgeprune.errors import PruningError
from edgeprune.pipeline.pruning.groups import GroupSet
from edgeprune.pipeline.pruning.plan import PruningPlan
from edgeprune.pipeline.pruning.prune import prune
from edgeprune.pipeline.search.task import StepTask, smallest_fitting, snap_down

#: The operating point's removed fraction is kept inside this range.
MIN_FRACTION, MAX_FRACTION = 0.25, 0.75
#: A drop the proxy cannot see counts as this share of the median positive drop.
FLOOR_SHARE = 0.05


@dataclass(frozen=True)
class Sensitivity:
    """One step's measured sensitivities.

    Attributes:
        fraction: Removed fraction of each group's width at the operating point.
        base_score: Proxy score of the current model (BN re-estimated).
        widths: Group id -> the width it was cut to for its measurement.
        drops: Group id -> measured proxy drop (may be <= 0).
        scales: Group id -> ``s_g`` of the loss curve (after the floor).
    """

    fraction: float
    base_score: float
    widths: Mapping[int, int]
    drops: Mapping[int, float]
    scales: Mapping[int, float]

    def summary(self) -> dict[str, Any]:
        return {
            "fraction": round(self.fraction, 4),
            "base_score": self.base_score,
            "groups": {
                str(g): {"width": self.widths[g], "drop": self.drops[g], "scale": self.scales[g]}
                for g in self.drops
            },
        }


def removed_share(scores: np.ndarray) -> np.ndarray:
    """``r[k]``: share of the group's score removed when it keeps its ``k`` best channels."""
    s = np.sort(np.clip(np.asarray(scores, dtype=np.float64), 0.0, None))[::-1]
    total = float(s.sum())
    if total <= 0:  # no information inside the group: every channel weighs the same
        s = np.ones_like(s)
        total = float(s.sum())
    kept = np.concatenate([[0.0], np.cumsum(s)]) / total
    return np.clip(1.0 - kept, 0.0, 1.0)


def operating_fraction(task: StepTask) -> float:
    """The removed fraction of the uniform plan that meets the step's target, clamped."""

    def plan_at(rho: float) -> dict[int, int]:
        return {g: snap_down(task, g, w * (1.0 - rho)) for g, w in task.widths.items()}

    keep = smallest_fitting(task, plan_at, 1.0)
    removed = [1.0 - keep[g] / w for g, w in task.widths.items() if w > 0]
    f = float(np.median(removed)) if removed else MIN_FRACTION
    return min(max(f, MIN_FRACTION), MAX_FRACTION)


def value_tables(task: StepTask, sens: Sensitivity) -> dict[int, np.ndarray]:
    """Per group, ``value[k] = s_g * (1 - r_g(k) ** 2)`` for ``k = 0..width``."""
    tables = {}
    for g in task.widths:
        r = removed_share(task.scores[g])
        tables[g] = sens.scales[g] * (1.0 - r**2)
    return tables


def by_name(sens: Sensitivity, groups: GroupSet) -> dict[str, tuple[float, float]]:
    """``{group name: (drop, scale)}``, to reuse for the same groups of another model."""
    names = {g.id: g.name for g in groups.prunable}
    return {names[g]: (sens.drops[g], sens.scales[g]) for g in sens.scales if g in names}


def measure(
    ctx: Any,
    model: nn.Module,
    groups: GroupSet,
    importance: Any,
    task: StepTask,
    known: Mapping[str, tuple[float, float]] | None = None,
) -> Sensitivity:
    """Cut each prunable group alone to the operating point and measure the proxy's drop.

    ``ctx`` is the run's :class:`~edgeprune.pipeline.run_context.RunContext` (its task
    scores a model after re-estimating BatchNorm). ``model`` is not modified. ``known``
    (:func:`by_name` of another model's measurement, e.g. the base's for the depth options,
    which differ from it by dropped blocks only) gives the groups it names their drop and
    scale without measuring them again.
    """
    fraction = operating_fraction(task)
    names = {g.id: g.name for g in groups.prunable}
    known = known or {}
    reused = {g: known[names[g]] for g in task.widths if names.get(g) in known}
    if len(reused) == len(task.widths):
        drops0 = {g: d for g, (d, _) in reused.items()}
        scales0 = {g: sc for g, (_, sc) in reused.items()}
        return Sensitivity(fraction, float("nan"), dict(task.widths), drops0, scales0)
    base_score = ctx.proxy_accuracy(copy.deepcopy(model))
    full = dict(task.widths)
    widths: dict[int, int] = {}
    drops: dict[int, float] = {}
    for g, w in full.items():
        if g in reused:
            widths[g], drops[g] = w, reused[g][0]
            continue
        k = snap_down(task, g, w * (1.0 - fraction))
        if k >= w:  # nothing to cut (a one-width grid): the group cannot move anyway
            widths[g], drops[g] = w, 0.0
            continue
        try:
            res = prune(model, groups, PruningPlan(keep={**full, g: k}), importance, verify=False)
        except PruningError:
            widths[g], drops[g] = w, 0.0
            continue
        widths[g] = k
        drops[g] = base_score - ctx.proxy_accuracy(res.model)
    positive = [d for d in drops.values() if d > 0]
    floor = FLOOR_SHARE * float(np.median(positive)) if positive else 1.0
    scales: dict[int, float] = {}
    for g, w in full.items():
        if g in reused:
            scales[g] = reused[g][1]
            continue
        r = removed_share(task.scores[g])[widths[g]] if widths[g] < w else 0.0
        drop = max(drops[g], floor)
        scales[g] = drop / (r**2) if r > 0 else drop / max(fraction**2, 1e-12)
        if not math.isfinite(scales[g]):
            scales[g] = drop
    return Sensitivity(fraction, base_score, widths, drops, scales)
