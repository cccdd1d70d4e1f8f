"""Image-classification data: sources, the decoded-tensor cache, splits and batching.

``open_data`` picks between decoding a set into memory (``load_data``) and streaming an
ImageFolder from disk per batch (:mod:`edgeprune.data.streaming`), by size.
``load_data(source)`` accepts ``"digits"`` (scikit-learn's bundled digits, the embedded
default), an ImageFolder directory, a CIFAR-10/100 python-batch directory, an ``.npz`` file,
or a ``.tar``/``.tar.gz`` archive of any of these directories.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console

from edgeprune.data.cache import (
    cache_file,
    cache_key,
    cache_root,
    extract_archive,
    file_manifest,
    is_archive,
    load_cached,
    save_cached,
)
from edgeprune.data.imagefolder import decode_imagefolder, is_imagefolder, scan_imagefolder
from edgeprune.data.loader import augment_batch, iterate_batches, normalize
from edgeprune.data.sources import (
    RawData,
    is_cifar_dir,
    load_cifar_source,
    load_digits_source,
    load_npz_source,
)
from edgeprune.data.splits import (
    DataSplits,
    balanced_subsample,
    channel_stats,
    image_moments,
    stratified_draw,
    stratified_split,
)
from edgeprune.data.streaming import StreamingSplits, decoded_bytes, load_streaming
from edgeprune.errors import DataError

__all__ = [
    "DataSplits",
    "StreamingSplits",
    "augment_batch",
    "extract_archive",
    "iterate_batches",
    "load_data",
    "normalize",
    "open_data",
    "stratified_draw",
]

SUPPORTED_LAYOUTS = (
    "'digits'; an ImageFolder dir (<dir>/train/<class>/*.jpg, optional <dir>/test/<class>/, "
    "or <dir>/<class>/*.jpg); a CIFAR-10/100 python dir (data_batch_1..5 + batches.meta, or "
    "train + test + meta); an .npz with x (uint8 NHWC) and y; a .tar.gz of one of these dirs"
)

# Diagnostics go to stderr so stdout stays clean for results.
_console = Console(stderr=True)


def load_data(
    source: str | Path = "digits",
    *,
    image_size: int = 32,
    val_fraction: float = 0.1,
    seed: int = 0,
    cache_dir: Path | None = None,
    limit: int | None = None,
) -> DataSplits:
    """Load a data set and split it into train / validation / test uint8 tensors.

    File sources are decoded once into a tensor cache (``cache_dir``, else
    ``$EDGEPRUNE_CACHE``, else ``~/.cache/edgeprune``); later loads read the cache unless a
    file changed.

    Args:
        source: ``"digits"`` or a path (see :data:`SUPPORTED_LAYOUTS`).
        image_size: Side of the square images returned (sources are resized to it).
        val_fraction: Share of each class's training images held out for validation.
        seed: Seed of the validation split (and of ``limit``'s subsample).
        cache_dir: Cache root for decoded tensors and extracted archives.
        limit: For smoke runs: cap the images taken from the source's training data
            (validation included) at this many, balanced over classes; the test split is
            capped the same way.

    Returns:
        The splits, with per-channel mean/std computed on the training split.

    Raises:
        DataError: Missing path, unsupported layout, empty or unreadable classes, bad arrays,
            fewer than two classes, or a split that leaves a class without samples.
    """
    if image_size < 8:
        raise DataError(f"image_size={image_size} is too small; use at least 8 (e.g. 32)")
    name, raw = _load_raw(str(source), image_size, cache_dir)
    if len(raw.classes) < 2:
        raise DataError(
            f"{source} has {len(raw.classes)} class(es) ({', '.join(raw.classes) or 'none'}); "
            "classification needs at least 2"
        )
    gen = torch.Generator().manual_seed(seed)
    train_x, train_y, test_x, test_y = raw.train_x, raw.train_y, raw.test_x, raw.test_y
    moments = raw.train_moments if raw.train_moments is not None else image_moments(train_x)
    if limit is not None:
        keep = balanced_subsample(train_y, limit, gen)
        train_x, train_y, moments = train_x[keep], train_y[keep], moments[keep]
        if test_y.numel():
            keep = balanced_subsample(test_y, limit, gen)
            test_x, test_y = test_x[keep], test_y[keep]
    train_idx, val_idx = stratified_split(train_y, val_fraction, gen, raw.classes)
    tr_x = train_x[train_idx]
    mean, std = channel_stats(tr_x, moments[train_idx])
    return DataSplits(
        name=name,
        classes=raw.classes,
        train_x=tr_x,
        val_x=train_x[val_idx],
        test_x=test_x,
        train_y=train_y[train_idx],
        val_y=train_y[val_idx],
        test_y=test_y,
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        hflip_ok=raw.hflip_ok,
        skipped_images=raw.skipped_images,
    )


def _load_raw(source: str, image_size: int, cache_dir: Path | None) -> tuple[str, RawData]:
    """Resolve ``source`` to a layout and return ``(name, decoded data)``, via the cache."""
    if source == "digits":
        return "digits", load_digits_source(image_size)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data path {path} does not exist — give one of: {SUPPORTED_LAYOUTS}")
    root = cache_root(cache_dir)
    if is_archive(path):
        name = path.name.split(".")[0]
        tree = extract_archive(path, cache_dir)
        # The extracted tree lives in our cache under the archive's sha256 and is never edited,
        # so its path is the whole fingerprint: a cache hit skips stat-ing 60k files.
        key = cache_key("archive", tree, [], image_size)
        return name, _cached(cache_file(root, name, key), lambda: _decode(tree, image_size))
    name = path.stem if path.is_file() else path.name
    if path.is_file():
        fingerprint: object = file_manifest([path], path.parent)
    elif is_cifar_dir(path):
        files = sorted(p for p in path.iterdir() if p.is_file())
        fingerprint = file_manifest(files, path)
    elif is_imagefolder(path):
        scan = scan_imagefolder(path)
        key = cache_key("imagefolder", path, scan.manifest_sha256, image_size)
        return name, _cached(
            cache_file(root, name, key), lambda: decode_imagefolder(scan, image_size, _console)
        )
    else:
        raise _unsupported(path)
    key = cache_key("file" if path.is_file() else "cifar", path, fingerprint, image_size)
    return name, _cached(cache_file(root, name, key), lambda: _decode(path, image_size))


def _unsupported(path: Path) -> DataError:
    return DataError(f"{path} is in no supported data layout — give one of: {SUPPORTED_LAYOUTS}")


def _decode(path: Path, image_size: int) -> RawData:
    """Decode ``path`` in whichever supported layout it is (no cache)."""
    if path.is_file() and path.suffix.lower() == ".npz":
        return load_npz_source(path, image_size)
    if path.is_dir() and is_cifar_dir(path):
        return load_cifar_source(path, image_size)
    if path.is_dir() and is_imagefolder(path):
        return decode_imagefolder(scan_imagefolder(path), image_size, _console)
    raise _unsupported(path)


def _cached(path: Path, decode: Callable[[], RawData]) -> RawData:
    raw = load_cached(path)
    if raw is None or raw.train_moments is None:
        raw = decode()
        raw = dataclasses.replace(raw, train_moments=image_moments(raw.train_x))
        save_cached(path, raw)
    return raw


def open_data(
    source: str | Path = "digits",
    *,
    image_size: int = 32,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    loader: str = "auto",
    workers: int = 2,
    memory_limit_mb: float = 4096,
    cache_dir: Path | None = None,
) -> DataSplits | StreamingSplits:
    """The data of a run: decoded into memory, or an ImageFolder streamed from disk.

    ``loader="auto"`` streams an ImageFolder (a directory, or an archive once extracted)
    whose images decoded at ``image_size`` would take more than ``memory_limit_mb``;
    ``memory`` always decodes (:func:`load_data`, with its tensor cache); ``stream`` always
    streams (ImageFolder only). The split is the same either way.

    Raises:
        DataError: see :func:`load_data`; ``stream`` on a source that is no ImageFolder.
    """
    if loader not in ("auto", "memory", "stream"):
        raise DataError(f"data.loader '{loader}' is not one of auto, memory, stream")
    tree: Path | None = None
    if loader != "memory" and source != "digits":
        path = Path(source).expanduser()
        if path.exists() and is_archive(path):
            path = extract_archive(path, cache_dir)
        if path.is_dir() and is_imagefolder(path):
            tree = path
    if loader == "stream" and tree is None:
        raise DataError(
            f"data.loader=stream reads ImageFolder trees; {source} is not one — use "
            "data.loader=memory (or auto)"
        )
    if tree is not None and loader == "auto":
        n = len(scan_imagefolder(tree).paths)
        if decoded_bytes(n, image_size) <= memory_limit_mb * 2**20:
            tree = None
    if tree is None:
        return load_data(
            source,
            image_size=image_size,
            val_fraction=val_fraction,
            seed=seed,
            cache_dir=cache_dir,
            limit=limit,
        )
    return load_streaming(
        tree,
        image_size=image_size,
        val_fraction=val_fraction,
        seed=seed,
        limit=limit,
        workers=workers,
    )
