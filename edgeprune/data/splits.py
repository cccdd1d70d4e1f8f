"""Train / validation / test splits held as uint8 tensors, and the seeded split that makes them.

The validation split is carved from the source's training data, stratified by class, so the
search and model selection never see the test split (RL-Pruner's code chose candidates on the
test set; we do not).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from edgeprune.errors import DataError

# Mean/std are accumulated in float64 over chunks so 50k CIFAR images never need a float copy.
_STATS_CHUNK = 4096


@dataclass(frozen=True, eq=False)
class DataSplits:
    """An image-classification data set split three ways, decoded to uint8.

    Attributes:
        name: Short name of the source (``"digits"``, the directory or file stem).
        classes: Class names; label ``i`` is ``classes[i]``.
        train_x: Training images, uint8 ``(N, C, H, W)``.
        val_x: Validation images (carved from the source's training data), uint8.
        test_x: Test images, uint8; 0 rows when the source has no test split.
        train_y: Training labels, int64 ``(N,)``.
        val_y: Validation labels, int64.
        test_y: Test labels, int64 (may be empty).
        mean: Per-channel mean of ``train_x`` in [0, 1] scale.
        std: Per-channel standard deviation of ``train_x`` in [0, 1] scale.
        hflip_ok: Whether a horizontal flip keeps the label (false for digits).
        skipped_images: Unreadable image files skipped while decoding.
    """

    name: str
    classes: tuple[str, ...]
    train_x: torch.Tensor
    val_x: torch.Tensor
    test_x: torch.Tensor
    train_y: torch.Tensor
    val_y: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    hflip_ok: bool = True
    skipped_images: int = field(default=0)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    streaming = False

    def size(self, split: str) -> int:
        """Images in ``split`` (``train``, ``val`` or ``test``)."""
        return int(self.labels(split).shape[0])

    def labels(self, split: str) -> torch.Tensor:
        """Labels of ``split``."""
        return {"train": self.train_y, "val": self.val_y, "test": self.test_y}[split]

    def take(self, split: str, idx: torch.Tensor) -> torch.Tensor:
        """uint8 images at ``idx`` of ``split`` (what a streamed set decodes on demand)."""
        return {"train": self.train_x, "val": self.val_x, "test": self.test_x}[split][idx]

    @property
    def has_test(self) -> bool:
        """Whether the source came with a test split (final accuracy needs one)."""
        return self.test_x.shape[0] > 0

    def summary(self) -> dict[str, object]:
        """Sizes and statistics as plain values (for ``report.json`` and logs)."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "train": int(self.train_x.shape[0]),
            "val": int(self.val_x.shape[0]),
            "test": int(self.test_x.shape[0]),
            "mean": list(self.mean),
            "std": list(self.std),
            "hflip_ok": self.hflip_ok,
            "skipped_images": self.skipped_images,
        }


def balanced_subsample(y: torch.Tensor, limit: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of at most ``limit`` samples, spread evenly over the classes present in ``y``.

    A class with fewer samples than its share gives all it has; the remainder goes to the
    other classes. The result is sorted so the original order survives.
    """
    if limit <= 0:
        raise DataError(f"limit={limit} must be a positive number of images")
    if limit >= y.numel():
        return torch.arange(y.numel())
    per_class = [torch.nonzero(y == c).flatten() for c in torch.unique(y).tolist()]
    per_class = [idx[torch.randperm(idx.numel(), generator=generator)] for idx in per_class]
    # Water-filling: raise the per-class quota until `limit` images are taken.
    counts = [0] * len(per_class)
    left = limit
    while left > 0:
        open_classes = [i for i, idx in enumerate(per_class) if counts[i] < idx.numel()]
        share = max(1, left // len(open_classes))
        for i in open_classes:
            take = min(share, per_class[i].numel() - counts[i], left)
            counts[i] += take
            left -= take
            if left == 0:
                break
    chosen = torch.cat([idx[:n] for idx, n in zip(per_class, counts, strict=True)])
    return torch.sort(chosen).values


def stratified_draw(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Seeded, class-balanced, *shuffled* indices of ``min(n, len(y))`` samples.

    For every subset the pipeline takes from a split (BatchNorm re-estimation batches, the
    accuracy proxy, Taylor batches): splits come out class-sorted (ImageFolder decodes class
    by class), so a slice ``x[:n]`` would hold one or two classes.
    """
    gen = torch.Generator().manual_seed(seed)
    idx = balanced_subsample(y, n, gen) if 0 < n < y.numel() else torch.arange(y.numel())
    return idx[torch.randperm(idx.numel(), generator=gen)]


def stratified_split(
    y: torch.Tensor, val_fraction: float, generator: torch.Generator, classes: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, stratified ``(train_idx, val_idx)`` over labels ``y``.

    Every class gets ``round(n * val_fraction)`` validation samples, at least one, and must
    keep at least one training sample.

    Raises:
        DataError: ``val_fraction`` is outside (0, 1), or a class would end up with no
            training or no validation sample.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(
            f"val_fraction={val_fraction} must be between 0 and 1 (exclusive); "
            "the search needs a validation split, e.g. 0.1"
        )
    train_parts, val_parts = [], []
    for c, name in enumerate(classes):
        idx = torch.nonzero(y == c).flatten()
        n = idx.numel()
        n_val = min(max(1, round(n * val_fraction)), n)
        if n == 0 or n_val >= n:
            raise DataError(
                f"class {name!r} has {n} training image(s): val_fraction={val_fraction} leaves "
                f"it with no {'validation' if n == 0 else 'training'} samples — add images "
                "to that class or lower val_fraction"
            )
        idx = idx[torch.randperm(n, generator=generator)]
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val:])
    return torch.sort(torch.cat(train_parts)).values, torch.sort(torch.cat(val_parts)).values


def image_moments(x: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel pixel sum and sum of squares: float64 ``(N, 2, C)``.

    Exact (float64 holds these integers). Computed once when a source is decoded and cached,
    so the statistics of any split are a sum over rows instead of a pass over every pixel.
    """
    n, c = x.shape[:2]
    out = torch.empty((n, 2, c), dtype=torch.float64)
    # Chunks of about _STATS_CHUNK 32x32 images' worth of pixels: at 224 px a chunk of 4096
    # whole images would be a 5 GB float64 copy.
    step = max(1, _STATS_CHUNK * 3 * 32 * 32 // max(1, c * x.shape[2] * x.shape[3]))
    for start in range(0, n, step):
        chunk = x[start : start + step].reshape(-1, c, x.shape[2] * x.shape[3])
        chunk = chunk.to(torch.float64)
        out[start : start + step, 0] = chunk.sum(-1)
        out[start : start + step, 1] = chunk.square().sum(-1)
    return out


def channel_stats(
    x: torch.Tensor, moments: torch.Tensor | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1] scale.

    Args:
        x: uint8 ``(N, C, H, W)`` images.
        moments: Their :func:`image_moments`, if already known.
    """
    if moments is None:
        moments = image_moments(x)
    return stats_from_moments(moments, x.shape[2] * x.shape[3])


def stats_from_moments(
    moments: torch.Tensor, pixels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """:func:`channel_stats` from :func:`image_moments` of images of ``pixels`` pixels."""
    total, total_sq = moments.sum(dim=0)
    count = moments.shape[0] * pixels
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0.0)
    # A constant channel would divide by zero when normalising; 1/255 keeps it finite.
    std = var.sqrt().clamp_min(1.0)
    return tuple((mean / 255.0).tolist()), tuple((std / 255.0).tolist())
