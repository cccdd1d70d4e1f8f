"""Training on several processes under ``torchrun``: DDP for the fine-tuning, search on rank 0.

``torchrun --nproc_per_node N -m edgeprune.cli train|compress ...`` starts N copies. Each
joins one process group (NCCL on CUDA, gloo on CPU). Training (:func:`run_epochs`) wraps
the model in ``DistributedDataParallel`` and gives each rank its share of every batch (a
DistributedSampler over one seeded order, so a global batch is the single-process batch
split N ways, and the learning rate and step count stay those of one process).

``compress``: rank 0 runs the search, the measurements, the export and the report; the
other ranks are *followers* (:func:`follow`): they wait for rank 0 to broadcast a training
job (baseline training or a distillation: the model, the teacher, the epochs, the seed),
run their share of it, and go back to waiting until rank 0 says it is done.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["broadcast_job", "follow", "init_from_env", "rank", "shutdown", "world"]


def init_from_env() -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); False when the
    process was started alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return True


def world() -> int:
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_job(job: dict[str, Any] | None) -> dict[str, Any] | None:
    """Rank 0 sends ``job`` (None: stop) to every rank; each rank returns it."""
    box = [job]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def follow(run_job: Callable[[dict[str, Any]], None]) -> None:
    """A follower's loop: run every job rank 0 broadcasts until it broadcasts None."""
    while (job := broadcast_job(None)) is not None:
        run_job(job)
