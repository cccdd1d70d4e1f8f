"""Where a step must land, and which measured plan it keeps: the landing's rules, pure.

A step's plan is measured and re-planned until the measurement falls in the step's
*window* (:func:`step_window`); :func:`pick_landing` then keeps one of the measured tries.
The driver (:func:`edgeprune.pipeline.search.driver._land`) does the measuring; these
functions hold the rules, so they are tested without a runtime.

- The last step lands within ``tol`` below the goal: ``[(1 - tol) goal, goal]``; it aims
  a third of the tolerance inside, so measurement noise stays in the window.
- An intermediate step need not be exact, but an undershoot throws accuracy away: its
  window is ``[(1 - 3 tol) target, (1 + tol) target]``, and never reaches below the final
  window, so no step ends the search "goal met" with budget left unused (seen: 0.892).
- Kept: the slowest try inside the window (most channels for the same verdict); else the
  slowest under its top; else (every try over) the fastest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def step_aim(target: float, final: bool, tol: float) -> float:
    """What the step's plans are projected onto (a little inside the final window)."""
    return target * (1 - tol / 3) if final else target


def step_window(target: float, goal: float, final: bool, tol: float) -> tuple[float, float]:
    """The measured values a step's landing accepts."""
    if final:
        return (1 - tol) * target, target
    return max((1 - 3 * tol) * target, (1 - tol) * goal), (1 + tol) * target


def pick_landing(
    tries: Sequence[Mapping[str, Any]], window: tuple[float, float]
) -> tuple[Mapping[str, Any], bool]:
    """The try to keep, and whether it is inside the window. ``tries`` hold ``measured``."""
    if not tries:
        raise ValueError("a landing needs at least one measured try")
    lo, hi = window
    inside = [t for t in tries if lo <= t["measured"] <= hi]
    under = [t for t in tries if t["measured"] <= hi]
    if inside:
        return max(inside, key=lambda t: t["measured"]), True
    if under:
        return max(under, key=lambda t: t["measured"]), False
    return min(tries, key=lambda t: t["measured"]), False
