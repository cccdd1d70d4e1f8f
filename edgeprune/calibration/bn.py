"""Adaptive BatchNorm re-estimation (EagleEye, Li et al. 2020).

A freshly pruned network keeps the BN running statistics of the unpruned one, which no
longer match the activations its surviving channels produce; its accuracy before
fine-tuning then says little about its accuracy after. Re-estimating the statistics on a
few training batches (no gradient, weights untouched) makes candidates comparable.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def reestimate_bn_(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Recompute every BN layer's running mean/var from ``batches``, in place.

    Uses a cumulative average (``momentum=None``) so each batch counts equally, then
    restores the layers' momentum and puts the model in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    seen = 0
    for x in batches:
        model(x)
        seen += 1
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    if seen == 0:
        raise ValueError("reestimate_bn_ needs at least one batch")
    return model.eval()
