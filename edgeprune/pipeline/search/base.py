"""The searcher contract (ask/tell) and the channel arithmetic all searchers share.

A searcher decides, step by step, how many channels each prunable group keeps. It never
touches a model: the driver (:mod:`edgeprune.pipeline.search.driver`) builds, evaluates and
applies candidates. Every step has a cost target (latency in ms for latency goals) and
every candidate a searcher proposes meets it by the cost model (see
:mod:`~edgeprune.pipeline.search.knapsack`), so candidates compete on accuracy alone:

.. code-block:: python

    searcher = make_searcher(name, config, seed)        # or load_state_dict() on resume
    while not done:
        task = StepTask(widths, grids, scores, cost_model, target_ms, index, final)
        searcher.start_step(task)
        while batch := searcher.propose():               # [] = the step's proposals are done
            outcomes = [evaluate(c) for c in batch]      # build, BN re-estimate, val acc,
            searcher.observe(outcomes)                   # predicted latency, MACs, reward
        kept = searcher.choose()
        accepted = apply(kept) + land on the measured target -> Outcome
        if not searcher.end_step(accepted, previous_accuracy):
            redo the step (start_step again with the same task)

Rules of the contract:

- ``task.widths`` maps group id -> current width for the prunable groups only, in a fixed
  order, with the same ids at every step (groups never vanish: each keeps at least one
  channel). ``task.grids`` lists the widths a group may keep (the device's channel grid).
- ``observe`` takes the outcomes of proposed candidates (matched by ``Candidate.tag``), in
  any order and in one or several calls; ``propose`` refuses while some are outstanding.
  A candidate that could not be built: report it with ``reward=float("-inf")``; it never
  becomes a choice.
- Two candidates with equal ``keep`` give the same model: the loop may cache outcomes by
  :meth:`Candidate.key` (it must still report one outcome per proposed tag).
- ``end_step(accepted, previous_accuracy)``: ``accepted.accuracy`` is the proxy accuracy of
  the applied candidate before fine-tuning, ``previous_accuracy`` that of the model the
  step started from, measured the same way. Returning False means "collapse: redo".
- ``state_dict()`` is JSON-serialisable (RNG state included); ``load_state_dict`` on a
  searcher made by ``make_searcher`` with the same name continues exactly where it was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, TypeVar, runtime_checkable

from edgeprune.errors import SearchError
from edgeprune.pipeline.search.task import StepTask


@dataclass(frozen=True)
class Candidate:
    """One proposed architecture: channels kept per group (absolute, current model).

    Attributes:
        keep: Group id -> channels kept. Do not mutate.
        removed_channels: Channels the candidate removes in total (may be below the
            step's target when groups hit their floor; 0 = nothing left to prune).
        pd: The pruning distribution that produced it (RL only), in group order.
        tag: Unique name inside a run, e.g. ``"step3/epoch1/sample4"``.
    """

    keep: Mapping[int, int]
    removed_channels: int
    pd: tuple[float, ...] | None = None
    tag: str = ""

    def key(self) -> tuple[tuple[int, int], ...]:
        """Hashable architecture signature: equal keys give equal models."""
        return tuple(sorted((int(g), int(k)) for g, k in self.keep.items()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (group ids as list pairs: JSON keys are strings)."""
        return {
            "keep": [[int(g), int(k)] for g, k in self.keep.items()],
            "removed_channels": int(self.removed_channels),
            "pd": None if self.pd is None else [float(p) for p in self.pd],
            "tag": self.tag,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Candidate:
        pd = d.get("pd")
        return cls(
            keep={int(g): int(k) for g, k in d["keep"]},
            removed_channels=int(d["removed_channels"]),
            pd=None if pd is None else tuple(float(p) for p in pd),
            tag=str(d.get("tag", "")),
        )


@dataclass(frozen=True)
class Outcome:
    """The evaluation of one candidate, as the loop reports it to the searcher.

    Attributes:
        candidate: The candidate that was evaluated.
        reward: From the run's reward function; ``-inf`` marks a failed candidate.
        accuracy: Validation-proxy top-1 in [0, 1].
        latency_ms: Predicted or measured p50 latency, None when not estimated.
        macs: Multiply-accumulates of the candidate.
        params: Parameter count of the candidate.
    """

    candidate: Candidate
    reward: float
    accuracy: float
    latency_ms: float | None = None
    macs: int = 0
    params: int = 0


@runtime_checkable
class Searcher(Protocol):
    """Ask/tell searcher over per-group channel counts (see the module docstring)."""

    name: str
    reward_kind: str

    def start_step(self, task: StepTask) -> None:
        """Begin a prune step (or redo one)."""
        ...

    def propose(self) -> list[Candidate]:
        """Next batch of candidates to evaluate; ``[]`` when the step has no more."""
        ...

    def observe(self, outcomes: Sequence[Outcome]) -> None:
        """Report evaluated candidates."""
        ...

    def choose(self) -> Candidate:
        """The candidate to apply for this step."""
        ...

    def end_step(self, accepted: Outcome, previous_accuracy: float) -> bool:
        """Close the step; False asks the loop to roll back and redo it."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state for exact resume."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


T = TypeVar("T")


def settings_from_config(cls: type[T], config: Any, **overrides: Any) -> T:
    """Build the dataclass ``cls`` from a mapping or an object with its field names.

    Fields the config does not have keep their defaults; the config's other fields are
    ignored (the run config carries much more than one searcher's settings).
    """
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if isinstance(config, Mapping):
            if f.name in config and config[f.name] is not None:
                values[f.name] = config[f.name]
        elif config is not None and getattr(config, f.name, None) is not None:
            values[f.name] = getattr(config, f.name)
    values.update(overrides)
    return cls(**values)


# --------------------------------------------------------------------------- channels


def water_fill(shares: Sequence[float], caps: Sequence[float], total: float) -> list[float]:
    """Split ``total`` proportionally to ``shares`` with per-entry caps.

    Entries that would exceed their cap are pinned at it and the rest is re-split among
    the others (so the sum is ``min(total, sum(caps))``).
    """
    out = [0.0] * len(shares)
    active = [i for i, c in enumerate(caps) if c > 0]
    remaining = min(float(total), float(sum(caps)))
    while active and remaining > 1e-12:
        weight = sum(max(shares[i], 0.0) for i in active)
        if weight <= 0:  # all shares zero: fall back to capacity-proportional
            weights = {i: float(caps[i]) for i in active}
            weight = sum(weights.values())
        else:
            weights = {i: max(shares[i], 0.0) for i in active}
        alloc = {i: remaining * weights[i] / weight for i in active}
        full = [i for i in active if alloc[i] >= caps[i] - out[i]]
        if not full:
            for i in active:
                out[i] += alloc[i]
            break
        for i in full:
            remaining -= caps[i] - out[i]
            out[i] = float(caps[i])
        active = [i for i in active if i not in full]
    return out


def candidate_from_keep(
    task: StepTask, keep: Mapping[int, int], tag: str, pd: tuple[float, ...] | None = None
) -> Candidate:
    """A :class:`Candidate` keeping ``keep`` (channels removed counted against the widths)."""
    plan = {int(g): int(keep[g]) for g in task.widths}
    removed = sum(w - plan[g] for g, w in task.widths.items())
    return Candidate(keep=plan, removed_channels=int(removed), pd=pd, tag=tag)


def check_task(task: StepTask) -> None:
    """Raise SearchError naming what is wrong with a step's task."""
    if not task.widths:
        raise SearchError("no prunable groups: every group is frozen or ignored")
    for gid, w in task.widths.items():
        grid = task.grids.get(gid)
        if int(w) != w or w < 1:
            raise SearchError(f"group {gid} has width {w!r}; widths must be integers >= 1")
        if not grid or list(grid) != sorted(grid) or grid[-1] > w:
            raise SearchError(f"group {gid}: its grid {grid!r} must ascend and end <= {w}")
        if gid not in task.scores or len(task.scores[gid]) != w:
            raise SearchError(f"group {gid} needs {w} importance scores")
    if not (math.isfinite(task.target) and task.target > 0):
        raise SearchError(f"the step target must be a positive number, got {task.target!r}")


def check_state_kind(state: Mapping[str, Any], expected: str) -> None:
    """Refuse to load another searcher's state (a resume with a changed config)."""
    kind = state.get("kind") if isinstance(state, Mapping) else None
    if kind != expected:
        raise SearchError(
            f"the checkpoint holds state of searcher {kind!r}, not {expected!r}; "
            "resume with the same --searcher, or start a new run directory"
        )


class OneShotSearcher:
    """Shared machinery of the baselines: one deterministic candidate per step.

    Subclasses implement :meth:`_make_candidate`. ``observe`` records the outcome (for
    the log) but does not change the choice; ``end_step`` always accepts (no guard).
    """

    name = "one-shot"
    reward_kind = "accuracy"

    def __init__(self) -> None:
        self.step_index = 0
        self._task: StepTask | None = None
        self._candidate: Candidate | None = None
        self._proposed = False
        self.last_outcome: Outcome | None = None

    def start_step(self, task: StepTask) -> None:
        check_task(task)
        self._task = task
        self._candidate = None
        self._proposed = False
        self.last_outcome = None

    def propose(self) -> list[Candidate]:
        if self._proposed:
            return []
        self._proposed = True
        return [self.choose()]

    def observe(self, outcomes: Sequence[Outcome]) -> None:
        self._require_step("observe")
        for out in outcomes:
            if self._candidate is None or out.candidate.tag != self._candidate.tag:
                raise SearchError(f"outcome for {out.candidate.tag!r}, which was not proposed")
            self.last_outcome = out

    def choose(self) -> Candidate:
        task = self._require_step("choose")
        if self._candidate is None:
            self._candidate = self._make_candidate(task, f"step{self.step_index}/{self.name}")
        return self._candidate

    def end_step(self, accepted: Outcome, previous_accuracy: float) -> bool:
        self._require_step("end_step")
        self.step_index += 1
        self._task = None
        return True

    def _make_candidate(self, task: StepTask, tag: str) -> Candidate:
        raise NotImplementedError

    def _require_step(self, what: str) -> StepTask:
        if self._task is None:
            raise SearchError(f"{what}() called outside a step; call start_step() first")
        return self._task

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.name, "version": 2, "step_index": self.step_index}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_kind(state, self.name)
        try:
            self.step_index = int(state["step_index"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SearchError(
                f"corrupt searcher state in the checkpoint ({exc!r}); start a new run directory"
            ) from exc
