"""Magnitude baseline: Torch-Pruning-style global ranking of channels.

What Torch-Pruning 1.6.1 does with ``global_pruning=True`` and ``MagnitudeImportance``
(defaults ``p=2, group_reduction="mean", normalizer="mean"``): each group's per-channel
importance (the mean over the group's layers of the channel's squared-L2 weight) is
divided by that group's mean importance (``_normalize(..., "mean")``), the normalised
scores of all groups are concatenated, and the globally smallest ones go
(``torch.topk(concat_imp, k=n_pruned, largest=False)``). With ``round_to`` it then rounds
each pruned group's remaining width *down* to a multiple (``_round_to``), so a rounded
step removes at least as much as asked.

Here the loop supplies the per-channel scores (``set_scores``; pass raw group importance,
e.g. ``GroupMagnitudeImportance(p=2, normalizer=None)(group)``: the "mean" normaliser is
applied here and is idempotent if the loop already applied it). The step removes the
``step_channels`` globally smallest normalised channels, skipping a group once it reaches
its floor (Torch-Pruning instead refuses such a group); with ``round_to_multiple`` each
pruned group's width is rounded down to the multiple, never below one multiple. The
candidate only says how many channels each group keeps: apply it with the same importance
criterion that produced the scores, so the channels that go are the smallest ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edgeprune.errors import SearchError
from edgeprune.pipeline.search.base import (
    Candidate,
    OneShotSearcher,
    StepState,
    candidate_from_removal,
    channel_floor,
    snap_keep_down,
)

NORMALIZERS: tuple[str, ...] = ("mean", "max", "sum", "none")


@dataclass(frozen=True)
class MagnitudeSettings:
    """Settings of the magnitude baseline.

    Attributes:
        round_to_multiple: Round each pruned group's width down to the channel multiple
            (Torch-Pruning's ``round_to``); False ranks single channels (floor 1).
        normalizer: Per-group normalisation of scores before the global ranking.
    """

    round_to_multiple: bool = True
    normalizer: str = "mean"

    def __post_init__(self) -> None:
        if self.normalizer not in NORMALIZERS:
            raise SearchError(
                f"magnitude normalizer {self.normalizer!r} is unknown; use one of {NORMALIZERS}"
            )


def normalize_scores(scores: np.ndarray, normalizer: str) -> np.ndarray:
    """Torch-Pruning's group normalisation (``mean``: divide by the group's mean)."""
    s = np.asarray(scores, dtype=np.float64)
    if normalizer == "none":
        return s
    denom = {"mean": s.mean(), "max": s.max(), "sum": s.sum()}[normalizer]
    return s / denom if denom > 0 else s


def global_magnitude_removal(
    scores: list[np.ndarray],
    widths: list[int],
    step_channels: int,
    multiple: int,
    *,
    round_to_multiple: bool = True,
    normalizer: str = "mean",
) -> list[int]:
    """Per-group removals: the globally smallest normalised channels, then rounding.

    Ties are broken by group order, then channel index (deterministic).
    """
    m = max(1, multiple) if round_to_multiple else 1
    floors = [channel_floor(w, m) for w in widths]
    normed = [normalize_scores(s, normalizer) for s in scores]
    flat = np.concatenate(normed) if normed else np.zeros(0)
    group_of = np.concatenate([np.full(len(s), g) for g, s in enumerate(normed)])
    channel = np.concatenate([np.arange(len(s)) for s in normed])
    order = np.lexsort((channel, group_of, flat))  # last key is the primary one
    removed = [0] * len(widths)
    left = int(step_channels)
    for idx in order:
        if left == 0:
            break
        g = int(group_of[idx])
        if widths[g] - removed[g] > floors[g]:
            removed[g] += 1
            left -= 1
    if round_to_multiple and m > 1:
        for g, w in enumerate(widths):
            if removed[g] > 0:
                removed[g] = w - snap_keep_down(w - removed[g], w, m)
    return removed


class MagnitudeSearcher(OneShotSearcher):
    """Global magnitude ranking, one candidate per step; needs ``set_scores`` each step."""

    name = "magnitude"
    needs_scores = True

    def __init__(self, settings: MagnitudeSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or MagnitudeSettings()
        self._scores: dict[int, np.ndarray] | None = None

    def start_step(
        self,
        widths: Mapping[int, int],
        step_channels: int,
        multiple: int = 1,
        *,
        base_widths: Mapping[int, int] | None = None,
    ) -> None:
        super().start_step(widths, step_channels, multiple, base_widths=base_widths)
        self._scores = None

    def set_scores(self, scores: Mapping[int, np.ndarray]) -> None:
        """Per-channel importance of every group of the current step (len == width)."""
        step = self._require_step("set_scores")
        missing = [g for g in step.widths if g not in scores]
        if missing:
            raise SearchError(f"set_scores: no scores for groups {missing}")
        checked: dict[int, np.ndarray] = {}
        for g, w in step.widths.items():
            s = np.asarray(scores[g], dtype=np.float64).reshape(-1)
            if s.shape[0] != w or not np.all(np.isfinite(s)) or np.any(s < 0):
                raise SearchError(
                    f"set_scores: group {g} needs {w} finite non-negative scores, "
                    f"got {s.shape[0]} values"
                )
            checked[g] = s
        self._scores = checked
        self._candidate = None

    def _make_candidate(self, step: StepState, tag: str) -> Candidate:
        if self._scores is None:
            raise SearchError("the magnitude searcher needs set_scores() before propose()")
        removed = global_magnitude_removal(
            [self._scores[g] for g in step.widths],
            list(step.widths.values()),
            step.step_channels,
            step.multiple,
            round_to_multiple=self.settings.round_to_multiple,
            normalizer=self.settings.normalizer,
        )
        return candidate_from_removal(step, removed, tag)
