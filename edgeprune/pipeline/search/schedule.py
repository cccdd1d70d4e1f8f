"""The goal of a compress run as a cost, and the step targets that lead to it.

NetAdapt and HALP step in latency, not in channels: each step has a latency target, and
the last targets the budget itself. Targets go geometrically (equal *ratios* per step, so
each step costs the model about the same share of its speed) or linearly from the
baseline's cost to the goal's.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.config import RunConfig
from edgeprune.errors import SearchError


@dataclass(frozen=True)
class Goal:
    """What the run must reach.

    Attributes:
        kind: ``latency`` (ms, measured), ``macs`` or ``channels`` (counted).
        start: The baseline's value.
        value: The goal (cost <= value).
        steps: Planned prune steps.
        schedule: ``geometric`` or ``linear``.
        offset: Step count at which this schedule starts (a search that starts again from
            the base with more blocks dropped schedules its steps anew from there).
    """

    kind: str
    start: float
    value: float
    steps: int
    schedule: str = "geometric"
    offset: int = 0

    def target(self, step: int) -> float:
        """Target of step ``step`` (0-based); steps past the plan target the goal itself."""
        step -= self.offset
        if step + 1 >= self.steps:
            return self.value
        t = (step + 1) / self.steps
        if self.schedule == "linear":
            return self.start + t * (self.value - self.start)
        return self.start * (self.value / self.start) ** t

    def is_final(self, step: int) -> bool:
        return step - self.offset + 1 >= self.steps

    def first_open(self, step: int, value: float, slack: float = 0.0) -> int:
        """The first step from ``step`` whose target lies below ``value`` (the final step at
        the latest). A step the model already meets (depth pruning or an earlier step landed
        below it), or lands in with ``slack`` (an intermediate step's window reaches
        ``(1 + slack) x`` its target), is skipped: planning onto it would remove nothing,
        which ends a search."""
        while not self.is_final(step) and self.target(step) * (1 + slack) >= value:
            step += 1
        return step


def goal_from(config: RunConfig, baseline_ms: float, base_macs: int, base_channels: int) -> Goal:
    """The run's goal in cost units (see :class:`Goal`)."""
    g, s = config.goal, config.search
    if g.sparsity is not None:
        return Goal(
            "channels", base_channels, (1 - g.sparsity) * base_channels, s.steps, s.schedule
        )
    if g.flops_ratio is not None:
        return Goal("macs", base_macs, g.flops_ratio * base_macs, s.steps, s.schedule)
    budget = g.budget_ms if g.budget_ms is not None else baseline_ms / float(g.speedup or 2.0)
    if budget >= baseline_ms:
        raise SearchError(
            f"the budget {budget:.3f} ms is at or above the baseline's measured p50 "
            f"{baseline_ms:.3f} ms: nothing to prune — the model already meets it; lower "
            "--budget-ms or raise --speedup"
        )
    return Goal("latency", baseline_ms, budget, s.steps, s.schedule)
