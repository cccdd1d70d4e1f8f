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
- When re-planning cycles between a plan over the window and one under it (a grid step of
  one group moves the latency by more than the window is wide; seen: 0.3578 over and
  0.3437 under a [0.3447, 0.3554] window, landed at 0.963 of the budget), :func:`fine_move`
  tries single-group steps from the measured tries, each predicted with its try's own
  measured/predicted correction, for one that lands inside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgeprune.pipeline.search.task import Keep, StepTask, higher_width, lower_width


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


def fine_move(
    task: StepTask, tries: Sequence[Mapping[str, Any]], window: tuple[float, float]
) -> Keep | None:
    """A plan one group's grid step away from a measured try, predicted inside ``window``.

    From a try under the window one group steps up (the most value gained wins); from a try
    over it one group steps down (the least value lost wins). Each move is predicted with
    the cost model scaled by its try's measured/predicted ratio (the local correction), and
    moves predicted in the inner half of the window beat those only inside it. Plans
    already measured are skipped; None when no single step lands inside.
    """
    lo, hi = window
    inner = (lo + 0.25 * (hi - lo), hi - 0.25 * (hi - lo))
    seen = {tuple(sorted(t["keep"].items())) for t in tries}
    best: tuple[tuple[bool, float], Keep] | None = None
    for t in tries:
        keep = dict(t["keep"])
        measured = float(t["measured"])
        if lo <= measured <= hi:
            continue
        miss = measured / max(task.cost.predict(keep), 1e-12)
        up = measured < lo
        for g, k in keep.items():
            if g not in task.grids:
                continue
            other = higher_width(task, g, k) if up else lower_width(task, g, k)
            if other is None:
                continue
            plan = {**keep, g: other}
            if tuple(sorted(plan.items())) in seen:
                continue
            predicted = task.cost.predict(plan) * miss
            if not lo <= predicted <= hi:
                continue
            value = task.total_value(plan)
            key = (inner[0] <= predicted <= inner[1], value)
            if best is None or key > best[0]:
                best = (key, plan)
    return None if best is None else best[1]
