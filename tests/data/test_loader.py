"""Batching, normalisation and the vectorised crop/flip augmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgeprune.data import augment_batch, iterate_batches, normalize


def _images(n: int = 16, size: int = 12) -> torch.Tensor:
    return torch.randint(1, 256, (n, 3, size, size), dtype=torch.uint8)


def test_normalize_matches_the_formula() -> None:
    x = _images()
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    out = normalize(x, mean, std)
    ref = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1
    )
    assert out.dtype == torch.float32 and torch.allclose(out, ref, atol=1e-5)


def test_augment_keeps_shape_and_dtype_and_is_a_padded_crop() -> None:
    x = _images()
    out = augment_batch(x, generator=torch.Generator().manual_seed(0), flip=False)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(x.shape[0]):
        windows = [padded[i, :, dy : dy + 12, dx : dx + 12] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], w) for w in windows)
    # Some images moved, and moved pixels brought zero padding in.
    assert not torch.equal(out, x) and int((out == 0).sum()) > 0


def test_flip_flips() -> None:
    x = _images(n=64)
    out = augment_batch(x, generator=torch.Generator().manual_seed(1), padding=0, flip=True)
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 16 < sum(flipped) < 48  # about half
    no_flip = augment_batch(x, generator=torch.Generator().manual_seed(1), padding=0, flip=False)
    assert torch.equal(no_flip, x)


def test_augment_is_reproducible_with_a_generator() -> None:
    x = _images()
    a = augment_batch(x, generator=torch.Generator().manual_seed(5))
    b = augment_batch(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_iterate_batches_covers_every_image_once() -> None:
    x = _images(n=10)
    y = torch.arange(10)
    seen = []
    for xb, yb in iterate_batches(
        x, y, 4, shuffle=True, augment=False, generator=torch.Generator().manual_seed(0),
        mean=(0.5,) * 3, std=(0.25,) * 3,
    ):  # fmt: skip
        assert xb.dtype == torch.float32 and xb.shape[1:] == (3, 12, 12)
        # Images stay paired with their labels through the shuffle.
        assert torch.allclose(xb, normalize(x[yb], (0.5,) * 3, (0.25,) * 3))
        seen += yb.tolist()
    assert sorted(seen) == list(range(10)) and seen != list(range(10))


def test_iterate_batches_drop_last_and_augment() -> None:
    x, y = _images(n=10), torch.arange(10)
    sizes = [
        xb.shape[0]
        for xb, _ in iterate_batches(
            x, y, 4, shuffle=False, augment=True, generator=None, mean=(0.0,) * 3,
            std=(1.0,) * 3, drop_last=True,
        )
    ]  # fmt: skip
    assert sizes == [4, 4]
