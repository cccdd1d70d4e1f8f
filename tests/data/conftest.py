"""Tiny data sets in every supported layout, generated in tmp_path (real formats, no mocks)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("cat", "dog", "fox")


def class_color(label: int, index: int) -> tuple[int, int, int]:
    """A flat colour that encodes (label, index), so tests can check labels survive decoding."""
    return (40 + 60 * label, 10 + 10 * index, 230)


def make_imagefolder(
    root: Path,
    classes: tuple[str, ...] = CLASSES,
    per_class: int = 6,
    *,
    test_per_class: int = 2,
    size: tuple[int, int] = (40, 36),
) -> Path:
    """``root/train/<class>/*.png|jpg`` (+ ``root/test/<class>/``); images are flat colours."""
    for split, n in (("train", per_class), ("test", test_per_class)):
        for label, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = Image.new("RGB", size, class_color(label, i))
                # Mix formats and a grayscale file: decoding must convert all to RGB.
                if i == 1:
                    img.convert("L").save(d / f"{i:03d}.png")
                elif i % 2:
                    img.save(d / f"{i:03d}.jpg", quality=95)
                else:
                    img.save(d / f"{i:03d}.png")
    return root


def _cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)


def make_cifar10(root: Path, per_batch: int = 12) -> Path:
    """A CIFAR-10 python directory in the real pickle format (5 train batches + test)."""
    root.mkdir(parents=True, exist_ok=True)
    names = [b"airplane", b"automobile", b"bird", b"cat"]
    for i in range(1, 6):
        batch = {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": [j % len(names) for j in range(per_batch)],
            b"data": _cifar_rows(per_batch, i),
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_batch)],
        }
        with open(root / f"data_batch_{i}", "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    test = {b"labels": [j % len(names) for j in range(8)], b"data": _cifar_rows(8, 99)}
    with open(root / "test_batch", "wb") as fh:
        pickle.dump(test, fh, protocol=2)
    meta = {b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump(meta, fh, protocol=2)
    return root


def make_cifar100(root: Path, n_train: int = 30, n_test: int = 9) -> Path:
    """A CIFAR-100 python directory (``train``, ``test``, ``meta``) with 3 fine classes."""
    root.mkdir(parents=True, exist_ok=True)
    fine = ["apple", "aquarium_fish", "baby"]
    for name, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        batch = {
            b"fine_labels": [j % 3 for j in range(n)],
            b"coarse_labels": [0] * n,
            b"data": _cifar_rows(n, seed),
        }
        with open(root / name, "wb") as fh:
            pickle.dump(batch, fh)  # default (newer) protocol: numpy pickles it differently
    with open(root / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": fine, b"coarse_label_names": ["fruit"]}, fh)
    return root


def make_npz(path: Path, n: int = 40, classes: int = 4, *, with_test: bool = True) -> Path:
    """``x`` uint8 NHWC whose pixel (0, 0, 0) stores the image index; ``y`` = index % classes."""
    x = np.zeros((n, 16, 16, 3), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    arrays = {"x": x, "y": np.arange(n) % classes}
    if with_test:
        arrays |= {"x_test": x[:8].copy(), "y_test": np.arange(8) % classes}
    np.savez(path, **arrays, classes=np.array([f"c{i}" for i in range(classes)]))
    return path


@pytest.fixture
def imagefolder(tmp_path: Path) -> Path:
    return make_imagefolder(tmp_path / "pets")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"
