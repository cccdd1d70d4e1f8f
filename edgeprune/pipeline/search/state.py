"""Where a compress run stands: typed, frozen records, saved as the checkpoint's JSON.

Each committed step makes a new :class:`SearchState` (``dataclasses.replace``); nothing is
edited in place. The JSON keys are the field names, so ``checkpoint/state.json`` reads the
same to people and to scripts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from edgeprune.errors import SearchError

STATE_VERSION = 2


@dataclass(frozen=True)
class StepRecord:
    """One committed prune step.

    Attributes:
        step: 1-based step number.
        target: The goal metric the step aimed at (ms for latency goals).
        final: True for a step that targeted the goal itself.
        candidates: Candidates evaluated.
        best_reward: Best reward among them.
        chosen: Tag of the kept candidate.
        chosen_reward: Its reward as applied (after landing).
        landing_tries: ``{"predicted", "measured"}`` per measurement of the landing.
        proxy_accuracy_before_ft: Proxy accuracy of the applied plan before recovery.
        val_accuracy_after_ft: Best validation accuracy of the step's KD (None without).
        proxy_accuracy_after_ft: Proxy accuracy after recovery.
        predicted_ms: The cost model's latency of the applied plan (latency goals).
        latency_ms: Measured latency (baseline p50 at start x interleaved ratio).
        value: The goal metric measured (latency ms, MACs or channels).
        macs: MACs of the applied plan.
        params: Parameters of the applied plan.
        widths: Group id (str) -> channels kept.
        sensitivity: The step's measured group sensitivities (``search.values``
            'sensitivity'): operating fraction, proxy drop and loss-curve scale per group.
    """

    step: int
    target: float
    final: bool
    candidates: int
    best_reward: float
    chosen: str
    chosen_reward: float
    landing_tries: tuple[dict[str, float], ...]
    proxy_accuracy_before_ft: float
    val_accuracy_after_ft: float | None
    proxy_accuracy_after_ft: float
    predicted_ms: float | None
    latency_ms: float
    value: float
    macs: int
    params: int
    widths: Mapping[str, int]
    sensitivity: Mapping[str, Any] | None = None
    rescored: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["landing_tries"] = [dict(t) for t in self.landing_tries]
        d["widths"] = dict(self.widths)
        d["rescored"] = [dict(r) for r in self.rescored]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepRecord:
        return cls(
            **{
                **_known(cls, d),
                "landing_tries": tuple(d["landing_tries"]),
                "rescored": tuple(d.get("rescored", ())),
            }
        )


@dataclass(frozen=True)
class SearchState:
    """The run between steps (see the module docstring).

    Attributes:
        phase: ``search``, ``finetune``, ``final`` or ``done``.
        step: Steps committed.
        baseline_ms: Baseline p50 measured at the start (the budget's reference).
        baseline_stats: Its full :class:`~edgeprune.targets.base.LatencyStats` summary.
        budget_ms: The latency budget (None for MACs / channel goals).
        goal_kind: ``latency``, ``macs`` or ``channels``.
        goal_value: The goal in that unit.
        value: The current model's goal metric, as last measured.
        latency_ms: The current model's measured latency.
        accuracy: The current model's proxy accuracy.
        removed_base: Group id (str) -> removed channel indices, base coordinates.
        survivors: Group id (str) -> surviving channel indices, base coordinates.
        steps: The committed steps.
        log_rows: Rows of ``search.jsonl`` committed (resume truncates to it).
        searcher: The searcher's ``state_dict`` after the last step.
        calibration: (raw cost, measured) pairs the cost model is fitted on.
        kd_epochs: KD epochs spent by the steps (the final fine-tune gets the rest).
        dropped_blocks: Residual blocks depth pruning replaced by their shortcut; group ids,
            ``removed_base`` and ``survivors`` refer to the base without them.
        start_value: Measured latency of the base without those blocks (None: none dropped).
        depth: What the depth choice weighed (blocks, options), None when it did not run.
    """

    phase: str
    step: int
    redos: int
    baseline_ms: float
    baseline_stats: Mapping[str, Any]
    budget_ms: float | None
    goal_kind: str
    goal_value: float
    value: float
    latency_ms: float
    macs: int
    params: int
    sparsity: float
    accuracy: float
    baseline_proxy_accuracy: float
    removed_base: Mapping[str, list[int]]
    survivors: Mapping[str, list[int]]
    multiple: int
    steps: tuple[StepRecord, ...] = ()
    log_rows: int = 0
    searcher: Mapping[str, Any] | None = None
    stop_reason: str | None = None
    kd_epochs: float = 0.0
    calibration: tuple[tuple[float, float], ...] = ()
    lut_samples: tuple[Mapping[str, Any], ...] = ()
    search_s: float = 0.0
    final_kd_epochs: float | None = None
    final_finetune_s: float | None = None
    dropped_blocks: tuple[str, ...] = ()
    start_value: float | None = None
    depth: Mapping[str, Any] | None = None

    def replace(self, **changes: Any) -> SearchState:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["version"] = STATE_VERSION
        d["steps"] = [s.to_dict() for s in self.steps]
        d["calibration"] = [list(p) for p in self.calibration]
        d["lut_samples"] = [dict(s) for s in self.lut_samples]
        d["dropped_blocks"] = list(self.dropped_blocks)
        d["removed_base"] = {k: list(v) for k, v in self.removed_base.items()}
        d["survivors"] = {k: list(v) for k, v in self.survivors.items()}
        d["baseline_stats"] = dict(self.baseline_stats)
        d["searcher"] = None if self.searcher is None else dict(self.searcher)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchState:
        if d.get("version", STATE_VERSION) != STATE_VERSION:
            raise SearchError(
                f"the checkpoint's state version {d.get('version')!r} is not {STATE_VERSION}: "
                "it was written by another edgeprune version; start a new run directory"
            )
        try:
            return cls(
                **{
                    **_known(cls, d),
                    "steps": tuple(StepRecord.from_dict(s) for s in d["steps"]),
                    "calibration": tuple((float(a), float(b)) for a, b in d["calibration"]),
                    "lut_samples": tuple(d["lut_samples"]),
                    "dropped_blocks": tuple(d.get("dropped_blocks", ())),
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SearchError(
                f"corrupt checkpoint state ({exc!r}); start a new run directory"
            ) from exc


def _known(cls: type, d: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def kd_left(total: float, spent: float) -> float:
    """KD epochs left of the run's one budget (0 when depth and the steps spent it)."""
    left = total - spent
    return round(left, 6) if left > 1e-6 else 0.0
