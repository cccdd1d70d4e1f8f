"""Uniform baseline: the same pruning ratio in every group.

Each step raises one cumulative ratio ``rho`` (of the base widths) so that about
``step_channels`` more channels go: ``rho = (removed so far + step_channels) / base total``.
Every group keeps ``base_width * (1 - rho)`` rounded to the nearest multiple of the
channel multiple, clamped to ``[floor, current width]``. With a coarse multiple that
rounding can leave the step empty; then ``rho`` is raised to the smallest value that
removes something, so the baseline never stalls while there is capacity left.
"""

from __future__ import annotations

from edgeprune.pipeline.plan import channel_grid
from edgeprune.pipeline.search.base import (
    Candidate,
    OneShotSearcher,
    StepState,
    candidate_from_removal,
    channel_floor,
)


def uniform_keep(base_width: int, width: int, rho: float, multiple: int) -> int:
    """Width a group keeps at cumulative ratio ``rho`` (nearest on the channel grid)."""
    target = base_width * (1.0 - rho)
    snapped = min(channel_grid(base_width, multiple), key=lambda k: (abs(k - target), -k))
    return min(width, max(channel_floor(width, multiple), snapped))


def uniform_removal(
    base_widths: list[int], widths: list[int], step_channels: int, multiple: int
) -> list[int]:
    """Per-group removals of one uniform step (see the module docstring)."""
    base_total = sum(base_widths)

    def removal(rho: float) -> list[int]:
        return [
            w - uniform_keep(b, w, rho, multiple) for b, w in zip(base_widths, widths, strict=True)
        ]

    rho = min(1.0, (base_total - sum(widths) + step_channels) / base_total)
    out = removal(rho)
    if sum(out) > 0 or sum(removal(1.0)) == 0:
        return out
    lo, hi = rho, 1.0  # removal(lo) == 0 < removal(hi); removal grows with rho
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if sum(removal(mid)) > 0:
            hi = mid
        else:
            lo = mid
    return removal(hi)


class UniformSearcher(OneShotSearcher):
    """Same ratio everywhere, one candidate per step (reward only logged)."""

    name = "uniform"

    def _make_candidate(self, step: StepState, tag: str) -> Candidate:
        assert self.base_widths is not None
        removed = uniform_removal(
            list(self.base_widths.values()),
            list(step.widths.values()),
            step.step_channels,
            step.multiple,
        )
        return candidate_from_removal(step, removed, tag)
