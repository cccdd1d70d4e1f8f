"""The real CIFAR-10 JPEG tarball (slow: 60,000 JPEGs decoded on the first run only)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

import edgeprune.data.imagefolder as imagefolder_mod
from edgeprune.data import extract_archive, load_data

# The dev box keeps it beside the checkout; elsewhere point EDGEPRUNE_CIFAR10_TARBALL at it.
TARBALL = Path(
    os.environ.get(
        "EDGEPRUNE_CIFAR10_TARBALL",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpg.tar.gz",
    )
)


def _cache_dir() -> Path:
    # Persist across test runs (outside the repository) so only the first run pays for
    # extraction and decoding; EDGEPRUNE_CACHE overrides.
    env = os.environ.get("EDGEPRUNE_CACHE")
    return Path(env) if env else Path(tempfile.gettempdir()) / "edgeprune-test-cache"


@pytest.mark.slow
def test_real_cifar10_tarball(monkeypatch: pytest.MonkeyPatch) -> None:
    if not TARBALL.is_file():
        pytest.skip(f"{TARBALL} not present (CIFAR-10 JPEG tarball only ships on the dev box)")
    cache = _cache_dir()
    root = extract_archive(TARBALL, cache)
    assert sorted(p.name for p in (root / "train").iterdir())[:2] == ["airplane", "automobile"]
    first = load_data(TARBALL, cache_dir=cache)
    assert first.num_classes == 10 and first.classes[0] == "airplane"
    assert first.train_x.shape[0] + first.val_x.shape[0] == 50_000
    assert first.test_x.shape == (10_000, 3, 32, 32)
    assert torch.bincount(first.val_y).tolist() == [500] * 10
    assert torch.bincount(first.test_y).tolist() == [1000] * 10
    assert first.skipped_images == 0 and first.hflip_ok
    # Published CIFAR-10 train statistics (JPEG shifts them slightly).
    assert all(abs(m - r) < 0.01 for m, r in zip(first.mean, (0.491, 0.482, 0.447), strict=True))
    # Second load: served by the tensor cache, nothing decoded.
    calls: list[str] = []
    real = imagefolder_mod.decode_image
    monkeypatch.setattr(imagefolder_mod, "decode_image", lambda p, s: calls.append(p) or real(p, s))
    second = load_data(TARBALL, cache_dir=cache)
    assert calls == [] and torch.equal(first.val_x, second.val_x)
