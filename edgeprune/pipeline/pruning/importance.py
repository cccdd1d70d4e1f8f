"""Importance criteria: which channels of a group go first.

Each criterion is a callable ``(group, model, n_keep) -> scores``: one score per channel of
the group (higher = keep), aggregated over the group's members like Torch-Pruning's
``GroupMagnitudeImportance`` (a channel's score sums the filter producing it, its norm-layer
scale and the input weights consuming it, over every coupled layer). ``n_keep`` matters only
to ``cluster``, whose ranking depends on how many channels survive.

``cluster`` follows Wu, Song & Zeng (SPIE 12566, 2023): filters are clustered by direction and
the redundant members of each cluster go first, so a small filter that does something no
other filter does survives, where ``l1`` would remove it.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import PruningError
from edgeprune.pipeline.pruning.groups import GroupInfo

__all__ = [
    "CRITERIA",
    "BNScaleImportance",
    "ClusterImportance",
    "Importance",
    "MagnitudeImportance",
    "RandomImportance",
    "TaylorImportance",
    "get_importance",
]

Importance = Callable[[GroupInfo, nn.Module, int], torch.Tensor]
_NORM = nn.modules.batchnorm._BatchNorm
_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)
_CACHE_SIZE = 4096


def _out_rows(layer: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """Weight reshaped to one row per output channel."""
    if getattr(layer, "transposed", False):
        w = w.transpose(0, 1)
    return w.flatten(1)


def _in_cols(layer: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """Weight reshaped to one row per input channel (repeated over a grouped conv's groups)."""
    rows = w.flatten(1) if getattr(layer, "transposed", False) else w.transpose(0, 1).flatten(1)
    groups = getattr(layer, "groups", 1)
    if groups > 1 and groups != getattr(layer, "in_channels", groups):
        rows = rows.repeat(groups, 1)
    return rows


def _group_sum(
    info: GroupInfo,
    model: nn.Module,
    per_row: Callable[[nn.Module, str, torch.Tensor], torch.Tensor | None],
) -> torch.Tensor:
    """Sum ``per_row(layer, role, rows)`` of every member into the group's channels."""
    total = torch.zeros(info.width, dtype=torch.float64)
    for op in info.ops:
        if op.is_param:
            continue
        layer = model.get_submodule(op.layer)
        if isinstance(layer, _NORM):
            if layer.weight is None:
                continue
            rows, role = layer.weight.detach().unsqueeze(1), "norm"
        elif isinstance(layer, _WEIGHTED):
            w = layer.weight.detach()
            rows, role = (_out_rows(layer, w), "out") if op.is_out else (_in_cols(layer, w), "in")
        else:
            continue
        values = per_row(layer, role, rows)
        if values is None:
            continue
        idx = torch.tensor(op.idxs)
        total.index_add_(0, torch.tensor(op.root_idxs), values[idx].double().cpu())
    return total


class _CachedScores:
    """Scores depend only on the weights, and the search scores the same base model thousands
    of times: keep them per model, group and weight version (in-place updates bump
    ``Tensor._version``; replaced parameters change identity)."""

    def __init__(self) -> None:
        self._cache: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], torch.Tensor]]
        self._cache = weakref.WeakKeyDictionary()

    def _scores(self, group: GroupInfo, model: nn.Module, n_keep: int) -> torch.Tensor:
        raise NotImplementedError

    def _depends_on_n_keep(self) -> bool:
        return False

    def __call__(self, group: GroupInfo, model: nn.Module, n_keep: int) -> torch.Tensor:
        cache = self._cache.setdefault(model, {})
        version = tuple((id(p), p._version) for p in model.parameters())
        key = (group.id, n_keep if self._depends_on_n_keep() else None, version)
        if key not in cache:
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            cache[key] = self._scores(group, model, n_keep)
        return cache[key]


class MagnitudeImportance(_CachedScores):
    """Group L1 (``p=1``) or squared-L2 (``p=2``) norm of every weight tied to a channel."""

    def __init__(self, p: int = 1) -> None:
        super().__init__()
        if p not in (1, 2):
            raise PruningError(f"magnitude norm p must be 1 or 2, got {p!r} — use l1 or l2")
        self.p = p

    def _scores(self, group: GroupInfo, model: nn.Module, n_keep: int) -> torch.Tensor:
        return _group_sum(group, model, lambda _l, _r, rows: rows.abs().pow(self.p).sum(1))


class BNScaleImportance(_CachedScores):
    """|gamma| of the group's BatchNorm layers (network slimming); groups without BN fall back
    to L1 magnitude so a search never stops on a BN-free branch."""

    def _scores(self, group: GroupInfo, model: nn.Module, n_keep: int) -> torch.Tensor:
        scores = _group_sum(
            group, model, lambda _l, role, rows: rows.abs().sum(1) if role == "norm" else None
        )
        if not scores.any():
            return MagnitudeImportance(1)._scores(group, model, n_keep)
        return scores


class RandomImportance:
    """Seeded random scores (a baseline): the same seed and group give the same scores."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def __call__(self, group: GroupInfo, model: nn.Module, n_keep: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + group.id)
        return torch.rand(group.width, generator=gen, dtype=torch.float64)


class TaylorImportance:
    """First-order Taylor score sum |w * dL/dw| over a few calibration batches.

    Gradients are computed with the model in *eval* mode (BatchNorm statistics untouched,
    unlike RL-Pruner's code) through ``torch.autograd.grad`` (``.grad`` fields untouched), once
    per model and weight version, then reused for every group.

    Args:
        data: ``(inputs, targets)`` batches, or a callable returning such an iterable.
        loss_fn: Loss of ``(logits, targets)``; cross-entropy by default.
        max_batches: Batches used at most.
    """

    def __init__(
        self,
        data: Iterable[tuple[torch.Tensor, torch.Tensor]]
        | Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
        max_batches: int = 4,
    ) -> None:
        self.data = data
        self.loss_fn = loss_fn
        self.max_batches = max_batches
        self._cache: weakref.WeakKeyDictionary[nn.Module, tuple[Any, dict[str, torch.Tensor]]]
        self._cache = weakref.WeakKeyDictionary()

    def _grads(self, model: nn.Module) -> dict[str, torch.Tensor]:
        params = dict(model.named_parameters())
        version = tuple(p._version for p in params.values())
        hit = self._cache.get(model)
        if hit is not None and hit[0] == version:
            return hit[1]
        was_training = model.training
        model.eval()
        sums = {n: torch.zeros_like(p) for n, p in params.items()}
        batches = 0
        try:
            source = self.data() if callable(self.data) else self.data
            for x, y in source:
                if batches >= self.max_batches:
                    break
                with torch.enable_grad():
                    loss = self.loss_fn(model(x), y)
                    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
                for n, g in zip(params, grads, strict=True):
                    if g is not None:
                        sums[n] += g.detach()
                batches += 1
        finally:
            model.train(was_training)
        if batches == 0:
            raise PruningError(
                "taylor importance got no calibration batches — pass a few (inputs, targets) "
                "batches from the training split"
            )
        self._cache[model] = (version, sums)
        return sums

    def __call__(self, group: GroupInfo, model: nn.Module, n_keep: int) -> torch.Tensor:
        grads = self._grads(model)
        names = {id(m): n for n, m in model.named_modules()}

        def taylor(layer: nn.Module, role: str, rows: torch.Tensor) -> torch.Tensor:
            g = grads[f"{names[id(layer)]}.weight"]
            if role == "norm":
                g_rows = g.unsqueeze(1)
            elif role == "out":
                g_rows = _out_rows(layer, g)
            else:
                g_rows = _in_cols(layer, g)
            return (rows * g_rows).abs().sum(1)

        return _group_sum(group, model, taylor)


class ClusterImportance(_CachedScores):
    """Keep one representative per cluster of similar filters first (Wu, Song & Zeng, 2023).

    The filters producing each channel (all conv/linear producers of the group, each filter
    scaled to unit norm so that direction, not size, decides) are clustered with KMeans into
    ``n_keep`` clusters. Scores rank, per cluster, the filter nearest its centroid first, then
    the others by distance; equal ranks are ordered by filter norm. So removing the
    lowest-scoring channels removes redundant filters inside clusters before any cluster
    loses its last member.

    Args:
        seed: KMeans ``random_state``.
        n_init: KMeans restarts (fixed for determinism).
    """

    def __init__(self, seed: int = 0, n_init: int = 4) -> None:
        super().__init__()
        self.seed = seed
        self.n_init = n_init

    def _depends_on_n_keep(self) -> bool:
        return True

    def _features(self, group: GroupInfo, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        feats: list[torch.Tensor] = []
        norms = torch.zeros(group.width, dtype=torch.float64)
        for op in group.ops:
            layer = None if op.is_param else model.get_submodule(op.layer)
            if not op.is_out or not isinstance(layer, _WEIGHTED):
                continue
            rows = _out_rows(layer, layer.weight.detach()).double().cpu()[torch.tensor(op.idxs)]
            f = torch.zeros(group.width, rows.shape[1], dtype=torch.float64)
            f.index_add_(0, torch.tensor(op.root_idxs), rows)
            norms += f.norm(dim=1)
            feats.append(F.normalize(f, dim=1))
        if not feats:
            return torch.empty(0), norms
        return F.normalize(torch.cat(feats, dim=1), dim=1), norms

    def _scores(self, group: GroupInfo, model: nn.Module, n_keep: int) -> torch.Tensor:
        from sklearn.cluster import KMeans

        feats, norms = self._features(group, model)
        if feats.numel() == 0:
            return MagnitudeImportance(2)._scores(group, model, n_keep)
        k = max(1, min(int(n_keep), group.width))
        with warnings.catch_warnings():
            # Duplicate filters give fewer distinct points than k: KMeans warns, result is fine.
            warnings.simplefilter("ignore")
            km = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed).fit(feats.numpy())
        labels = torch.as_tensor(km.labels_)
        dist = (feats - torch.as_tensor(km.cluster_centers_)[labels]).norm(dim=1)
        rank = torch.zeros(group.width, dtype=torch.float64)
        for c in labels.unique():
            members = (labels == c).nonzero().flatten().tolist()
            members.sort(key=lambda i: (float(dist[i]), -float(norms[i]), i))
            for r, i in enumerate(members):
                rank[i] = r
        # Rank decides; norm (scaled into [0, 0.5)) orders channels of equal rank.
        tie = 0.5 * norms / (norms.max() + 1e-12) if norms.max() > 0 else norms
        return -rank + tie * (1 - 1e-9)


CRITERIA: dict[str, Callable[[], Importance]] = {
    "l1": lambda: MagnitudeImportance(1),
    "l2": lambda: MagnitudeImportance(2),
    "bn_scale": BNScaleImportance,
    "random": RandomImportance,
    "cluster": ClusterImportance,
}


def get_importance(name: str) -> Importance:
    """Build a criterion by name: ``l1``, ``l2``, ``bn_scale``, ``random`` or ``cluster``.

    Raises:
        PruningError: Unknown name, or ``taylor`` (it needs data: use
            :class:`TaylorImportance`).
    """
    key = name.lower().replace("-", "_")
    if key == "taylor":
        raise PruningError(
            "taylor importance needs calibration batches — pass TaylorImportance(data) "
            "instead of the name"
        )
    if key not in CRITERIA:
        raise PruningError(
            f"unknown importance criterion {name!r}; known: taylor, {', '.join(CRITERIA)} — "
            "pick one of these"
        )
    # One shared instance per name, so its score cache serves every prune() call.
    if key not in _SHARED:
        _SHARED[key] = CRITERIA[key]()
    return _SHARED[key]


_SHARED: dict[str, Importance] = {}
