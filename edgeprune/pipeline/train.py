"""Supervised training and evaluation on in-memory :class:`~edgeprune.data.DataSplits`.

One loop, :func:`run_epochs`, serves plain training (:func:`train`, cross-entropy) and any
other objective (knowledge distillation passes its own ``loss_fn``): SGD with momentum,
linear warm-up then cosine decay stepped per batch, validation accuracy every epoch, and the
best-on-validation weights restored at the end. Model selection never looks at the test split.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from torch import nn

from edgeprune._io import atomic_torch_save
from edgeprune.data import DataSplits, augment_batch, iterate_batches, normalize
from edgeprune.data.streaming import StreamingSplits
from edgeprune.errors import DataError, EdgepruneError
from edgeprune.pipeline import distributed

#: ``loss_fn(model, images, labels)`` -> ``loss`` or ``(loss, logits)``; logits feed train_acc.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]
#: Called after each epoch with that epoch's history row.
EpochCallback = Callable[[dict[str, Any]], None]
# Training data: decoded in memory, or streamed from an ImageFolder per batch.
Data = DataSplits | StreamingSplits


@dataclass(frozen=True)
class TrainResult:
    """What a training run did.

    Attributes:
        best_val_acc: Best top-1 validation accuracy in [0, 1] (the weights kept).
        best_epoch: 1-based epoch that reached it.
        epochs: Epochs run.
        history: One row per epoch: ``epoch``, ``loss``, ``train_acc`` (None when the loss
            function returns no logits), ``val_acc``, ``lr`` (at the epoch's end), ``seconds``.
        wall_s: Wall-clock seconds of the whole run.
    """

    best_val_acc: float
    best_epoch: int
    epochs: float
    history: tuple[dict[str, Any], ...]
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (for ``report.json``)."""
        return {**asdict(self), "history": [dict(row) for row in self.history]}


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _memory_format(model: nn.Module) -> torch.memory_format:
    """Channels-last when the model's first 4-D parameter is (set by :func:`run_epochs`)."""
    for p in model.parameters():
        if p.dim() == 4:
            if p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
                return torch.channels_last
            break
    return torch.contiguous_format


def _set_memory_format(model: nn.Module, memory_format: torch.memory_format) -> None:
    # Module.to accepts memory_format at runtime; torch's type stubs omit it.
    model.to(memory_format=memory_format)  # type: ignore[call-overload]


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    batch_size: int = 512,
) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on uint8 images ``x`` with labels ``y``.

    Runs in eval mode without gradients and restores the model's previous mode.

    Raises:
        DataError: ``x`` holds no images (e.g. the source has no test split).
    """
    if x.shape[0] == 0:
        raise DataError("no images to evaluate — this split is empty (the source has no test?)")
    was_training = model.training
    model.eval()
    correct = 0
    batches = iterate_batches(
        x, y, batch_size, shuffle=False, augment=False, generator=None, mean=mean, std=std,
        device=_device_of(model),
    )  # fmt: skip
    try:
        with torch.no_grad():
            for xb, yb in batches:
                xb = xb.contiguous(memory_format=_memory_format(model))
                correct += int((model(xb).argmax(dim=1) == yb).sum())
    finally:
        model.train(was_training)
    return correct / x.shape[0]


def evaluate_split(model: nn.Module, data: Data, split: str) -> float:
    """Top-1 of ``model`` on a whole split, in memory or streamed from disk."""
    if isinstance(data, StreamingSplits):
        return data.evaluate(model, split)
    x, y = {"val": (data.val_x, data.val_y), "test": (data.test_x, data.test_y)}.get(
        split, (data.train_x, data.train_y)
    )
    return evaluate(model, x, y, data.mean, data.std)


def train_batches(
    data: Data,
    batch_size: int,
    *,
    augment: bool,
    generator: torch.Generator,
    flip: bool,
    drop_last: bool,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled, augmented training batches (in memory or streamed)."""
    if isinstance(data, StreamingSplits):
        return data.batches(
            "train", batch_size, shuffle=True, augment=augment, generator=generator,
            flip=flip, drop_last=drop_last, device=device,
        )  # fmt: skip
    return iterate_batches(
        data.train_x, data.train_y, batch_size, shuffle=True, augment=augment,
        generator=generator, mean=data.mean, std=data.std, flip=flip, drop_last=drop_last,
        device=device,
    )  # fmt: skip


def _rank_batches(
    data: Data,
    batch_size: int,
    *,
    seed: int,
    augment: bool,
    flip: bool,
    drop_last: bool,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Under DDP: this rank's share of every global batch of one seeded order (a
    DistributedSampler): every rank draws the same order, takes rows ``rank::world`` of
    each batch, and augments them with its own generator."""
    from edgeprune.pipeline import distributed

    rank, world = distributed.rank(), distributed.world()
    n = data.size("train")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    aug = torch.Generator().manual_seed(seed * 31 + rank + 1)
    stop = n - n % batch_size if drop_last else n
    parts = [order[s : s + batch_size][rank::world] for s in range(0, stop, batch_size)]
    if isinstance(data, StreamingSplits):
        yield from data.batches_of(
            "train", parts, augment=augment, generator=aug, flip=flip, device=device
        )
        return
    for idx in parts:
        xb, yb = data.train_x[idx].to(device), data.train_y[idx].to(device)
        if augment:
            xb = augment_batch(xb, generator=aug, flip=flip)
        yield normalize(xb, data.mean, data.std), yb


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Learning rate at optimiser step ``step`` (0-based): linear warm-up, then cosine."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def cross_entropy_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain supervised objective, in :data:`LossFn` form."""
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def _progress(enabled: bool) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        "loss {task.fields[loss]}",
        "val {task.fields[val]}",
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
    schedule: list[float],
    advance: Callable[[], None],
) -> tuple[float, float | None]:
    """One pass over ``batches`` with the per-step learning rates ``schedule``.

    Returns:
        ``(mean loss, training accuracy or None when loss_fn gives no logits)``.
    """
    model.train()
    memory_format = _memory_format(model)
    loss_sum = torch.zeros((), device=_device_of(model))
    correct, seen, have_logits = 0, 0, True
    for step_lr, (xb, yb) in zip(schedule, batches, strict=False):
        for group in optimizer.param_groups:
            group["lr"] = step_lr
        result = loss_fn(model, xb.contiguous(memory_format=memory_format), yb)
        loss, logits = result if isinstance(result, tuple) else (result, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Accumulate on-device: a .item() per step would sync a GPU every batch.
        loss_sum += loss.detach() * yb.shape[0]
        seen += yb.shape[0]
        if logits is None:
            have_logits = False
        else:
            correct += int((logits.detach().argmax(dim=1) == yb).sum())
        advance()
    mean_loss = float(loss_sum) / max(1, seen)
    return mean_loss, (correct / seen if have_logits and seen else None)


def run_epochs(
    model: nn.Module,
    data: Data,
    loss_fn: LossFn,
    *,
    epochs: float,
    lr: float,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    warmup_fraction: float = 0.05,
    min_lr: float = 0.0,
    augment: bool = True,
    flip: bool | None = None,
    seed: int = 0,
    out: Path | None = None,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
    description: str = "training",
    channels_last: bool = True,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Optimise ``model`` on ``data.train_x`` with ``loss_fn``; keep the best-on-validation weights.

    Args:
        model: Trained in place; ends holding the best weights found.
        data: Train split for updates, validation split for model selection.
        loss_fn: ``loss_fn(model, images, labels)`` returning the loss, or ``(loss, logits)``
            to also report training accuracy. Called in train mode on normalised batches.
        epochs: Passes over the training split (> 0; a fraction stops part-way through
            the last pass, e.g. 0.25 = a quarter of the batches).
        lr: Peak learning rate (reached after the warm-up).
        batch_size: Images per step; a last partial batch is dropped (BatchNorm needs > 1).
        weight_decay: SGD weight decay (applied to every parameter).
        momentum: SGD momentum (Nesterov off).
        warmup_fraction: Share of all steps spent ramping the lr linearly up to ``lr``.
        min_lr: Learning rate at the end of the cosine.
        augment: Random crop (+ flip) on training batches.
        flip: Random horizontal flip; ``None`` follows ``data.hflip_ok``.
        seed: Seeds the shuffling, the augmentation and ``torch.manual_seed``.
        out: If given, the best ``state_dict`` is written here atomically.
        progress: Show a rich progress bar on stderr.
        on_epoch: Called after every epoch with its history row (logging, checkpoints).
        description: Label of the progress bar.
        channels_last: Train in channels-last memory format (the model is converted back
            at the end). Measured on this project's 2-core CPU: resnet20 steps (batch 128)
            take ~0.45 s instead of ~0.68 s.
        checkpoint: Written atomically after every epoch: model, optimiser, schedule
            position, RNG states, best weights so far, history and wall time.
        resume: Continue from ``checkpoint`` where it stopped; the run ends with the same
            weights as one that was never interrupted (same settings and thread count).

    Returns:
        A :class:`TrainResult` (``wall_s`` adds up over the resumed processes).

    Raises:
        EdgepruneError: ``epochs`` < 1, the loss became NaN/inf (lower ``lr``), or the
            checkpoint to resume is missing, unreadable or from other settings.
    """
    if not epochs > 0:
        raise EdgepruneError(f"epochs={epochs} must be positive")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = _device_of(model)
    n_train = data.size("train")
    drop_last = n_train > batch_size
    steps_per_epoch = n_train // batch_size if drop_last else 1
    # Fractional epochs (KD recovery between prune steps) stop part-way through the last one.
    total_steps = max(1, round(epochs * steps_per_epoch))
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    warmup_steps = min(total_steps - 1, round(warmup_fraction * total_steps))
    flip = data.hflip_ok if flip is None else flip
    best_acc, best_epoch, best_state = -1.0, 0, None
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    if channels_last:
        _set_memory_format(model, torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    world, rank = distributed.world(), distributed.rank()
    settings = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
                "n_train": n_train, "world": world}  # fmt: skip
    first_epoch, wall_before = 1, 0.0
    if resume:
        if checkpoint is None:
            raise EdgepruneError("resume needs a checkpoint path")
        state = _load_checkpoint(checkpoint, settings)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        best_acc, best_epoch, best_state = state["best_acc"], state["best_epoch"], state["best"]
        history = list(state["history"])
        first_epoch, wall_before = state["epoch"] + 1, float(state["wall_s"])
        if progress and rank == 0:
            Console(stderr=True).print(
                f"{description}: resuming at epoch {first_epoch}/{n_epochs} (best val "
                f"{best_acc:.3f} at epoch {best_epoch}) from {checkpoint}"
            )
    # Under torchrun: gradients averaged over the ranks, each with its share of a batch.
    trained = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    progress = progress and rank == 0
    try:
        with _progress(progress) as bar:
            done_steps = min(total_steps, (first_epoch - 1) * steps_per_epoch)
            task = bar.add_task(
                description, total=total_steps, completed=done_steps, loss="-", val="-"
            )
            for epoch in range(first_epoch, n_epochs + 1):
                epoch_start = time.perf_counter()
                if world > 1:
                    batches = _rank_batches(
                        data, batch_size, seed=seed * 100_003 + epoch, augment=augment,
                        flip=flip, drop_last=drop_last, device=device,
                    )  # fmt: skip
                else:
                    batches = train_batches(
                        data, batch_size, augment=augment, generator=generator, flip=flip,
                        drop_last=drop_last, device=device,
                    )  # fmt: skip
                first_step = (epoch - 1) * steps_per_epoch
                schedule = [
                    lr_at(s, total_steps, warmup_steps, lr, min_lr)
                    for s in range(first_step, min(first_step + steps_per_epoch, total_steps))
                ]
                mean_loss, train_acc = _train_epoch(
                    trained, optimizer, batches, loss_fn, schedule, lambda: bar.advance(task)
                )
                if not math.isfinite(mean_loss):
                    raise EdgepruneError(
                        f"{description}: loss became {mean_loss} in epoch {epoch} — lower lr "
                        f"(now {lr}) or check the data"
                    )
                val_acc = evaluate_split(model, data, "val")
                if val_acc > best_acc:
                    best_acc, best_epoch = val_acc, epoch
                    best_state = {
                        k: v.detach().clone(memory_format=torch.contiguous_format)
                        for k, v in model.state_dict().items()
                    }
                row = {
                    "epoch": epoch,
                    "loss": mean_loss,
                    "train_acc": train_acc,
                    "val_acc": val_acc,
                    "lr": schedule[-1],
                    "seconds": time.perf_counter() - epoch_start,
                }
                history.append(row)
                bar.update(
                    task, loss=f"{mean_loss:.3f}", val=f"{val_acc:.3f} (best {best_acc:.3f})"
                )
                if progress and not bar.console.is_terminal:
                    # Live bars draw nothing into a file (CI logs, nohup): one line per epoch.
                    bar.console.print(
                        f"{description}: epoch {epoch}/{n_epochs} loss {mean_loss:.3f} val "
                        f"{val_acc:.3f} (best {best_acc:.3f}) {row['seconds']:.0f} s",
                        soft_wrap=True,
                    )
                if checkpoint is not None and rank == 0:
                    _save_checkpoint(
                        checkpoint, settings, epoch, model, optimizer, generator,
                        best_acc, best_epoch, best_state, history,
                        wall_before + time.perf_counter() - start,
                    )  # fmt: skip
                if on_epoch is not None:
                    on_epoch(dict(row))
    finally:
        if channels_last:
            _set_memory_format(model, torch.contiguous_format)
    assert best_state is not None  # epochs >= 1, and any accuracy beats -1
    model.load_state_dict(best_state)
    if out is not None and rank == 0:
        atomic_torch_save(out, best_state)
    return TrainResult(
        best_val_acc=best_acc,
        best_epoch=best_epoch,
        epochs=epochs,
        history=tuple(history),
        wall_s=wall_before + time.perf_counter() - start,
    )


CHECKPOINT_VERSION = 1


def _save_checkpoint(
    path: Path,
    settings: dict[str, Any],
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    best_acc: float,
    best_epoch: int,
    best_state: dict[str, torch.Tensor] | None,
    history: list[dict[str, Any]],
    wall_s: float,
) -> None:
    atomic_torch_save(
        path,
        {
            "version": CHECKPOINT_VERSION,
            "settings": settings,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "best_acc": best_acc,
            "best_epoch": best_epoch,
            "best": best_state,
            "history": history,
            "wall_s": wall_s,
        },
    )


def _load_checkpoint(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    if not Path(path).is_file():
        raise EdgepruneError(f"no training checkpoint at {path} to resume; start without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EdgepruneError(
            f"cannot read training checkpoint {path} ({type(exc).__name__}); delete it and "
            "start again without --resume"
        ) from exc
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise EdgepruneError(f"{path} is not a training checkpoint of this edgeprune version")
    if state["settings"] != settings:
        diff = ", ".join(
            f"{k}: {state['settings'].get(k)} then, {v} now"
            for k, v in settings.items()
            if state["settings"].get(k) != v
        )
        raise EdgepruneError(
            f"{path} was written with other settings ({diff}); resume with the same ones, "
            "or start again without --resume"
        )
    return state


def train(
    model: nn.Module,
    data: Data,
    *,
    epochs: int,
    lr: float = 0.1,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    seed: int = 0,
    out: Path | None = None,
    progress: bool = True,
    augment: bool = True,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train ``model`` from its current weights with cross-entropy (see :func:`run_epochs`).

    Augmentation (``augment``): random crop with 4-pixel padding, plus a horizontal flip when
    ``data.hflip_ok``. It slows the first epochs (digits: ~65% validation accuracy after 3
    epochs with it, ~95% without) and pays off over longer schedules. The model ends holding
    its best-on-validation weights, which are also written to ``out`` (a plain
    ``state_dict``) when given.
    """
    return run_epochs(
        model,
        data,
        cross_entropy_loss,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        momentum=momentum,
        seed=seed,
        out=out,
        progress=progress,
        augment=augment,
        checkpoint=checkpoint,
        resume=resume,
    )
