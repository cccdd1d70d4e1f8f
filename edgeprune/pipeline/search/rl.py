"""The RL-Pruner policy: a pruning distribution over groups, learned across the steps.

Follows the public RL-Pruner code (Wang & Kindratenko, arXiv 2411.06463) where it is
specific, and ``docs/ARCHITECTURE.md`` ("The search") where we differ:

- PD starts proportional to group width (``reinitialize_PD`` in the reference code) and
  carries from step to step (the collapse guard alone resets it).
- Each candidate PD is ``PD + N(0, 1) * noise * U(0, 1)`` (one U per candidate), clamped
  at ``prob_floor`` and renormalised. Where the reference removes a fixed number of
  channels split by PD, here the split is of the fewest channels that meet the step's cost
  target (water-filled by PD, snapped to the channel grid), then *projected* onto it
  (:func:`~edgeprune.pipeline.search.knapsack.project`). Every candidate of a step has the
  same predicted latency, so the reward is the proxy accuracy alone (``accuracy``; the
  MnasNet latency-exponent reward stays an option and ``rl-flops`` is the paper's FLOPs
  reward).
- The first epoch of every step also proposes the one-shot plans for the same target: the
  knapsack's (per-group normalised scores, and raw group sums), global magnitude's and
  uniform's, each projected onto the target like a sample (grown back while it fits).
- **What is learned is what was evaluated**: a candidate's action is the distribution of
  the plan that was scored (its removals per group, after projection), not the sample it
  came from; many samples project onto one plan.
- **An update every RL epoch, from advantages** (REINFORCE with a mean baseline, as PPO
  uses advantages): ``A_i = (r_i - mean r) / std r`` over the epoch's scored candidates,
  ``d = sum_i A_i (a_i - PD) / sum_i |A_i|`` (toward the better plans, away from the worse),
  ``PD' = renorm(max(PD + step_length * d, floor))``, then the PPO clip of ``PD' / PD`` to
  ``[1 - c, 1 + c]``. ``learn=False`` (searcher ``random``) keeps PD where it started: the
  same proposals and projection with learning off, the ablation that tells whether the
  policy adds anything.
- A replay buffer keeps the best ``buffer_size`` scored rows of the step; the kept
  candidate is the best (epsilon-greedy over the buffer when ``epsilon`` > 0; it decays
  over the first ``epsilon_decay_fraction`` of the steps).
- Collapse guard: if the accepted accuracy is more than ``collapse_drop`` (relative) below
  the previous step's, PD is reset and the step redone, at most ``max_redos`` times.
- ``history`` holds PD at the start and after every accepted step (the report plots it).

Defaults are the run config's (``edgeprune.config.SearchConfig``): the library, the CLI
and a searcher built here run the same search.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from edgeprune.config import SearchConfig
from edgeprune.errors import SearchError
from edgeprune.pipeline.search.base import (
    Candidate,
    Outcome,
    candidate_from_keep,
    check_state_kind,
    check_task,
    water_fill,
)
from edgeprune.pipeline.search.knapsack import project, solve_knapsack
from edgeprune.pipeline.search.magnitude import magnitude_plan
from edgeprune.pipeline.search.task import Keep, StepTask, smallest_fitting, snap_up
from edgeprune.pipeline.search.uniform import uniform_plan

EPSILON_SCHEDULES: tuple[str, ...] = ("cosine", "linear", "constant")


def _cfg(name: str) -> Any:
    """The run config's default of a search field: one source for API, CLI and tests."""
    return SearchConfig.model_fields[name].default


@dataclass(frozen=True)
class RLSettings:
    """Hyper-parameters of the RL searcher (CPU-sized defaults; see :meth:`paper`).

    Attributes:
        rl_epochs: RL epochs per prune step (paper 10).
        samples: Candidates per RL epoch (paper 10).
        noise: Std of the Gaussian noise on PD, times U(0, 1).
        step_length: How far PD moves along the epoch's advantage direction.
        ppo_clip: c in the clip of ``PD' / PD`` to ``[1 - c, 1 + c]``; 0 disables.
        prob_floor: Lower clamp of PD entries.
        epsilon: Initial chance to keep a random buffer row instead of the best.
        epsilon_schedule: ``cosine``, ``linear`` or ``constant``.
        epsilon_decay_fraction: Epsilon reaches 0 after this fraction of the steps.
        total_steps_estimate: Expected number of prune steps (for the epsilon schedule).
        collapse_drop: Relative accuracy drop that triggers the collapse guard.
        max_redos: Redos of one step the guard may ask for; then the step is accepted.
        buffer_size: Replay buffer rows; 0 means ``samples`` (the reference's size).
        learn: Update PD from the rewards; False is the ``random`` ablation.
    """

    rl_epochs: int = _cfg("rl_epochs")
    samples: int = _cfg("samples")
    noise: float = _cfg("noise")
    step_length: float = _cfg("step_length")
    ppo_clip: float = _cfg("ppo_clip")
    prob_floor: float = 1e-5
    epsilon: float = _cfg("epsilon")
    epsilon_schedule: str = "cosine"
    epsilon_decay_fraction: float = _cfg("epsilon_decay_fraction")
    total_steps_estimate: int = 20
    collapse_drop: float = _cfg("collapse_drop")
    max_redos: int = _cfg("max_redos")
    buffer_size: int = 0
    learn: bool = True

    def __post_init__(self) -> None:
        checks = {
            "rl_epochs": self.rl_epochs >= 1,
            "samples": self.samples >= 1,
            "noise": self.noise >= 0,
            "step_length": 0 <= self.step_length <= 1,
            "ppo_clip": 0 <= self.ppo_clip < 1,
            "prob_floor": 0 < self.prob_floor < 1,
            "epsilon": 0 <= self.epsilon <= 1,
            "epsilon_schedule": self.epsilon_schedule in EPSILON_SCHEDULES,
            "epsilon_decay_fraction": 0 <= self.epsilon_decay_fraction <= 1,
            "total_steps_estimate": self.total_steps_estimate >= 1,
            "collapse_drop": 0 < self.collapse_drop <= 1,
            "max_redos": self.max_redos >= 0,
            "buffer_size": self.buffer_size >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise SearchError(
                    f"search setting {name}={getattr(self, name)!r} is out of range; "
                    f"see RLSettings for valid values (default {_default(name)!r})"
                )

    @classmethod
    def paper(cls, **overrides: Any) -> RLSettings:
        """The reference defaults: 10 RL epochs x 10 samples per step."""
        return cls(**{"rl_epochs": 10, "samples": 10, **overrides})

    @property
    def buffer_rows(self) -> int:
        return self.buffer_size or self.samples


def _default(name: str) -> Any:
    return next(f.default for f in fields(RLSettings) if f.name == name)


# ----------------------------------------------------------------- pure policy maths


def initial_pd(widths: Sequence[int]) -> np.ndarray:
    """PD proportional to group width."""
    w = np.asarray(widths, dtype=np.float64)
    return w / w.sum()


def _clamp_renorm(pd: np.ndarray, floor: float) -> np.ndarray:
    pd = np.maximum(pd, floor)
    return pd / pd.sum()


def sample_pd(pd: np.ndarray, rng: np.random.Generator, noise: float, floor: float) -> np.ndarray:
    """One candidate: ``PD + N(0, 1) * noise * U(0, 1)``, clamped at ``floor``, renormalised."""
    gauss = rng.standard_normal(pd.shape[0])
    scale = noise * rng.random()
    return _clamp_renorm(pd + gauss * scale, floor)


def policy_step(
    pd: np.ndarray, direction: np.ndarray, step_length: float, clip: float, floor: float
) -> np.ndarray:
    """Move PD along ``direction``, then PPO-clip the per-group ratio.

    ``PD' = renorm(max(PD + step_length * direction, floor))``; with ``clip > 0``,
    ``PD'' = renorm(max(clip(PD' / PD, 1 - clip, 1 + clip) * PD, floor))``.
    """
    moved = _clamp_renorm(pd + step_length * direction, floor)
    if clip <= 0:
        return moved
    ratio = np.clip(moved / np.maximum(pd, 1e-12), 1.0 - clip, 1.0 + clip)
    return _clamp_renorm(ratio * pd, floor)


def advantage_direction(
    policy: np.ndarray, actions: Sequence[Sequence[float]], rewards: Sequence[float]
) -> np.ndarray | None:
    """``sum_i A_i (a_i - policy) / sum_i |A_i|`` with ``A_i`` the standardised rewards; None
    when the rewards cannot tell the actions apart (fewer than two, or all equal)."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.size < 2 or not r.std() > 0:
        return None
    adv = (r - r.mean()) / r.std()
    acts = np.asarray(actions, dtype=np.float64)
    return (adv[:, None] * (acts - policy)).sum(axis=0) / np.abs(adv).sum()


def epsilon_at(
    step: int,
    total_steps: int,
    epsilon: float,
    decay_fraction: float = 0.1,
    schedule: str = "cosine",
) -> float:
    """Exploration chance at prune step ``step`` (0-based count of accepted steps).

    ``epsilon`` at step 0, decaying to 0 at ``decay_fraction * total_steps`` and 0 after
    (the reference's ``RL_Pruner.step``). ``constant`` never decays.
    """
    if schedule == "constant":
        return float(epsilon)
    horizon = total_steps * decay_fraction
    if step <= 0:
        return float(epsilon)
    if step > horizon:
        return 0.0
    t = step / horizon
    if schedule == "linear":
        return float(max(epsilon * (1.0 - t), 0.0))
    return float(max(0.5 * (1.0 + math.cos(math.pi * t)) * epsilon, 0.0))


# ------------------------------------------------------------------------ the searcher


@dataclass(frozen=True)
class _Row:
    """A replay-buffer row: a scored candidate (``order`` breaks ties, newer first)."""

    reward: float
    order: int
    candidate: Candidate


class RLSearcher:
    """RL-Pruner's policy behind the ask/tell contract of :mod:`.base`.

    Args:
        settings: Hyper-parameters.
        seed: Seeds the searcher's own ``numpy.random.Generator`` (PCG64).
        name: Registry name (``rl`` or ``rl-flops``: the same policy, another reward).
        reward_kind: The reward the loop should compute for this searcher.
    """

    def __init__(
        self,
        settings: RLSettings | None = None,
        seed: int = 0,
        *,
        name: str = "rl",
        reward_kind: str = "accuracy",
    ) -> None:
        self.settings = settings or RLSettings()
        self.name = name
        self.reward_kind = reward_kind
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.pd: np.ndarray | None = None
        self.group_ids: list[int] | None = None
        self.step_index = 0  # accepted steps so far
        self.redo_count = 0  # redos of the current step
        self._step: StepTask | None = None
        self._seeds: dict[str, Keep] | None = None
        self._epoch = 0
        self._pending: dict[str, Candidate] = {}
        self._epoch_rows: list[_Row] = []
        self._buffer: list[_Row] = []
        self._step_best: float | None = None
        self._counter = 0
        self._chosen: Candidate | None = None
        self.history: list[list[float]] = []  # PD at the start, then after each step
        self.updates = 0  # policy updates made

    # -- ask/tell ------------------------------------------------------------------

    def start_step(self, task: StepTask) -> None:
        """Begin (or redo) a prune step; the first call fixes the groups and PD."""
        check_task(task)
        ids = [int(g) for g in task.widths]
        if self.group_ids is None:
            self.group_ids = ids
            self.pd = self._fresh_policy(task)
            self.history = [self.pd.tolist()]
        elif ids != self.group_ids:
            raise SearchError(
                f"the prunable groups changed between steps ({self.group_ids} -> {ids}); "
                "pass the same groups in the same order every step"
            )
        self._step = task
        self._seeds = None
        self._epoch = 0
        self._pending = {}
        self._epoch_rows = []
        self._buffer = []
        self._step_best = None
        self._chosen = None

    def propose(self) -> list[Candidate]:
        """The next RL epoch's ``samples`` candidates, or ``[]`` after ``rl_epochs``."""
        step = self._require_step("propose")
        if self._pending:
            raise SearchError(
                f"{len(self._pending)} proposed candidates have no outcome yet; "
                "observe() them before proposing more"
            )
        if self._epoch >= self.settings.rl_epochs:
            return []
        assert self.pd is not None
        s = self.settings
        redo = f"/redo{self.redo_count}" if self.redo_count else ""
        prefix = f"step{self.step_index}{redo}/epoch{self._epoch}"
        seeds = self._seed_plans(step)
        batch = []
        if self._epoch == 0:
            for name, plan in seeds.items():
                batch.append(
                    candidate_from_keep(step, plan, f"{prefix}/{name}", self._action(step, plan))
                )
        for i in range(s.samples):
            keep = self._sample(step)
            batch.append(
                candidate_from_keep(step, keep, f"{prefix}/sample{i}", self._action(step, keep))
            )
        self._pending = {c.tag: c for c in batch}
        return batch

    def observe(self, outcomes: Sequence[Outcome]) -> None:
        """Record outcomes; the last one of an epoch triggers the PD update."""
        self._require_step("observe")
        for out in outcomes:
            cand = self._pending.pop(out.candidate.tag, None)
            if cand is None:
                raise SearchError(
                    f"outcome for {out.candidate.tag!r}, which is not an outstanding proposal"
                )
            self._epoch_rows.append(_Row(float(out.reward), self._counter, cand))
            self._counter += 1
            self._chosen = None
        if not self._pending and self._epoch_rows:
            self._finish_epoch()

    def choose(self) -> Candidate:
        """Epsilon-greedy pick over the replay buffer."""
        self._require_step("choose")
        if self._pending:
            raise SearchError("observe() every proposed candidate before choose()")
        if not self._buffer:
            raise SearchError(
                "no candidate of this step could be evaluated (all failed); "
                "check the pruning engine's forward check in search.jsonl"
            )
        if self._chosen is not None:  # idempotent: a second call must not redraw
            return self._chosen
        eps = self.epsilon
        u = self.rng.random()
        idx = int(self.rng.integers(len(self._buffer))) if u < eps else 0
        self._chosen = self._buffer[idx].candidate
        return self._chosen

    def end_step(self, accepted: Outcome, previous_accuracy: float) -> bool:
        """Collapse guard; True = step accepted, False = PD reset, redo the step."""
        step = self._require_step("end_step")
        s = self.settings
        drop = (
            (previous_accuracy - accepted.accuracy) / previous_accuracy
            if previous_accuracy > 0
            else 0.0
        )
        if drop > s.collapse_drop and self.redo_count < s.max_redos:
            self.pd = self._fresh_policy(step)
            self.redo_count += 1
            self._seeds = None
            self._step = None  # the loop must call start_step again
            return False
        self.step_index += 1
        self.redo_count = 0
        self._step = None
        assert self.pd is not None
        self.history.append(self.pd.tolist())
        return True

    @property
    def epsilon(self) -> float:
        """Exploration chance at the current step."""
        s = self.settings
        return epsilon_at(
            self.step_index,
            s.total_steps_estimate,
            s.epsilon,
            s.epsilon_decay_fraction,
            s.epsilon_schedule,
        )

    @property
    def buffer(self) -> list[tuple[float, Candidate]]:
        """The replay buffer, best first: ``(reward, candidate)``."""
        return [(r.reward, r.candidate) for r in self._buffer]

    # -- internals -----------------------------------------------------------------

    def _seed_plans(self, task: StepTask) -> dict[str, Keep]:
        """The one-shot plans for this step (computed once): the knapsack valued both ways
        (per-group normalised scores, and raw group sums), global magnitude and uniform."""
        if self._seeds is None:
            # Projected like every sample: a one-shot plan that stops at the first fit
            # (uniform landed at 62-90% of its target) competes with the latency it may use.
            seeds = {
                "knapsack": solve_knapsack(task),
                "knapsack-raw": solve_knapsack(task.with_raw_scores()),
                "magnitude": project(task, magnitude_plan(task)),
                "uniform": project(task, uniform_plan(task, task.widths)),
            }
            unique: dict[str, Keep] = {}
            for name, plan in seeds.items():  # equal plans are one candidate
                if plan not in unique.values():
                    unique[name] = plan
            self._seeds = unique
        return self._seeds

    def _require_step(self, what: str) -> StepTask:
        if self._step is None:
            raise SearchError(f"{what}() called outside a step; call start_step() first")
        return self._step

    def _finish_epoch(self) -> None:
        s = self.settings
        scored = [r for r in self._epoch_rows if math.isfinite(r.reward)]
        self._epoch_rows = []
        self._epoch += 1
        if not scored:
            return
        rows = self._buffer + scored
        rows.sort(key=lambda r: (-r.reward, -r.order))
        self._buffer = rows[: s.buffer_rows]
        best = max(r.reward for r in scored)
        self._step_best = best if self._step_best is None else max(self._step_best, best)
        if not s.learn:
            return
        assert self.pd is not None
        direction = advantage_direction(
            self.pd, [r.candidate.pd or () for r in scored], [r.reward for r in scored]
        )
        if direction is not None:
            self.pd = self._apply(direction)
            self.updates += 1

    # -- the policy's parametrisation (cluster-rl overrides these) -------------------

    def _fresh_policy(self, task: StepTask) -> np.ndarray:
        """The policy at the first step and after a collapse: PD proportional to width."""
        return initial_pd([int(task.widths[g]) for g in task.widths])

    def _sample(self, task: StepTask) -> Keep:
        """One exploratory plan on the step's target."""
        assert self.pd is not None
        s = self.settings
        return project_pd(task, sample_pd(self.pd, self.rng, s.noise, s.prob_floor))

    def _action(self, task: StepTask, keep: Keep) -> tuple[float, ...]:
        """What the policy learns from: the evaluated plan's removals as a distribution."""
        return _pd_of(task, keep, self.settings.prob_floor)

    def _apply(self, direction: np.ndarray) -> np.ndarray:
        assert self.pd is not None
        s = self.settings
        return policy_step(self.pd, direction, s.step_length, s.ppo_clip, s.prob_floor)

    # -- resume --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, RNG included: a reload continues bit-for-bit."""
        return {
            "kind": "rl",
            "version": 3,
            "name": self.name,
            "settings": asdict(self.settings),
            "rng": self.rng.bit_generator.state,
            "pd": None if self.pd is None else self.pd.tolist(),
            "group_ids": self.group_ids,
            "step_index": self.step_index,
            "redo_count": self.redo_count,
            "epoch": self._epoch,
            "pending": [c.to_dict() for c in self._pending.values()],
            "epoch_rows": [_row_dict(r) for r in self._epoch_rows],
            "buffer": [_row_dict(r) for r in self._buffer],
            "step_best": self._step_best,
            "counter": self._counter,
            "chosen": None if self._chosen is None else self._chosen.to_dict(),
            "history": self.history,
            "updates": self.updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (settings stay those of this instance)."""
        check_state_kind(state, "rl")
        try:
            self.rng.bit_generator.state = dict(state["rng"])
            self.pd = None if state["pd"] is None else np.asarray(state["pd"], dtype=np.float64)
            ids = state["group_ids"]
            self.group_ids = None if ids is None else [int(g) for g in ids]
            self.step_index = int(state["step_index"])
            self.redo_count = int(state["redo_count"])
            self._step = None  # a step is redone on resume: the driver calls start_step
            self._epoch = int(state["epoch"])
            self._pending = {c.tag: c for c in (Candidate.from_dict(d) for d in state["pending"])}
            self._epoch_rows = [_row_from(d) for d in state["epoch_rows"]]
            self._buffer = [_row_from(d) for d in state["buffer"]]
            best = state["step_best"]
            self._step_best = None if best is None else float(best)
            self._counter = int(state["counter"])
            chosen = state["chosen"]
            self._chosen = None if chosen is None else Candidate.from_dict(chosen)
            self.history = [list(map(float, h)) for h in state["history"]]
            self.updates = int(state["updates"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SearchError(
                f"corrupt searcher state in the checkpoint ({exc!r}); start a new run directory"
            ) from exc


def _row_dict(r: _Row) -> dict[str, Any]:
    # -inf never reaches the buffer; epoch rows may hold it, JSON cannot: store None
    reward = r.reward if math.isfinite(r.reward) else None
    return {"reward": reward, "order": r.order, "candidate": r.candidate.to_dict()}


def _row_from(d: Mapping[str, Any]) -> _Row:
    reward = -math.inf if d["reward"] is None else float(d["reward"])
    return _Row(reward, int(d["order"]), Candidate.from_dict(d["candidate"]))


def _pd_of(task: StepTask, keep: Keep, floor: float) -> tuple[float, ...]:
    """A plan's removals as a distribution over groups (clamped, renormalised)."""
    removed = np.array([task.widths[g] - keep[g] for g in task.widths], dtype=np.float64)
    if removed.sum() <= 0:
        removed = np.ones_like(removed)
    return tuple(_clamp_renorm(removed / removed.sum(), floor).tolist())


def split_by_pd(task: StepTask, pd: np.ndarray, n_remove: float) -> Keep:
    """``n_remove`` channels split by ``pd`` (water-filled, capped at each group's floor)."""
    groups = list(task.widths)
    caps = [task.widths[g] - task.grids[g][0] for g in groups]
    ideal = water_fill(pd.tolist(), caps, n_remove)
    return {g: snap_up(task, g, task.widths[g] - x) for g, x in zip(groups, ideal, strict=True)}


def project_pd(task: StepTask, pd: np.ndarray) -> Keep:
    """PD's plan on the target: the fewest channels, split by PD, whose removal fits.

    Bisection on the number of channels removed keeps the *shape* PD asks for; the small
    rest (grid rounding) is settled by :func:`project` (grow back by importance per ms, or
    step down if the split alone cannot fit).
    """
    capacity = sum(w - task.grids[g][0] for g, w in task.widths.items())
    split = smallest_fitting(task, lambda n: split_by_pd(task, pd, n), capacity, integer=True)
    return project(task, split)
