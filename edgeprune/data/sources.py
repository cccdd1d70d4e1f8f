"""Readers for the array-shaped sources: embedded digits, CIFAR python batches, ``.npz`` files.

Each reader returns a :class:`RawData` (all images as uint8 ``(N, 3, S, S)``); splitting,
caching and statistics happen in :mod:`edgeprune.data`. ImageFolder directories live in
:mod:`edgeprune.data.imagefolder`.
"""

from __future__ import annotations

import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgeprune.errors import DataError

CIFAR10_FILES = ("data_batch_1", "batches.meta")
CIFAR100_FILES = ("train", "test", "meta")

# The only globals a genuine CIFAR pickle references (numpy 1.x and 2.x spellings; protocol-2
# pickles written by Python 3 spell bytes as _codecs.encode). Nothing here runs user code.
_PICKLE_ALLOWED = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


@dataclass(frozen=True, eq=False)
class RawData:
    """A decoded source before splitting: uint8 ``(N, 3, S, S)`` images and int64 labels."""

    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    hflip_ok: bool = True
    skipped_images: int = 0
    train_moments: torch.Tensor | None = None  # image_moments(train_x), cached with the data

    def to_cache(self) -> dict[str, Any]:
        """Plain tensors/lists only, so the cache loads with ``weights_only=True``."""
        return {
            "classes": list(self.classes),
            "train_x": self.train_x,
            "train_y": self.train_y,
            "test_x": self.test_x,
            "test_y": self.test_y,
            "hflip_ok": self.hflip_ok,
            "skipped_images": self.skipped_images,
            "train_moments": self.train_moments,
        }

    @classmethod
    def from_cache(cls, obj: dict[str, Any]) -> RawData:
        return cls(
            classes=tuple(obj["classes"]),
            train_x=obj["train_x"],
            train_y=obj["train_y"],
            test_x=obj["test_x"],
            test_y=obj["test_y"],
            hflip_ok=bool(obj["hflip_ok"]),
            skipped_images=int(obj["skipped_images"]),
            train_moments=obj.get("train_moments"),
        )


def resize_uint8(x: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize uint8 ``(N, C, H, W)`` images to ``image_size`` squared (bilinear, antialiased)."""
    if x.shape[0] == 0 or tuple(x.shape[2:]) == (image_size, image_size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], image_size, image_size), dtype=torch.uint8)
    for start in range(0, x.shape[0], 2048):
        chunk = x[start : start + 2048].float()
        chunk = F.interpolate(chunk, size=(image_size, image_size), mode="bilinear", antialias=True)
        out[start : start + 2048] = chunk.round().clamp(0, 255).to(torch.uint8)
    return out


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(images (1797, 8, 8), labels)`` from scikit-learn's bundled ``digits.csv.gz``.

    Reading the file directly skips importing ``sklearn.datasets`` (~2 s); if the file ever
    moves, ``load_digits`` still works.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("scikit-learn is not installed — pip install scikit-learn for 'digits'")
    csv = Path(next(iter(spec.submodule_search_locations))) / "datasets/data/digits.csv.gz"
    if csv.is_file():
        table = np.loadtxt(csv, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.asarray(bunch.images), np.asarray(bunch.target)


def load_digits_source(image_size: int, test_fraction: float = 0.2, seed: int = 0) -> RawData:
    """scikit-learn's bundled 8x8 handwritten digits, upsampled and replicated to RGB.

    The bundled set has no test split, so a stratified ``test_fraction`` is held out with a
    fixed seed (independent of the validation seed, so the test set never moves).
    """
    images, target = _digits_arrays()
    images = images.astype(np.float32) * (255.0 / 16.0)  # 0..16 -> 0..255
    x = torch.from_numpy(images).round().to(torch.uint8)[:, None].expand(-1, 3, -1, -1)
    x = resize_uint8(x.contiguous(), image_size)
    y = torch.as_tensor(target, dtype=torch.int64)
    gen = torch.Generator().manual_seed(seed)
    test_parts = []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        test_parts.append(idx[: round(idx.numel() * test_fraction)])
    is_test = torch.zeros(y.numel(), dtype=torch.bool)
    is_test[torch.cat(test_parts)] = True
    return RawData(
        classes=tuple(str(i) for i in range(10)),
        train_x=x[~is_test].contiguous(),
        train_y=y[~is_test],
        test_x=x[is_test].contiguous(),
        test_y=y[is_test],
        hflip_ok=False,  # a mirrored 2 is not a 2
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches, refusing every global except numpy array reconstruction."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def _read_pickle(path: Path) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as fh:
            obj = _ArrayUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataError(
            f"{path} is not a CIFAR python batch ({exc}) — re-download the "
            "'python version' archive from the CIFAR page"
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a CIFAR batch dict")
    return obj


def _batch_arrays(path: Path, label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    batch = _read_pickle(path)
    if b"data" not in batch or label_key not in batch:
        raise DataError(
            f"{path} lacks b'data' or {label_key!r} — is this the right CIFAR variant "
            "(CIFAR-10 uses b'labels', CIFAR-100 b'fine_labels')?"
        )
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path}: b'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072) rows"
        )
    labels = torch.as_tensor(np.asarray(batch[label_key], dtype=np.int64))
    if labels.numel() != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} images but {labels.numel()} labels")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), labels


def is_cifar_dir(path: Path) -> bool:
    return all((path / f).is_file() for f in CIFAR10_FILES) or all(
        (path / f).is_file() for f in CIFAR100_FILES
    )


def load_cifar_source(path: Path, image_size: int) -> RawData:
    """A CIFAR-10 (``data_batch_*``, ``test_batch``) or CIFAR-100 (``train``, ``test``) dir."""
    if all((path / f).is_file() for f in CIFAR10_FILES):
        label_key, meta = b"labels", _read_pickle(path / "batches.meta")
        names = meta.get(b"label_names")
        train_files = sorted(path.glob("data_batch_*"), key=lambda p: p.name)
        test_files = [path / "test_batch"] if (path / "test_batch").is_file() else []
    else:
        label_key, meta = b"fine_labels", _read_pickle(path / "meta")
        names = meta.get(b"fine_label_names")
        train_files, test_files = [path / "train"], [path / "test"]
    if not names:
        raise DataError(f"{path}: the meta file lists no class names")
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    train = [_batch_arrays(p, label_key) for p in train_files]
    test = [_batch_arrays(p, label_key) for p in test_files]
    empty = (torch.empty((0, 3, 32, 32), dtype=torch.uint8), torch.empty(0, dtype=torch.int64))
    train_x, train_y = (torch.cat(t) for t in zip(*train, strict=True))
    test_x, test_y = (torch.cat(t) for t in zip(*test, strict=True)) if test else empty
    _check_labels(path, classes, train_y, test_y)
    return RawData(
        classes, resize_uint8(train_x, image_size), train_y, resize_uint8(test_x, image_size),
        test_y,
    )  # fmt: skip


def _check_labels(
    path: Path, classes: tuple[str, ...], train_y: torch.Tensor, test_y: torch.Tensor
) -> None:
    for split, y in (("train", train_y), ("test", test_y)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataError(
                f"{path}: {split} labels span {int(y.min())}..{int(y.max())} but there are "
                f"{len(classes)} classes — labels must be 0..{len(classes) - 1}"
            )


def _npz_images(path: Path, key: str, arr: np.ndarray, image_size: int) -> torch.Tensor:
    if arr.dtype != np.uint8:
        raise DataError(
            f"{path}: {key!r} has dtype {arr.dtype}, expected uint8 pixels 0..255 — "
            f"save it as np.uint8"
        )
    if arr.ndim == 3:  # (N, H, W) grayscale
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[3] not in (1, 3):
        raise DataError(
            f"{path}: {key!r} has shape {arr.shape}, expected (N, H, W, 3) or (N, H, W, 1) "
            "uint8 (channels last)"
        )
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return resize_uint8(x.contiguous(), image_size)


def _npz_labels(path: Path, key: str, arr: np.ndarray, n: int) -> torch.Tensor:
    if not np.issubdtype(arr.dtype, np.integer) or arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(
            f"{path}: {key!r} is {arr.dtype} {arr.shape}, expected {n} integer class labels (1-D)"
        )
    return torch.as_tensor(arr.astype(np.int64))


def load_npz_source(path: Path, image_size: int) -> RawData:
    """An ``.npz`` with ``x`` (uint8 NHWC) and ``y``; optional ``x_test``/``y_test``/``classes``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc})") from exc
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(
            f"{path} lacks {', '.join(missing)} (has {sorted(arrays) or 'nothing'}) — "
            "save with np.savez(path, x=images_uint8_nhwc, y=labels)"
        )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: give both x_test and y_test, or neither")
    train_x = _npz_images(path, "x", arrays["x"], image_size)
    train_y = _npz_labels(path, "y", arrays["y"], train_x.shape[0])
    if "x_test" in arrays:
        test_x = _npz_images(path, "x_test", arrays["x_test"], image_size)
        test_y = _npz_labels(path, "y_test", arrays["y_test"], test_x.shape[0])
    else:
        test_x = torch.empty((0, *train_x.shape[1:]), dtype=torch.uint8)
        test_y = torch.empty(0, dtype=torch.int64)
    if "classes" in arrays:
        classes = tuple(str(c) for c in arrays["classes"].tolist())
    else:
        top = max(int(train_y.max()), int(test_y.max()) if test_y.numel() else 0)
        classes = tuple(str(i) for i in range(top + 1))
    _check_labels(path, classes, train_y, test_y)
    return RawData(classes, train_x, train_y, test_x, test_y)
