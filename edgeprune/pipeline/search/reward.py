"""Rewards that score a pruning candidate: pure functions of its metrics, no torch.

Since every candidate of a step is projected onto the same latency target, the default
reward of the ``rl`` searcher is the proxy accuracy itself (``accuracy``, computed by the
driver); the kinds here are the options:

- ``latency`` (ours): ``accuracy * (latency_ms / budget_ms) ** w``, MnasNet's soft
  constraint (Tan et al. 2019, eq. 2). ``mode="both"`` applies ``w`` on both sides of the
  budget (MnasNet's alpha = beta = -0.07): faster than budget earns a little, slower costs
  a little. ``mode="over"`` applies it only above the budget (MnasNet's hard-ish variant
  alpha = 0, beta = -1 is ``mode="over", w=-1``).
- ``flops`` / ``params`` (RL-Pruner's Q value): ``accuracy + coef * (1 - x / x_base)``.
  The public RL-Pruner code (``RL_Pruner.Q_value_function``) computes
  ``top1_acc + Q_FLOP_coef * FLOPs_ratio + Q_Para_coef * Para_ratio`` with
  ``FLOPs_ratio = 1 - model_FLOPs / original_FLOPs_num`` (and the same for parameters),
  both relative to the *unpruned* model. Its CLI default coefficients live in a settings
  file we could not read; its example scripts run with 0.0. The run config's
  ``search.reward.coef`` (0.5) is the one source of the coefficient; a nonzero one is what
  makes ``rl-flops`` differ from accuracy-only RL.

``accuracy`` is always a fraction in [0, 1] (top-1 on the validation split), never a
percentage. MACs stand in for FLOPs (FLOPs ~ 2 x MACs; the ratio is the same).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol

from edgeprune.errors import SearchError

RewardKind = Literal["latency", "flops", "params"]
REWARD_KINDS: tuple[str, ...] = ("latency", "flops", "params")
LATENCY_MODES: tuple[str, ...] = ("both", "over")


def _check_accuracy(accuracy: float) -> None:
    if not (math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0):
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy!r}")


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def latency_reward(
    accuracy: float,
    latency_ms: float,
    budget_ms: float,
    *,
    w: float = -0.07,
    mode: str = "both",
) -> float:
    """MnasNet-style soft latency constraint: ``accuracy * (latency_ms / budget_ms) ** w``.

    Args:
        accuracy: Validation top-1 as a fraction in [0, 1].
        latency_ms: Measured or predicted latency (p50) of the candidate.
        budget_ms: The latency budget.
        w: Exponent, <= 0 (0 ignores latency; -0.07 is MnasNet's soft value; -1 is steep).
        mode: ``"both"`` applies ``w`` on both sides of the budget; ``"over"`` only when
            ``latency_ms > budget_ms`` (under budget the reward is the accuracy).

    Returns:
        The reward; equals ``accuracy`` when the latency is exactly on budget.

    Raises:
        ValueError: accuracy outside [0, 1], non-positive latency or budget, w > 0, or an
            unknown mode.
    """
    _check_accuracy(accuracy)
    _check_positive("latency_ms", latency_ms)
    _check_positive("budget_ms", budget_ms)
    if not (math.isfinite(w) and w <= 0):
        raise ValueError(f"w must be <= 0 (a penalty on latency), got {w!r}")
    if mode not in LATENCY_MODES:
        raise ValueError(f"mode must be one of {LATENCY_MODES}, got {mode!r}")
    ratio = latency_ms / budget_ms
    if mode == "over" and ratio <= 1.0:
        return float(accuracy)
    return float(accuracy * ratio**w)


def _reduction_reward(
    accuracy: float, value: float, base_value: float, coef: float, what: str
) -> float:
    _check_accuracy(accuracy)
    _check_positive(f"base_{what}", base_value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{what} must be a non-negative finite number, got {value!r}")
    if not (math.isfinite(coef) and coef >= 0):
        raise ValueError(f"coef must be a non-negative finite number, got {coef!r}")
    return float(accuracy + coef * (1.0 - value / base_value))


def flops_reward(accuracy: float, macs: float, base_macs: float, coef: float) -> float:
    """RL-Pruner's FLOPs reward: ``accuracy + coef * (1 - macs / base_macs)``.

    Args:
        accuracy: Validation top-1 as a fraction in [0, 1].
        macs: Multiply-accumulates of the candidate.
        base_macs: MACs of the unpruned model (the reduction is measured from it).
        coef: Weight of the reduction term, >= 0.
    """
    return _reduction_reward(accuracy, macs, base_macs, coef, "macs")


def params_reward(accuracy: float, params: float, base_params: float, coef: float) -> float:
    """RL-Pruner's parameter reward: ``accuracy + coef * (1 - params / base_params)``."""
    return _reduction_reward(accuracy, params, base_params, coef, "params")


class RewardMetrics(Protocol):
    """What a reward reads from a candidate's evaluation (``search.Outcome`` fits)."""

    @property
    def accuracy(self) -> float: ...
    @property
    def latency_ms(self) -> float | None: ...
    @property
    def macs(self) -> int: ...
    @property
    def params(self) -> int: ...


@dataclass(frozen=True)
class Metrics:
    """A candidate's evaluation, the input of a reward function."""

    accuracy: float
    latency_ms: float | None
    macs: int
    params: int


@dataclass(frozen=True)
class RewardSettings:
    """Which reward, and its constants.

    Attributes:
        kind: ``latency``, ``flops`` or ``params``.
        budget_ms: Latency budget (``latency`` only).
        w: Exponent of the latency term, <= 0.
        mode: ``both`` or ``over`` (see :func:`latency_reward`).
        flops_coef: Weight of the MACs reduction (``flops``).
        params_coef: Weight of the parameter reduction (``params``).
        base_macs: MACs of the unpruned model (``flops``).
        base_params: Parameters of the unpruned model (``params``).
    """

    kind: str = "latency"
    budget_ms: float | None = None
    w: float = -0.07
    mode: str = "both"
    flops_coef: float = 0.5  # the run config's search.reward.coef is the source; same default
    params_coef: float = 0.5
    base_macs: int | None = None
    base_params: int | None = None

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> RewardSettings:
        """Build from a mapping or an object with these field names (others are ignored)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if isinstance(config, Mapping):
                value = config.get(f.name)
            else:
                value = getattr(config, f.name, None)
            if value is not None:  # unset in the config: keep the default
                values[f.name] = value
        values.update(overrides)
        return cls(**values)


def make_reward(settings: RewardSettings) -> Callable[[RewardMetrics], float]:
    """Return ``reward(metrics) -> float`` for the configured kind.

    Raises:
        SearchError: unknown kind or mode, or a constant the kind needs is missing/invalid.
    """
    s = settings
    if s.kind not in REWARD_KINDS:
        raise SearchError(f"unknown reward kind {s.kind!r}; use one of {REWARD_KINDS}")
    if s.kind == "latency":
        if s.budget_ms is None or not (math.isfinite(s.budget_ms) and s.budget_ms > 0):
            raise SearchError(
                f"the latency reward needs a positive budget_ms, got {s.budget_ms!r}; "
                "set the latency budget (e.g. --budget-ms 4)"
            )
        if s.mode not in LATENCY_MODES:
            raise SearchError(f"reward mode {s.mode!r} is unknown; use one of {LATENCY_MODES}")
        if not (math.isfinite(s.w) and s.w <= 0):
            raise SearchError(f"reward exponent w must be <= 0, got {s.w!r}")
        budget_ms, w, mode = float(s.budget_ms), float(s.w), s.mode

        def _latency(m: RewardMetrics) -> float:
            if m.latency_ms is None:
                raise ValueError("the latency reward needs latency_ms; the candidate has none")
            return latency_reward(m.accuracy, m.latency_ms, budget_ms, w=w, mode=mode)

        return _latency

    base = s.base_macs if s.kind == "flops" else s.base_params
    coef = s.flops_coef if s.kind == "flops" else s.params_coef
    what = "base_macs" if s.kind == "flops" else "base_params"
    if base is None or base <= 0:
        raise SearchError(f"the {s.kind} reward needs {what} of the unpruned model (> 0)")
    if not (math.isfinite(coef) and coef >= 0):
        raise SearchError(f"the {s.kind} reward coefficient must be >= 0, got {coef!r}")
    base_value, coef_value = float(base), float(coef)
    if s.kind == "flops":
        return lambda m: flops_reward(m.accuracy, m.macs, base_value, coef_value)
    return lambda m: params_reward(m.accuracy, m.params, base_value, coef_value)
