"""Batching, augmentation and normalisation over in-memory uint8 tensors.

Augmentation (random crop after 4-pixel zero padding, optional horizontal flip) is one
vectorised gather per batch on uint8 pixels: no per-image Python or PIL work in the
training loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

CROP_PADDING = 4


def normalize(
    x: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` pixels -> float ``(x / 255 - mean) / std`` per channel.

    Args:
        x: uint8 images.
        mean: Per-channel mean in [0, 1] scale.
        std: Per-channel standard deviation in [0, 1] scale.
        dtype: Output floating dtype.

    Returns:
        A new float tensor on ``x``'s device.
    """
    m = torch.as_tensor(mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    # Fold 1/255 into the scale: one multiply-add per pixel instead of three ops.
    return torch.addcmul(-m / s, x.to(dtype), 1.0 / (255.0 * s))


def augment_batch(
    x: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    padding: int = CROP_PADDING,
    flip: bool = True,
) -> torch.Tensor:
    """Random crop (zero padding ``padding`` px each side) and optional random h-flip.

    Works on a whole batch at once; the output has ``x``'s shape and dtype.

    Args:
        x: ``(N, C, H, W)`` images (uint8 or float; padding pixels are 0).
        generator: Source of randomness (CPU generator), for reproducible runs.
        padding: Pixels of zero padding before cropping back to ``H x W``.
        flip: Mirror each image left-right with probability 0.5.

    Returns:
        The augmented batch.
    """
    n, c, h, w = x.shape
    if n == 0:
        return x.clone()
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    oy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    rows = oy + torch.arange(h)
    cols = torch.arange(w).expand(n, w)
    if flip:
        mirrored = torch.rand(n, 1, generator=generator) < 0.5
        cols = torch.where(mirrored, w - 1 - cols, cols)
    cols = cols + ox
    wp = w + 2 * padding
    # Flat index into each padded image's (H+2p)*(W+2p) plane: one gather does crop + flip.
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(n, 1, h * w)
    flat = flat.expand(n, c, h * w).to(x.device)
    out = torch.gather(padded.reshape(n, c, -1), 2, flat)
    return out.reshape(n, c, h, w)


def iterate_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    augment: bool,
    generator: torch.Generator | None,
    mean: Sequence[float],
    std: Sequence[float],
    flip: bool = True,
    drop_last: bool = False,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield normalised float ``(images, labels)`` batches from uint8 tensors.

    Args:
        x: uint8 ``(N, C, H, W)`` images.
        y: int64 labels.
        batch_size: Images per batch (the last one may be smaller unless ``drop_last``).
        shuffle: Visit the images in a random order.
        augment: Apply :func:`augment_batch` (random crop + optional flip) to each batch.
        generator: CPU generator for the order and the augmentation (reproducible runs).
        mean: Per-channel mean in [0, 1] scale.
        std: Per-channel standard deviation in [0, 1] scale.
        flip: Include the random horizontal flip in the augmentation (off for digits/text).
        drop_last: Skip a final batch smaller than ``batch_size``.
        device: Where to put the batches (default: ``x``'s device).

    Yields:
        ``(float32 images, int64 labels)``.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = x.shape[0]
    order = torch.randperm(n, generator=generator) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            xb, yb = x[idx], y[idx]
        if device is not None:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        if augment:
            xb = augment_batch(xb, generator=generator, flip=flip)
        yield normalize(xb, mean, std), yb
