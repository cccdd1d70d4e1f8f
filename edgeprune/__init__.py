"""edgeprune: hardware-aware structured pruning of CNNs for edge devices.

The search sees latency measured on the target runtime (ONNX Runtime on CPU,
TensorRT on NVIDIA GPUs and Jetson), not a FLOPs proxy.

Library use: ``edgeprune.compress(model, example_input, evaluate=..., budget_ms=...)``
(see :mod:`edgeprune.api`) and ``edgeprune.load_pruned(run_dir / "model_pruned", base=model)``.
"""

from __future__ import annotations

from typing import Any

from edgeprune._version import __version__ as __version__

__all__ = ["Compressed", "compress", "load_pruned"]


def __getattr__(name: str) -> Any:
    # Lazy: `import edgeprune` (the CLI's first import) stays free of torch.
    if name in ("compress", "Compressed"):
        from edgeprune import api

        return getattr(api, name)
    if name == "load_pruned":
        from edgeprune.pipeline.pruning.pruned_io import load_pruned

        return load_pruned
    raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")
