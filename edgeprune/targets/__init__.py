"""Runtime targets: onnxruntime (CPU), tensorrt (NVIDIA GPU / Jetson), remote (agent)."""

from edgeprune.targets.base import (
    LatencyStats,
    Prepared,
    Target,
    get_target,
    nearest_rank,
    register_target,
    require_available,
    target_for,
)

__all__ = [
    "LatencyStats",
    "Prepared",
    "Target",
    "get_target",
    "nearest_rank",
    "register_target",
    "require_available",
    "target_for",
]
