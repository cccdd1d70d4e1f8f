"""The decoded-tensor cache and archive extraction.

A source is decoded once into a ``.pt`` of uint8 tensors keyed by the sha256 of its resolved
path, a manifest of its files (name, size, mtime), the image size and :data:`FORMAT_VERSION`;
touching any file changes the key. Files are written atomically and read with
``weights_only=True`` (they hold only tensors, lists and numbers).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import torch

from edgeprune._io import atomic_torch_save, atomic_write_text, sha256_file
from edgeprune.data.sources import RawData
from edgeprune.errors import DataError

# Bump when decoding changes (resize filter, layout), so stale caches are not reused.
FORMAT_VERSION = 1
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_EXTRACTED_MARKER = ".edgeprune-extracted"


def cache_root(cache_dir: Path | None = None) -> Path:
    """``cache_dir``, else ``$EDGEPRUNE_CACHE``, else ``~/.cache/edgeprune``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("EDGEPRUNE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgeprune"


def file_manifest(paths: list[Path], root: Path) -> list[tuple[str, int, int]]:
    """``(relative path, size, mtime_ns)`` for each file."""
    rows = []
    for p in paths:
        st = p.stat()
        rows.append((os.path.relpath(p, root), st.st_size, st.st_mtime_ns))
    return rows


def cache_key(kind: str, path: Path, manifest: Any, image_size: int) -> str:
    """sha256 over everything that changes the decoded tensors."""
    payload = json.dumps(
        [FORMAT_VERSION, kind, str(path.resolve()), image_size, manifest], separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_file(root: Path, name: str, key: str) -> Path:
    return root / "datasets" / f"{name}-{key[:20]}.pt"


def load_cached(path: Path) -> RawData | None:
    """The cached :class:`RawData` at ``path``, or ``None`` if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        return RawData.from_cache(obj)
    except (RuntimeError, OSError, KeyError, TypeError, EOFError, pickle.UnpicklingError):
        # A damaged cache entry is not the user's problem: decode again and overwrite it.
        return None


def save_cached(path: Path, raw: RawData) -> None:
    atomic_torch_save(path, raw.to_cache())


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _safe_members(tar: tarfile.TarFile, tar_path: Path) -> list[tarfile.TarInfo]:
    """Regular files and directories inside the archive root only (no links, no ``..``)."""
    members = []
    for m in tar.getmembers():
        name = Path(m.name)
        if name.is_absolute() or ".." in name.parts:
            raise DataError(f"{tar_path}: member {m.name!r} escapes the archive — refusing it")
        if m.isfile() or m.isdir():
            members.append(m)
    return members


def extract_archive(tar_path: Path, cache_dir: Path | None = None) -> Path:
    """Extract a ``.tar``/``.tar.gz`` once into the cache and return the data root.

    The destination is ``<cache>/archives/<stem>-<sha256 prefix>``; a marker file records a
    finished extraction, so later calls return at once. If the archive holds a single
    top-level folder (``cifar-10-batches-py/``), that folder is returned.

    Args:
        tar_path: The archive.
        cache_dir: Cache root (see :func:`cache_root`).

    Returns:
        The extracted directory to load from.

    Raises:
        DataError: The archive is missing, unreadable, or has members outside its root.
    """
    tar_path = Path(tar_path)
    if not tar_path.is_file():
        raise DataError(f"archive {tar_path} does not exist — check the path")
    stem = tar_path.name
    for suffix in ARCHIVE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    dest = cache_root(cache_dir) / "archives" / f"{stem}-{sha256_file(tar_path)[:16]}"
    if not (dest / _EXTRACTED_MARKER).is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            with tarfile.open(tar_path) as tar:
                members = _safe_members(tar, tar_path)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # Python < 3.10.12 without extraction filters; members checked above
                    tar.extractall(tmp, members=members)
            atomic_write_text(tmp / _EXTRACTED_MARKER, f"{tar_path.resolve()}\n")
            if (dest / _EXTRACTED_MARKER).is_file():
                # Another process finished first and may be reading it: keep its copy
                # (replacing it once broke a benchmark's second process mid-decode).
                shutil.rmtree(tmp, ignore_errors=True)
                return _data_root(dest)
            if dest.exists():  # an extraction from before the marker existed: replace it
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        except (tarfile.TarError, OSError, EOFError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if (dest / _EXTRACTED_MARKER).is_file():  # another process finished first
                return _data_root(dest)
            raise DataError(f"cannot extract {tar_path} ({exc}) — is it a tar archive?") from exc
    return _data_root(dest)


def _data_root(dest: Path) -> Path:
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in ("train", "test"):
        return entries[0]
    return dest
