"""ImageFolder directories: ``<dir>/train/<class>/*.jpg`` (+ optional ``<dir>/test/<class>/``).

A directory that directly holds class folders is read as a training split only. Images are
decoded once with Pillow (converted to RGB, resized to the requested size); unreadable files
are skipped and counted, and a class left with no readable image is an error.

Decoding runs in one process: 60,000 CIFAR JPEGs take ~6 s on this project's 2-core machine,
once, after which the tensor cache answers. A worker pool would fight the other processes
sharing those cores for a one-off saving of a few seconds.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from edgeprune.data.sources import RawData
from edgeprune.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLIT_DIRS = ("train", "test")
# Below this many files a progress bar is noise.
_PROGRESS_MIN_FILES = 2000


@dataclass(frozen=True, eq=False)
class FolderScan:
    """What an ImageFolder directory holds, before any decoding.

    Attributes:
        root: The directory scanned.
        classes: Class folder names (label ``i`` is ``classes[i]``).
        paths: Every image file, train split first.
        labels: Class index of each file.
        splits: ``"train"`` or ``"test"`` for each file.
        manifest_sha256: Digest of (relative path, size, mtime) of every file: it changes
            when any file is added, removed or rewritten, and keys the tensor cache.
    """

    root: Path
    classes: tuple[str, ...]
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    splits: tuple[str, ...]
    manifest_sha256: str


def _class_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _has_images(path: Path) -> bool:
    return any(_image_files(path))


def _image_files(class_dir: Path) -> list[os.DirEntry[str]]:
    found: list[os.DirEntry[str]] = []
    stack = [str(class_dir)]
    while stack:  # recursive, like torchvision's ImageFolder
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    stack.append(entry.path)
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                    found.append(entry)
    return sorted(found, key=lambda e: e.path)


def is_imagefolder(path: Path) -> bool:
    """``path/train/<class>/`` exists, or ``path`` directly holds class folders with images."""
    if (path / "train").is_dir():
        return True
    return any(_has_images(d) for d in _class_dirs(path))


def scan_imagefolder(path: Path) -> FolderScan:
    """List the image files of an ImageFolder directory (one ``stat`` per file, no decoding).

    Raises:
        DataError: A class folder holds no image, or the test split has a class the training
            split lacks.
    """
    split_roots = {"train": path / "train", "test": path / "test"}
    if not split_roots["train"].is_dir():
        split_roots = {"train": path}
    elif not split_roots["test"].is_dir():
        del split_roots["test"]
    classes = tuple(d.name for d in _class_dirs(split_roots["train"]))
    paths: list[str] = []
    labels: list[int] = []
    splits: list[str] = []
    empty: list[str] = []
    digest = hashlib.sha256()
    prefix = len(str(path)) + 1
    for split, root in split_roots.items():
        for class_dir in _class_dirs(root):
            if class_dir.name not in classes:
                raise DataError(
                    f"{class_dir} is a test class with no training folder — add "
                    f"{split_roots['train'] / class_dir.name} or remove it"
                )
            files = _image_files(class_dir)
            if not files:
                empty.append(str(class_dir))
            label = classes.index(class_dir.name)
            for f in files:
                st = f.stat()
                digest.update(f"{f.path[prefix:]}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                paths.append(f.path)
            labels += [label] * len(files)
            splits += [split] * len(files)
    if empty:
        exts = " ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(
            f"empty class folder(s): {', '.join(empty)} — put images ({exts}) in them or "
            "remove them"
        )
    return FolderScan(path, classes, tuple(paths), tuple(labels), tuple(splits), digest.hexdigest())


def decode_image(path: str, image_size: int) -> np.ndarray | None:
    """One file as uint8 ``(S, S, 3)`` RGB, or ``None`` when Pillow cannot read it."""
    try:
        with Image.open(path) as opened:
            rgb = opened.convert("RGB")
        if rgb.size != (image_size, image_size):
            # Pillow's reducing resize is antialiased; bilinear matches torch's path.
            rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, ImportError):
        # ImportError: a plugin another library hooked into Image.open (Ultralytics imports
        # pi_heif lazily on an unidentified file) is missing; the file is unreadable all
        # the same (seen: the corrupt-image tests failed once ultralytics was imported).
        return None


def decode_imagefolder(scan: FolderScan, image_size: int, console: Console) -> RawData:
    """Decode every file of ``scan`` into uint8 tensors.

    Raises:
        DataError: Every image of some class (in some split) is unreadable.
    """
    n = len(scan.paths)
    pixels = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    bad: list[str] = []
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=n < _PROGRESS_MIN_FILES,
    )
    with progress:
        task = progress.add_task(f"decoding {scan.root.name}", total=n)
        for i, path in enumerate(scan.paths):
            img = decode_image(path, image_size)
            if img is None:
                bad.append(path)
            else:
                pixels[i], ok[i] = img, True
            if i % 256 == 0:
                progress.update(task, completed=i)
    if bad:
        console.print(
            f"[yellow]warning:[/] skipped {len(bad)} unreadable image file(s) in {scan.root} "
            f"(first: {bad[0]})"
        )
    labels = np.array(scan.labels, dtype=np.int64)
    splits = np.array(scan.splits)
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for split in SPLIT_DIRS:
        in_split = splits == split
        present = set(labels[in_split].tolist())
        readable = set(labels[in_split & ok].tolist())
        dead = sorted(present - readable)
        if dead:
            names = ", ".join(scan.classes[c] for c in dead)
            raise DataError(
                f"every image of class(es) {names} in {scan.root} ({split}) is unreadable — "
                "replace the corrupt files or remove the class"
            )
        keep = in_split & ok
        x = torch.from_numpy(pixels[keep]).permute(0, 3, 1, 2).contiguous()
        parts[split] = (x, torch.from_numpy(labels[keep]))
    return RawData(
        classes=scan.classes,
        train_x=parts["train"][0],
        train_y=parts["train"][1],
        test_x=parts["test"][0],
        test_y=parts["test"][1],
        skipped_images=len(bad),
    )
