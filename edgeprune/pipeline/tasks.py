"""What the search optimises besides latency: the user's task.

The search, the depth choice and the final report ask one object four things: score a
pruned model (the proxy; higher is better), recover one by fine-tuning against the unpruned
teacher, give input batches for BatchNorm re-estimation and INT8 calibration, and report
the final metric. :class:`ClassifierTask` answers from an in-memory image dataset (top-1,
knowledge distillation); :class:`CallbackTask` answers with the user's own functions (a
detector's mAP and its training loop), which is what :func:`edgeprune.compress` takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgeprune.calibration.bn import reestimate_bn_
from edgeprune.config import FinetuneConfig, RunConfig
from edgeprune.data import DataSplits, iterate_batches, stratified_draw
from edgeprune.data.streaming import StreamingSplits
from edgeprune.errors import SearchError

__all__ = ["CallbackTask", "ClassifierTask", "Task", "calibration_batches"]

#: Fewest validation images left beside the proxy's for a re-score draw.
MIN_RESCORE = 200


class Task:
    """The interface the search uses; see :class:`ClassifierTask` and :class:`CallbackTask`.

    Attributes:
        metric: Name of what :meth:`score` returns (``top-1``, ``mAP``, ...).
        percent: Whether reports show the metric as a percentage (a fraction in [0, 1]).
        bn_inputs: Input batches (normalised as the model expects) for BN re-estimation.
    """

    metric: str = "top-1"
    percent: bool = True
    bn_inputs: list[torch.Tensor]

    def reestimate_bn(self, model: nn.Module) -> None:
        """Re-estimate BatchNorm statistics of a pruned ``model`` in place (EagleEye)."""
        if self.bn_inputs:
            reestimate_bn_(model, self.bn_inputs)

    def score(self, model: nn.Module) -> float:
        """The proxy: BN re-estimated, then the metric on the search's held-out subset."""
        raise NotImplementedError

    def score_se(self, value: float) -> float:
        """One standard error of :meth:`score` near ``value`` (0 when unknown)."""
        return 0.0

    def rescore(self, model: nn.Module) -> float | None:
        """The proxy's metric on a validation draw disjoint from :meth:`score`'s (BN
        re-estimated); None when the task has no such draw. The search re-scores its few
        best candidates with it, so the one it keeps did not win by the proxy's noise."""
        return None

    def rescore_size(self) -> int:
        """Images in :meth:`rescore`'s draw (0: none)."""
        return 0

    def score_size(self) -> int:
        """Images in :meth:`score`'s draw (0: unknown)."""
        return 0

    def both_draws(self, proxy: float, second: float) -> float:
        """The proxy's score and :meth:`rescore`'s together, weighted by the draws' sizes
        (their mean when the sizes are unknown)."""
        n1, n2 = self.score_size(), self.rescore_size()
        return (n1 * proxy + n2 * second) / (n1 + n2) if n1 and n2 else 0.5 * (proxy + second)

    def recover(
        self,
        student: nn.Module,
        teacher: nn.Module,
        epochs: float,
        *,
        seed: int,
        progress: bool = False,
        description: str = "fine-tune (KD)",
    ) -> float | None:
        """Fine-tune ``student`` in place; return its validation metric when known."""
        raise NotImplementedError

    def epochs_for(self, images: int) -> float:
        """Fine-tune epochs that see about ``images`` training images (at most one)."""
        return 1.0

    def importance_batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """Labelled batches for gradient (Taylor) importance."""
        raise SearchError(
            "criterion 'taylor' needs labelled classification batches; use --criterion l1, "
            "l2 or bn_scale with your own evaluate/finetune callbacks"
        )

    def final_metrics(self, model: nn.Module) -> dict[str, float | None]:
        """The reported metric on the validation and test splits (None where absent)."""
        raise NotImplementedError

    def int8_calibration(self) -> Any:
        """What :func:`edgeprune.calibration.int8.export_int8` calibrates on: the training
        split (``DataSplits``) or float32 model inputs ``(N, C, H, W)``."""
        raise NotImplementedError

    def int8_accuracy(self, fp32: Any, int8: Any, profile: Any) -> dict[str, Any] | None:
        """Top-1 of the FP32 and INT8 ONNX models (None when the task cannot run ONNX)."""
        return None

    def summary(self) -> dict[str, Any]:
        """What the report says about the data."""
        raise NotImplementedError


@dataclass
class ClassifierTask(Task):
    """Image classification on an in-memory dataset: top-1 proxy, KD recovery.

    Build it with :meth:`from_config`: the BN batches, the Taylor batches and the proxy's
    validation subset are seeded, stratified draws (the splits may be class-sorted).
    """

    data: DataSplits | StreamingSplits
    finetune: FinetuneConfig
    bn_inputs: list[torch.Tensor]
    taylor_inputs: list[torch.Tensor]
    taylor_labels: list[torch.Tensor]
    val_x: torch.Tensor
    val_y: torch.Tensor
    rescore_x: torch.Tensor | None = None
    rescore_y: torch.Tensor | None = None
    metric: str = "top-1"
    percent: bool = True
    _decoded: DataSplits | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_config(cls, data: DataSplits | StreamingSplits, config: RunConfig) -> ClassifierTask:
        """The proxy's subsets (decoded into memory even when ``data`` streams)."""
        seed, search = config.seed, config.search
        bn_idx = stratified_draw(data.train_y, 64 * search.bn_batches, seed)
        bn_inputs = _augmented_batches(data, bn_idx, seed) if search.bn_batches else []
        taylor_idx = stratified_draw(data.train_y, 64 * max(search.bn_batches, 2), seed + 1)
        taylor = list(
            iterate_batches(
                data.take("train", taylor_idx), data.train_y[taylor_idx], 64, shuffle=False,
                augment=False, generator=None, mean=data.mean, std=data.std,
            )
        )  # fmt: skip
        val_idx = stratified_draw(data.val_y, search.val_subset, seed + 2)
        # The re-score draw: validation images the proxy does not use, as many as it uses
        # (none when fewer than MIN_RESCORE, or than the proxy's, are left).
        rest = torch.ones(data.val_y.numel(), dtype=torch.bool)
        rest[val_idx] = False
        rest_idx = torch.nonzero(rest).flatten()
        re_idx = rest_idx[stratified_draw(data.val_y[rest_idx], search.val_subset, seed + 3)]
        use_rescore = search.rescore_top > 0 and re_idx.numel() >= min(
            MIN_RESCORE, search.val_subset
        )
        return cls(
            data=data,
            finetune=config.finetune,
            bn_inputs=bn_inputs,
            taylor_inputs=[x for x, _ in taylor],
            taylor_labels=[y for _, y in taylor],
            val_x=data.take("val", val_idx),
            val_y=data.val_y[val_idx],
            rescore_x=data.take("val", re_idx) if use_rescore else None,
            rescore_y=data.val_y[re_idx] if use_rescore else None,
        )

    def score(self, model: nn.Module) -> float:
        from edgeprune.pipeline.train import evaluate

        self.reestimate_bn(model)
        return evaluate(model, self.val_x, self.val_y, self.data.mean, self.data.std)

    def score_se(self, value: float) -> float:
        """Binomial standard error over the proxy's validation subset."""
        n = max(int(self.val_y.shape[0]), 1)
        return math.sqrt(max(value * (1 - value), 1e-12) / n)

    def rescore(self, model: nn.Module) -> float | None:
        from edgeprune.pipeline.train import evaluate

        if self.rescore_x is None or self.rescore_y is None:
            return None
        self.reestimate_bn(model)
        return evaluate(model, self.rescore_x, self.rescore_y, self.data.mean, self.data.std)

    def rescore_size(self) -> int:
        return 0 if self.rescore_y is None else int(self.rescore_y.shape[0])

    def score_size(self) -> int:
        return int(self.val_y.shape[0])

    def recover(
        self,
        student: nn.Module,
        teacher: nn.Module,
        epochs: float,
        *,
        seed: int,
        progress: bool = False,
        description: str = "fine-tune (KD)",
    ) -> float | None:
        from edgeprune.pipeline import distributed
        from edgeprune.pipeline.finetune import distill_

        if distributed.world() > 1:  # the other ranks take their share (see distributed)
            distributed.broadcast_job(
                {"kind": "distill", "student": student, "teacher": teacher, "epochs": epochs,
                 "seed": seed, "description": description}
            )  # fmt: skip
        result = distill_(
            student,
            teacher,
            self.data,
            self.finetune,
            epochs,
            seed=seed,
            progress=progress,
            description=description,
        )
        return None if result is None else result.best_val_acc

    def epochs_for(self, images: int) -> float:
        n_train = self.data.size("train")
        return min(1.0, images / n_train) if n_train else 0.0

    def importance_batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return zip(self.taylor_inputs, self.taylor_labels, strict=True)

    def final_metrics(self, model: nn.Module) -> dict[str, float | None]:
        from edgeprune.pipeline.train import evaluate_split

        d = self.data
        test = evaluate_split(model, d, "test") if d.size("test") else None
        return {"val": evaluate_split(model, d, "val"), "test": test}

    def _memory(self) -> DataSplits:
        # INT8 calibration and its ONNX accuracy check run on decoded images: a streamed
        # set lends a seeded, class-balanced draw (up to 2,000 images per split).
        if not isinstance(self.data, StreamingSplits):
            return self.data
        if self._decoded is None:
            self._decoded = self.data.in_memory(2000, seed=0)
        return self._decoded

    def int8_calibration(self) -> Any:
        return self._memory()

    def int8_accuracy(self, fp32: Any, int8: Any, profile: Any) -> dict[str, Any] | None:
        from edgeprune.calibration.int8 import compare_int8

        data = self._memory()
        split = "test" if data.size("test") else "val"
        return {"split": split, **compare_int8(fp32, int8, data, profile, split=split)}

    def summary(self) -> dict[str, Any]:
        d = self.data
        return {
            "name": d.name,
            "classes": len(d.classes),
            "train": d.size("train"),
            "val": d.size("val"),
            "test": d.size("test"),
            "loader": "stream" if d.streaming else "memory",
        }


def _augmented_batches(
    data: DataSplits | StreamingSplits, idx: torch.Tensor, seed: int
) -> list[torch.Tensor]:
    """BN re-estimation batches, augmented like training (seeded, so every candidate sees
    the same ones). The baseline's BN statistics were gathered on augmented images: on the
    shared CIFAR-10 resnet20, re-estimating on 256 plain images cost 4.1 points of proxy
    accuracy for the *unpruned* model (86.0% -> 81.9%; 81.5% with 1024), on augmented ones
    none (86.1%)."""
    gen = torch.Generator().manual_seed(seed)
    return [
        x
        for x, _ in iterate_batches(
            data.take("train", idx), data.train_y[idx], 64, shuffle=False, augment=True,
            generator=gen, mean=data.mean, std=data.std, flip=data.hflip_ok,
        )
    ]  # fmt: skip


Evaluate = Callable[[nn.Module], float]
Finetune = Callable[[nn.Module, nn.Module, float], Any]


@dataclass
class CallbackTask(Task):
    """The user's own task: ``evaluate(model) -> float`` (higher is better) and optionally
    ``finetune(student, teacher, epochs)``, fed batches of model inputs.

    Args:
        evaluate: Scores a model (in eval mode, on the user's validation data). Called for
            every candidate the search weighs, so make it a few seconds at most: a
            subset of the validation set is the usual proxy.
        finetune: Trains ``student`` in place for ``epochs`` (fractions allowed) against
            the unpruned ``teacher`` (distill, or ignore it and train on labels). None: no
            recovery between steps or at the end.
        calib: Input batches (already normalised, the model's input shape) for BatchNorm
            re-estimation and INT8 calibration; the user's training images.
        metric: The metric's name in reports.
        percent: Show the metric as a percentage (it is a fraction in [0, 1]).
        metric_se: One standard error of ``evaluate`` (its noise); depth pruning must beat
            channels alone by more than this. 0: any gain counts.
        test_evaluate: Scores the final model on held-out test data, reported only.
        train_images: Training-set size, to turn an image count into ``finetune`` epochs
            (None: one epoch where a short recovery is asked).
    """

    evaluate: Evaluate
    calib: list[torch.Tensor]
    finetune: Finetune | None = None
    metric: str = "metric"
    percent: bool = False
    metric_se: float = 0.0
    test_evaluate: Evaluate | None = None
    train_images: int | None = None
    bn_inputs: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not callable(self.evaluate):
            raise SearchError("evaluate must be a function model -> float (higher is better)")
        if self.finetune is not None and not callable(self.finetune):
            raise SearchError("finetune must be a function (student, teacher, epochs) or None")
        if not self.calib:
            raise SearchError(
                "calib_data gave no batches; pass a few batches of training inputs "
                "(BatchNorm re-estimation and INT8 calibration need them)"
            )
        if not self.bn_inputs:
            self.bn_inputs = list(self.calib)

    def score(self, model: nn.Module) -> float:
        self.reestimate_bn(model)
        return self._call(self.evaluate, model, "evaluate")

    def score_se(self, value: float) -> float:
        return self.metric_se

    def recover(
        self,
        student: nn.Module,
        teacher: nn.Module,
        epochs: float,
        *,
        seed: int,
        progress: bool = False,
        description: str = "fine-tune",
    ) -> float | None:
        if self.finetune is None or epochs <= 0:
            return None
        teacher.eval()
        torch.manual_seed(seed)
        student.train()
        try:
            self.finetune(student, teacher, epochs)
        finally:
            student.eval()
        return None

    def epochs_for(self, images: int) -> float:
        if self.train_images:
            return min(1.0, images / self.train_images)
        return 1.0

    def final_metrics(self, model: nn.Module) -> dict[str, float | None]:
        model.eval()
        val = self._call(self.evaluate, model, "evaluate")
        test = None
        if self.test_evaluate is not None:
            test = self._call(self.test_evaluate, model, "test_evaluate")
        return {"val": val, "test": test}

    def int8_calibration(self) -> Any:
        return torch.cat([b.detach().cpu().float() for b in self.calib]).numpy()

    def summary(self) -> dict[str, Any]:
        return {
            "name": "user callbacks",
            "metric": self.metric,
            "calibration_batches": len(self.calib),
            "train": self.train_images,
        }

    def _call(self, fn: Evaluate, model: nn.Module, what: str) -> float:
        model.eval()
        with torch.no_grad():
            value = fn(model)
        try:
            out = float(value)
        except (TypeError, ValueError) as exc:
            raise SearchError(
                f"{what}(model) returned {type(value).__name__}; return one float (higher is "
                "better)"
            ) from exc
        if not math.isfinite(out):
            raise SearchError(f"{what}(model) returned {out}; return a finite float")
        return out


def calibration_batches(data: Any, limit: int = 8) -> list[torch.Tensor]:
    """Up to ``limit`` input batches from a DataLoader, a list of tensors or of
    ``(inputs, ...)`` tuples: the first element of each batch is the input."""
    out: list[torch.Tensor] = []
    it: Iterator[Any] = iter(data)
    for batch in it:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if isinstance(x, dict):
            raise SearchError(
                "calib_data batches are dicts; give input tensors (or (input, target) tuples)"
            )
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            raise SearchError(
                f"calib_data gave a {type(x).__name__}; give batches of input tensors "
                "(N, C, H, W), or (input, target) tuples"
            )
        out.append(x.detach().cpu().float())
        if len(out) >= limit:
            break
    return out
