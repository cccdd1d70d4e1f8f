"""The library API: compress your own model, scored by your metric, trained by your loop.

``edgeprune.compress`` runs the same search as the CLI (latency measured on the profile's
runtime, the LUT, depth pruning, landing on the budget) on a model object. A classifier on
an image dataset needs only ``data=``; any other model (a detector's tuple of heads, a
segmentation dict) brings ``evaluate`` (higher is better), optionally ``finetune``, and a
few input batches (``calib_data``) for BatchNorm re-estimation and INT8 calibration::

    import edgeprune
    result = edgeprune.compress(
        model, torch.zeros(1, 3, 256, 256),
        evaluate=lambda m: my_map(m, val_subset),      # called for every candidate
        finetune=lambda student, teacher, epochs: my_train(student, epochs),
        calib_data=train_loader,                       # a few batches are taken
        profile="jetson-orin-nano-trt-fp16", budget_ms=8.0, out="runs/det",
    )
    result.model, result.report["speedup"], result.onnx_path

The CLI's ``compress`` calls :func:`compress` with a run config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from edgeprune.config import RunConfig, set_field
from edgeprune.errors import EdgepruneError, SearchError

__all__ = ["Compressed", "compress"]


@dataclass(frozen=True)
class Compressed:
    """What :func:`compress` returns.

    Attributes:
        model: The pruned, fine-tuned model (eval mode).
        report: ``report.json`` as a dict (latency, metric, channels, warnings).
        run_dir: The run directory (ONNX files, report.md/html, checkpoint).
    """

    model: nn.Module
    report: dict[str, Any]
    run_dir: Path

    @property
    def onnx_path(self) -> Path:
        """The exported FP32 ONNX of the pruned model."""
        return self.run_dir / "model.onnx"

    @property
    def budget_met(self) -> bool | None:
        """Whether the final measurement met the latency budget (None: no latency goal)."""
        met = self.report.get("goal", {}).get("budget_met")
        return None if met is None else bool(met)


def compress(
    model: nn.Module | str | None = None,
    example_input: torch.Tensor | None = None,
    *,
    evaluate: Callable[[nn.Module], float] | None = None,
    finetune: Callable[[nn.Module, nn.Module, float], Any] | None = None,
    calib_data: Iterable[Any] | None = None,
    data: str | Path | None = None,
    profile: str | Path | None = None,
    budget_ms: float | None = None,
    speedup: float | None = None,
    out: str | Path = "runs/compress",
    ignored_layers: Sequence[str] | None = None,
    min_keep: Mapping[str, float] | None = None,
    metric: str = "metric",
    metric_percent: bool = False,
    metric_se: float = 0.0,
    test_evaluate: Callable[[nn.Module], float] | None = None,
    train_images: int | None = None,
    config: RunConfig | Mapping[str, Any] | str | Path | None = None,
    settings: Mapping[str, Any] | None = None,
    resume: bool = False,
    console: Console | None = None,
) -> Compressed:
    """Prune ``model`` until its latency on ``profile`` meets the goal; fine-tune; export.

    Args:
        model: The trained model (an ``nn.Module``, not modified), or a zoo name /
            ``package.module:factory`` string (weights from ``config``). None: the config's.
        example_input: One input batch ``(1, C, H, W)``; its shape replaces the profile's
            input shape. None: the profile's.
        evaluate: ``evaluate(model) -> float``, higher is better, on your validation data
            (keep it to seconds: it scores every candidate). Replaces the built-in top-1.
        finetune: ``finetune(student, teacher, epochs)`` trains ``student`` in place
            (``epochs`` may be fractional; ``teacher`` is the unpruned model). Replaces the
            built-in distillation; None with ``evaluate``: no recovery.
        calib_data: Training inputs: a DataLoader or a list of batches (tensors or
            ``(input, target)`` tuples); up to 8 batches are taken for BatchNorm
            re-estimation and INT8 calibration. Required with ``evaluate``.
        data: An image-classification dataset (``digits``, an ImageFolder, a .tar.gz, ...)
            for the built-in top-1 and distillation, when there is no ``evaluate``.
        profile: Device profile name or YAML path (default ``cpu-ort-1t``).
        budget_ms: Latency budget on the profile's runtime, in ms.
        speedup: Or a speed-up over the baseline measured at the start (default 2).
        out: Run directory (must be new unless ``resume``).
        ignored_layers: Layers whose output channels are never pruned.
        min_keep: Per-layer limits: layer name -> fraction (0, 1] of its output channels
            always kept.
        metric: The metric's name in reports (``mAP``, ``mIoU``).
        metric_percent: Report the metric as a percentage (it is a fraction in [0, 1]).
        metric_se: One standard error of ``evaluate``; depth pruning must beat channels
            alone by more than this.
        test_evaluate: Scores the final model on held-out data (reported only).
        train_images: Your training-set size (turns a short recovery into ``finetune``
            epochs; None: one epoch).
        config: A run config (object, dict or YAML path) for everything else.
        settings: Overrides as ``{"search.steps": 2, "finetune.total_epochs": 4}``.
        resume: Continue the interrupted run in ``out`` (pass the same model and callbacks).
        console: Where progress goes (stderr by default).

    Returns:
        The pruned model, the report and the run directory.

    Raises:
        EdgepruneError: bad arguments, a budget below what the model can reach, a model the
            pruning engine cannot handle; each message names the fix.
    """
    from edgeprune.pipeline.compress import compress_run
    from edgeprune.pipeline.tasks import CallbackTask, calibration_batches

    run_dir = Path(out)
    cfg = _config(
        config,
        model=model,
        example_input=example_input,
        data=data,
        profile=profile,
        budget_ms=budget_ms,
        speedup=speedup,
        ignored_layers=ignored_layers,
        min_keep=min_keep,
        settings=settings,
        callbacks=evaluate is not None,
    )
    task = None
    if evaluate is not None:
        if calib_data is None:
            raise SearchError(
                "evaluate= needs calib_data= (a DataLoader or a few input batches) for "
                "BatchNorm re-estimation and INT8 calibration"
            )
        task = CallbackTask(
            evaluate=evaluate,
            calib=calibration_batches(calib_data),
            finetune=finetune,
            metric=metric,
            percent=metric_percent,
            metric_se=metric_se,
            test_evaluate=test_evaluate,
            train_images=train_images,
        )
    elif finetune is not None or calib_data is not None:
        raise SearchError(
            "finetune= and calib_data= go with evaluate=; without evaluate, edgeprune scores "
            "by top-1 on data= and fine-tunes by distillation"
        )
    obj = model if isinstance(model, nn.Module) else None
    if obj is None and task is not None:
        from edgeprune.models import load_model

        obj = load_model(cfg.model.name, cfg.model.num_classes or 1, cfg.model.weights)
    report, pruned = compress_run(
        cfg, run_dir, resume=resume, console=console, model=obj, task=task
    )
    return Compressed(model=pruned, report=report, run_dir=run_dir)


def _config(
    config: RunConfig | Mapping[str, Any] | str | Path | None,
    *,
    model: nn.Module | str | None,
    example_input: torch.Tensor | None,
    data: str | Path | None,
    profile: str | Path | None,
    budget_ms: float | None,
    speedup: float | None,
    ignored_layers: Sequence[str] | None,
    min_keep: Mapping[str, float] | None,
    settings: Mapping[str, Any] | None,
    callbacks: bool,
) -> RunConfig:
    if isinstance(config, RunConfig):
        raw = config.model_dump()
    elif isinstance(config, Mapping):
        raw = RunConfig.validate_dict(dict(config), where="config=").model_dump()
    elif config is not None:
        raw = RunConfig.from_yaml(Path(config)).model_dump()
    else:
        raw = RunConfig().model_dump()
    if isinstance(model, nn.Module):
        cls = type(model)
        raw["model"]["name"] = f"{cls.__module__}:{cls.__qualname__}"
        raw["model"]["weights"] = None
    elif isinstance(model, str):
        raw["model"]["name"] = model
    elif model is not None:
        raise EdgepruneError(
            f"model must be an nn.Module or a model name, got {type(model).__name__}"
        )
    if example_input is not None:
        if not isinstance(example_input, torch.Tensor) or example_input.ndim != 4:
            raise EdgepruneError(
                "example_input must be one image batch tensor (1, C, H, W); got "
                f"{getattr(example_input, 'shape', type(example_input).__name__)}"
            )
        raw["input_shape"] = [int(d) for d in example_input.shape[1:]]
    if data is not None:
        if callbacks:
            raise SearchError(
                "pass either data= (built-in top-1 and distillation) or evaluate= (your "
                "metric), not both"
            )
        raw["data"]["source"] = str(data)
    if profile is not None:
        raw["profile"] = str(profile)
    if budget_ms is not None or speedup is not None:
        raw["goal"] = {**raw["goal"], "budget_ms": budget_ms, "speedup": speedup}
        raw["goal"].update(sparsity=None, flops_ratio=None)
    if ignored_layers is not None:
        raw["search"]["ignored_layers"] = list(ignored_layers)
    if min_keep is not None:
        raw["search"]["min_keep"] = dict(min_keep)
    goals = ("goal.budget_ms", "goal.speedup", "goal.sparsity", "goal.flops_ratio")
    if any(k in goals and v is not None for k, v in (settings or {}).items()):
        raw["goal"].update({g.split(".")[1]: None for g in goals})  # a goal replaces the goal
    for key, value in (settings or {}).items():
        set_field(raw, key, value, where=f"settings[{key!r}]")
    cfg = RunConfig.validate_dict(raw, where="edgeprune.compress arguments")
    if callbacks and cfg.search.criterion == "taylor":
        raise SearchError("criterion 'taylor' needs labelled batches; use l1, l2 or bn_scale")
    return cfg
