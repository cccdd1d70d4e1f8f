"""Recovery after pruning: knowledge distillation from the unpruned model.

See docs/ARCHITECTURE.md, "The search" (one KD budget for depth, steps and the final).

loss = kd_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))
       + (1 - kd_weight) * CE(student, labels),   T = 2, kd_weight = 0.75 by default.

SGD with momentum 0.9 and weight decay, linear warm-up then cosine decay (the training
loop of :mod:`edgeprune.pipeline.train`). The best epoch is chosen on the validation split,
never the test split, and loaded back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.config import FinetuneConfig
from edgeprune.pipeline.train import Data, TrainResult, run_epochs


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    kd_weight: float,
) -> torch.Tensor:
    """Hinton distillation loss; the T^2 factor keeps gradient scale independent of T."""
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    ce = F.cross_entropy(student_logits, labels)
    return kd_weight * t * t * kl + (1.0 - kd_weight) * ce


def distill_(
    student: nn.Module,
    teacher: nn.Module,
    data: Data,
    cfg: FinetuneConfig,
    epochs: float,
    *,
    seed: int = 0,
    progress: bool = False,
    description: str = "fine-tune (KD)",
) -> TrainResult | None:
    """Fine-tune ``student`` in place against ``teacher``; keep the best validation epoch.

    Returns None (and leaves the student untouched) when ``epochs`` is 0.
    """
    if epochs <= 0:
        return None
    teacher.eval()

    def loss_fn(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            t_logits = teacher(x)
        logits = model(x)
        return kd_loss(logits, t_logits, y, cfg.temperature, cfg.kd_weight), logits

    result = run_epochs(
        student,
        data,
        loss_fn,
        epochs=epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        weight_decay=cfg.weight_decay,
        warmup_fraction=cfg.warmup_fraction,
        seed=seed,
        progress=progress,
        description=description,
    )
    student.eval()
    return result
