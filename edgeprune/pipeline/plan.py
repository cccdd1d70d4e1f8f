"""PruningPlan: how many channels each group keeps, rounded to the device's channel multiple.

A plan is per *group* (Torch-Pruning's per-conv ratios silently ignore non-root members).
Channel counts are rounded to the profile's channel multiple because runtimes are fast only
on whole multiples (ORT on AVX-512: 47 channels cost 1.7x what 48 do).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from edgeprune.errors import PruningError

if TYPE_CHECKING:
    from edgeprune.pipeline.groups import GroupInfo, GroupSet

__all__ = ["PruningPlan", "allowed_keep", "plan_from_ratios", "round_keep"]

PLAN_FORMAT = 1


@dataclass(frozen=True)
class PruningPlan:
    """Channels kept per group.

    Attributes:
        keep: Group id -> channels kept. Groups not listed keep all their channels.
        channel_multiple: Kept counts are multiples of this (or the group's full width).
    """

    keep: Mapping[int, int] = field(default_factory=dict)
    channel_multiple: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.channel_multiple, int) or self.channel_multiple < 1:
            raise PruningError(
                f"channel_multiple must be a positive integer, got {self.channel_multiple!r} "
                "— use 1 for no rounding or the profile's channel multiple (e.g. 8, 16)"
            )
        bad = [(k, v) for k, v in dict(self.keep).items() if not _is_int(k) or not _is_int(v)]
        if bad:
            raise PruningError(
                f"plan keep entries must map group id (int) to channels kept (int), got "
                f"{bad[0]!r} — build plans with plan_from_ratios()"
            )
        frozen_map = MappingProxyType({int(k): int(v) for k, v in sorted(dict(self.keep).items())})
        object.__setattr__(self, "keep", frozen_map)

    def __hash__(self) -> int:
        return hash((tuple(self.keep.items()), self.channel_multiple))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PruningPlan):
            return NotImplemented
        return dict(self.keep) == dict(other.keep) and (
            self.channel_multiple == other.channel_multiple
        )

    def kept(self, info: GroupInfo) -> int:
        """Channels ``info`` keeps under this plan."""
        return self.keep.get(info.id, info.width)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (group ids become string keys), inverse of :meth:`from_dict`."""
        return {
            "format": PLAN_FORMAT,
            "channel_multiple": self.channel_multiple,
            "keep": {str(k): v for k, v in self.keep.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruningPlan:
        """Rebuild a plan written by :meth:`to_dict`.

        Raises:
            PruningError: Not a plan dict, an unknown format, or non-integer entries.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("keep"), Mapping):
            raise PruningError(
                "not a pruning plan: expected a mapping with a 'keep' mapping — "
                "pass what PruningPlan.to_dict() wrote"
            )
        if data.get("format", PLAN_FORMAT) != PLAN_FORMAT:
            raise PruningError(
                f"pruning plan format {data.get('format')!r} is not supported (this edgeprune "
                f"reads format {PLAN_FORMAT}) — re-create the plan with this version"
            )
        try:
            keep = {int(k): int(v) for k, v in data["keep"].items()}
            multiple = int(data.get("channel_multiple", 1))
        except (TypeError, ValueError) as exc:
            raise PruningError(
                f"pruning plan has a non-integer entry ({exc}) — "
                "pass what PruningPlan.to_dict() wrote"
            ) from exc
        return cls(keep=keep, channel_multiple=multiple)

    def validate(self, groups: GroupSet) -> None:
        """Check the plan against ``groups``.

        Raises:
            PruningError: Unknown group id, a keep count out of ``[1, width]``, a frozen group
                asked to lose channels, or a count that breaks the rounding rule.
        """
        n = len(groups)
        for gid, keep in self.keep.items():
            if not 0 <= gid < n:
                raise PruningError(
                    f"plan names unknown group {gid} ({groups.model_class} has groups "
                    f"0..{n - 1}) — build the plan from this model's build_groups()"
                )
            info = groups.groups[gid]
            if not 1 <= keep <= info.width:
                raise PruningError(
                    f"plan keeps {keep} channels of group {gid} ({info.name}), outside "
                    f"[1, {info.width}] — keep at least 1 and at most the group width"
                )
            if keep != info.width and info.frozen:
                raise PruningError(
                    f"group {gid} ({info.name}) is frozen ({info.frozen_reason}) but the plan "
                    f"keeps {keep} of {info.width} channels — leave frozen groups out of plans"
                )
            if keep not in allowed_keep(info, self.channel_multiple):
                m = _effective_multiple(info, self.channel_multiple)
                raise PruningError(
                    f"plan keeps {keep} channels of group {gid} ({info.name}), not a multiple "
                    f"of {m} (channel multiple {self.channel_multiple}, channel step "
                    f"{info.channel_step}) nor the full width {info.width} — round with "
                    "plan_from_ratios()"
                )


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _effective_multiple(info: GroupInfo, multiple: int) -> int:
    return math.lcm(multiple, info.channel_step)


def allowed_keep(info: GroupInfo, multiple: int) -> range | tuple[int, ...]:
    """Channel counts a plan may keep for ``info``: multiples up to the width, or the width."""
    m = _effective_multiple(info, multiple)
    if info.frozen or info.width <= m:
        return (info.width,)
    counts = list(range(m, info.width + 1, m))
    if counts[-1] != info.width:
        counts.append(info.width)
    return tuple(counts)


def round_keep(width: int, ratio: float, multiple: int) -> int:
    """Channels kept for a keep ratio: nearest multiple, at least one multiple, at most width.

    A group narrower than ``multiple`` keeps its full width.
    """
    if width <= multiple:
        return width
    keep = math.floor(ratio * width / multiple + 0.5) * multiple
    return min(max(keep, multiple), width)


def plan_from_ratios(
    groups: GroupSet, ratios: Mapping[int, float], multiple: int = 1
) -> PruningPlan:
    """Turn keep ratios per group into a rounded plan.

    Args:
        groups: The model's groups.
        ratios: Group id -> fraction of channels kept, in ``[0, 1]``. Groups not listed keep
            all channels; frozen groups may be listed only with ratio 1.
        multiple: The device's channel multiple (1 = no rounding).

    Raises:
        PruningError: Unknown group, a ratio outside [0, 1], or a frozen group below 1.
    """
    keep: dict[int, int] = {}
    for gid, ratio in ratios.items():
        info = groups[gid]
        if not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) <= 1.0:
            raise PruningError(
                f"keep ratio {ratio!r} for group {gid} ({info.name}) is outside [0, 1] — "
                "give the fraction of channels to keep"
            )
        if info.frozen:
            if ratio < 1.0:
                raise PruningError(
                    f"group {gid} ({info.name}) is frozen ({info.frozen_reason}); it cannot "
                    f"keep {ratio:.2f} of its channels — leave frozen groups out"
                )
            continue
        m = _effective_multiple(info, multiple)
        kept = round_keep(info.width, float(ratio), m)
        if kept != info.width:
            keep[gid] = kept
    return PruningPlan(keep=keep, channel_multiple=multiple)
