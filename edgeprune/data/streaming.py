"""ImageFolder data read from disk batch by batch: sets that do not fit in memory, any size.

:func:`load_data` decodes a whole set into one uint8 tensor, which holds CIFAR (150 MB) but
not ImageNet at 224 px (190 GB). :class:`StreamingSplits` keeps the file list instead and
decodes per batch in ``torch.utils.data.DataLoader`` worker processes. Images are decoded
exactly as the in-memory path decodes them (:func:`decode_image`: RGB, resized to the
model's side), then the batch is augmented and normalised in the main process by the same
functions, so streamed and in-memory training see the same pixels. The split is the one
:func:`load_data` carves (same function, same seed), and small subsets the search holds in
memory (the proxy's validation subset, BatchNorm batches) come from :meth:`take`.

Mean and std are estimated on a seeded, class-balanced draw of up to 2,048 training images
(decoded 128 at a time).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from edgeprune.data.imagefolder import decode_image, is_imagefolder, scan_imagefolder
from edgeprune.data.loader import augment_batch, normalize
from edgeprune.data.splits import (
    DataSplits,
    balanced_subsample,
    image_moments,
    stats_from_moments,
    stratified_draw,
    stratified_split,
)
from edgeprune.errors import DataError

_console = Console(stderr=True)

__all__ = ["StreamingSplits", "decoded_bytes", "load_streaming"]

STATS_IMAGES = 2048
SPLITS = ("train", "val", "test")


class _Files(torch.utils.data.Dataset):
    """Decodes one file per item (in a worker process): uint8 ``(3, S, S)`` and its label;
    an unreadable file gives label -1 (dropped from its batch and counted)."""

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, image_size: int) -> None:
        self.paths, self.labels, self.image_size = list(paths), labels, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = decode_image(self.paths[i], self.image_size)
        if img is None:
            return torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8), -1
        return torch.tensor(img).permute(2, 0, 1).contiguous(), int(self.labels[i])


@dataclass(frozen=True, eq=False)
class StreamingSplits:
    """An ImageFolder split three ways, read per batch (the labels are in memory).

    Attributes mirror :class:`edgeprune.data.DataSplits` where they can: ``train_y``,
    ``val_y``, ``test_y``, ``mean``, ``std``, ``classes``, ``hflip_ok``; the images are the
    ``files`` of each split instead of tensors.
    """

    name: str
    classes: tuple[str, ...]
    files: dict[str, tuple[str, ...]]
    train_y: torch.Tensor
    val_y: torch.Tensor
    test_y: torch.Tensor
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    workers: int = 2
    hflip_ok: bool = True

    streaming = True

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def size(self, split: str) -> int:
        """Images in ``split``."""
        return len(self.files[split])

    def labels(self, split: str) -> torch.Tensor:
        return {"train": self.train_y, "val": self.val_y, "test": self.test_y}[split]

    def take(self, split: str, idx: torch.Tensor) -> torch.Tensor:
        """Decode the images at ``idx`` of ``split`` into uint8 ``(n, 3, S, S)`` (in order;
        an unreadable one is black)."""
        ds = _Files([self.files[split][int(i)] for i in idx], idx, self.image_size)
        return torch.stack([ds[i][0] for i in range(len(ds))]) if len(ds) else self._empty()

    def in_memory(self, per_split: int, seed: int) -> DataSplits:
        """A seeded, class-balanced draw of at most ``per_split`` images of each split,
        decoded into a :class:`DataSplits` (INT8 accuracy checks, smoke tests)."""
        parts = {}
        for split in SPLITS:
            idx = stratified_draw(self.labels(split), per_split, seed)
            parts[split] = (self.take(split, idx), self.labels(split)[idx])
        return DataSplits(
            name=f"{self.name} (draw of {per_split} per split)",
            classes=self.classes,
            train_x=parts["train"][0],
            val_x=parts["val"][0],
            test_x=parts["test"][0],
            train_y=parts["train"][1],
            val_y=parts["val"][1],
            test_y=parts["test"][1],
            mean=self.mean,
            std=self.std,
            hflip_ok=self.hflip_ok,
        )

    def _empty(self) -> torch.Tensor:
        return torch.zeros(0, 3, self.image_size, self.image_size, dtype=torch.uint8)

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool,
        generator: torch.Generator | None,
        flip: bool = True,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised float ``(images, labels)`` batches, like :func:`iterate_batches`,
        decoded by ``workers`` processes (0: in this process)."""
        n = self.size(split)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        chunks = [order[s : s + batch_size] for s in range(0, stop, batch_size)]
        yield from self.batches_of(
            split, chunks, augment=augment, generator=generator, flip=flip, device=device
        )

    def batches_of(
        self,
        split: str,
        chunks: Sequence[torch.Tensor],
        *,
        augment: bool,
        generator: torch.Generator | None,
        flip: bool = True,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of the given index ``chunks`` of ``split`` (a sampler's choice: one
        rank's share of each global batch under DDP), decoded by the workers."""
        sampler = [c.tolist() for c in chunks if len(c)]
        if not sampler:
            return
        loader = torch.utils.data.DataLoader(
            _Files(self.files[split], self.labels(split), self.image_size),
            batch_sampler=sampler,
            num_workers=self.workers,
            persistent_workers=False,
        )
        for xb, yb in loader:
            ok = yb >= 0
            if not bool(ok.all()):
                _console.print(
                    f"[yellow]warning:[/] skipped {int((~ok).sum())} unreadable image(s) of "
                    f"the {split} split of {self.name} (Pillow cannot read them)"
                )
                xb, yb = xb[ok], yb[ok]
                if xb.shape[0] == 0:
                    continue
            if device is not None:
                xb, yb = xb.to(device), yb.to(device)
            if augment:
                xb = augment_batch(xb, generator=generator, flip=flip)
            yield normalize(xb, self.mean, self.std), yb

    def evaluate(self, model: nn.Module, split: str, batch_size: int = 256) -> float:
        """Top-1 of ``model`` over the whole ``split``, streamed (eval mode, no gradients)."""
        if self.size(split) == 0:
            raise DataError(f"no images to evaluate — the {split} split is empty")
        was_training = model.training
        model.eval()
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else None
        correct = seen = 0
        try:
            with torch.no_grad():
                for xb, yb in self.batches(
                    split, batch_size, shuffle=False, augment=False, generator=None, device=device
                ):
                    correct += int((model(xb).argmax(dim=1) == yb).sum())
                    seen += int(yb.shape[0])
        finally:
            model.train(was_training)
        return correct / max(seen, 1)


def decoded_bytes(n_images: int, image_size: int) -> int:
    """Bytes of ``n_images`` decoded to uint8 RGB at ``image_size``."""
    return n_images * 3 * image_size * image_size


def load_streaming(
    root: str | Path,
    *,
    image_size: int,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    workers: int = 2,
) -> StreamingSplits:
    """Scan an ImageFolder directory and split it like :func:`load_data` (no decoding
    beyond the mean/std sample).

    Raises:
        DataError: not an ImageFolder, fewer than two classes.
    """
    path = Path(root).expanduser()
    if not (path.is_dir() and is_imagefolder(path)):
        raise DataError(
            f"{path} is not an ImageFolder directory (train/<class>/*.jpg); streaming reads "
            "ImageFolder trees — extract archives first, or use data.loader=memory"
        )
    scan = scan_imagefolder(path)
    if len(scan.classes) < 2:
        raise DataError(f"{path} has {len(scan.classes)} class(es); classification needs 2")
    paths = np.array(scan.paths)
    labels = torch.tensor(scan.labels, dtype=torch.int64)
    is_train = torch.tensor([s == "train" for s in scan.splits])
    tr_paths, tr_y = paths[is_train.numpy()], labels[is_train]
    te_paths, te_y = paths[(~is_train).numpy()], labels[~is_train]
    gen = torch.Generator().manual_seed(seed)
    if limit is not None:
        keep = balanced_subsample(tr_y, limit, gen)
        tr_paths, tr_y = tr_paths[keep.numpy()], tr_y[keep]
        if te_y.numel():
            keep = balanced_subsample(te_y, limit, gen)
            te_paths, te_y = te_paths[keep.numpy()], te_y[keep]
    train_idx, val_idx = stratified_split(tr_y, val_fraction, gen, scan.classes)
    files = {
        "train": tuple(tr_paths[train_idx.numpy()].tolist()),
        "val": tuple(tr_paths[val_idx.numpy()].tolist()),
        "test": tuple(te_paths.tolist()),
    }
    splits = StreamingSplits(
        name=path.name,
        classes=scan.classes,
        files=files,
        train_y=tr_y[train_idx],
        val_y=tr_y[val_idx],
        test_y=te_y,
        image_size=image_size,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        workers=workers,
    )
    # Statistics of a draw, decoded a chunk at a time (the draw is never held whole).
    draw = stratified_draw(splits.train_y, STATS_IMAGES, seed)
    moments = torch.cat([image_moments(splits.take("train", c)) for c in draw.split(128)])
    mean, std = stats_from_moments(moments, image_size * image_size)
    return dataclasses.replace(
        splits, mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2])
    )
