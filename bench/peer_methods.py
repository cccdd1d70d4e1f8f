"""Pieces of the CIFAR-10 peer benchmark (``bench_cifar10.py``): data, baseline, method runs.

Every method is one ``edgeprune compress`` run (``edgeprune.pipeline.compress.compress``)
with its own run config; they share the baseline weights, the data, the device profile and
the fine-tuning schedule. Only the searcher, the channel rounding and the goal differ:

=================== =========== ======== ====================================================
method              searcher    rounding goal
=================== =========== ======== ====================================================
edgeprune           rl          yes      latency: speedup 1/fraction over the measured base
rl-flops            rl-flops    yes      MACs ratio = edgeprune's final MACs / base MACs
uniform             uniform     yes      MACs ratio = fraction (or edgeprune's, see below)
magnitude           magnitude   no       MACs ratio = fraction (or edgeprune's)
magnitude-rounded   magnitude   yes      MACs ratio = fraction (or edgeprune's)
=================== =========== ======== ====================================================
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from edgeprune import __version__
from edgeprune._io import atomic_write_json, sha256_file
from edgeprune.config import RunConfig
from edgeprune.data import DataSplits, extract_archive, load_data
from edgeprune.errors import DataError
from edgeprune.models import load_model
from edgeprune.pipeline.compress import compress
from edgeprune.pipeline.train import evaluate, train

#: Run order matters: rl-flops (and, with ``match="edgeprune"``, every MACs-goal method)
#: takes its MACs target from the edgeprune run at the same budget.
METHODS: tuple[str, ...] = ("edgeprune", "rl-flops", "uniform", "magnitude", "magnitude-rounded")


@dataclass(frozen=True)
class MethodSpec:
    """How a benchmark method maps onto a run config.

    Attributes:
        searcher: ``search.searcher`` of the run.
        round_to_multiple: Round channel counts to the device's channel multiple.
        criterion: Which channels inside a group go (magnitude: Torch-Pruning's L2).
        goal: ``latency`` (speedup over the measured baseline), ``edgeprune-macs`` (MACs
            ratio the edgeprune run reached) or ``macs`` (the benchmark's ``match`` rule).
    """

    searcher: str
    round_to_multiple: bool
    criterion: str
    goal: str


SPECS: dict[str, MethodSpec] = {
    "edgeprune": MethodSpec("rl", True, "l1", "latency"),
    "rl-flops": MethodSpec("rl-flops", True, "l1", "edgeprune-macs"),
    "uniform": MethodSpec("uniform", True, "l1", "macs"),
    "magnitude": MethodSpec("magnitude", False, "l2", "macs"),
    "magnitude-rounded": MethodSpec("magnitude", True, "l2", "macs"),
}


@dataclass(frozen=True)
class BenchSettings:
    """Everything that changes the benchmark's numbers (hashed into its cache keys).

    Attributes:
        archive: The CIFAR-10 ImageFolder ``.tar.gz``.
        smoke_per_class: When set, a subset archive with this many train images per class
            (half as many test images) is cut from ``archive`` and used instead.
        limit: Cap on training images (validation included); the test split is capped the
            same way, so 10000 keeps the whole CIFAR-10 test set.
        model: Zoo name of the model.
        baseline_epochs: Epochs of the baseline's supervised training.
        profile: Device profile name or YAML path.
        budgets: Latency budgets as fractions of the baseline's measured p50.
        methods: Methods to run, in run order.
        match: MACs goal of uniform/magnitude: ``budget`` (MACs ratio = budget fraction, the
            FLOPs user's reading of a latency budget) or ``edgeprune`` (edgeprune's MACs).
        step_fraction, samples, rl_epochs, val_subset, bn_batches, max_steps: Search knobs.
        step_epochs, final_epochs: KD fine-tuning epochs after each step / at the end.
        repeats: Interleaved benchmark runs of the final measurement (medians are kept).
        blocks: Rounds per benchmark run (None: the profile's).
        seed: Seed of data split, training and search.
        threads: torch threads.
    """

    archive: str
    smoke_per_class: int | None = None
    limit: int | None = 10000
    model: str = "resnet20"
    baseline_epochs: int = 30
    profile: str = "cpu-ort-1t"
    budgets: tuple[float, ...] = (0.5, 0.35)
    methods: tuple[str, ...] = METHODS
    match: str = "budget"
    step_fraction: float = 0.05
    samples: int = 6
    rl_epochs: int = 3
    val_subset: int = 1000
    bn_batches: int = 4
    max_steps: int = 40
    step_epochs: int = 0
    final_epochs: int = 8
    repeats: int = 5
    blocks: int | None = None
    seed: int = 0
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def digest(obj: Any) -> str:
    """16 hex characters of sha256 over ``obj``'s canonical JSON."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def budget_tag(fraction: float) -> str:
    """``0.35`` -> ``"35"`` (percent of the baseline p50, used in names)."""
    return f"{round(100 * fraction):d}"


# ---------------------------------------------------------------------------------- data


def smoke_archive(archive: Path, per_class: int, cache: Path) -> Path:
    """A small ImageFolder ``.tar.gz`` cut from ``archive``: ``per_class`` train images and
    ``max(2, per_class // 2)`` test images per class (the first ones in archive order)."""
    out = cache / "data" / f"cifar10-smoke{per_class}-{sha256_file(archive)[:12]}.tar.gz"
    if out.is_file():
        return out
    quota = {"train": per_class, "test": max(2, per_class // 2)}
    taken: dict[tuple[str, str], int] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    try:
        with tarfile.open(archive) as src, tarfile.open(tmp, "w:gz") as dst:
            for member in src:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) != 3 or parts[0] not in quota:
                    continue
                key = (parts[0], parts[1])
                if taken.get(key, 0) >= quota[parts[0]]:
                    continue
                data = src.extractfile(member)
                if data is None:
                    continue
                dst.addfile(member, io.BytesIO(data.read()))
                taken[key] = taken.get(key, 0) + 1
    except (tarfile.TarError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot cut a smoke subset from {archive} ({exc}); is it a tar?") from exc
    if not taken:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{archive} has no train/<class>/<image> members; give CIFAR-10 JPEGs")
    tmp.replace(out)
    return out


@dataclass(frozen=True)
class DataInfo:
    """The data every run uses: the archive compress loads, its splits, and phase times."""

    source: Path
    data: DataSplits
    archive_sha256: str
    extract_s: float
    decode_s: float


def prepare_data(settings: BenchSettings, cache: Path) -> DataInfo:
    """Extract the archive into the library's data cache and decode it (both cached)."""
    archive = Path(settings.archive).expanduser()
    if not archive.is_file():
        raise DataError(
            f"CIFAR-10 archive {archive} does not exist; pass --data PATH to cifar10-jpg.tar.gz"
        )
    t = time.perf_counter()
    if settings.smoke_per_class:
        archive = smoke_archive(archive, settings.smoke_per_class, cache)
    extract_archive(archive)
    extract_s = time.perf_counter() - t
    t = time.perf_counter()
    # Same arguments as compress's own load_data, so the validation split is the same one.
    data = load_data(archive, val_fraction=0.1, seed=settings.seed, limit=settings.limit)
    return DataInfo(archive, data, sha256_file(archive), extract_s, time.perf_counter() - t)


# ------------------------------------------------------------------------------ baseline


@dataclass(frozen=True)
class BaselineInfo:
    """The trained baseline: weights file, accuracies, training time, cache status."""

    key: str
    weights: Path
    val_top1: float
    test_top1: float | None
    train_s: float
    cached: bool


def train_baseline(
    settings: BenchSettings, info: DataInfo, cache: Path, console: Console
) -> BaselineInfo:
    """Train the baseline once per config hash; later runs load it from the cache."""
    key = digest(
        {
            "model": settings.model,
            "data": info.archive_sha256,
            "limit": settings.limit,
            "epochs": settings.baseline_epochs,
            "seed": settings.seed,
            "val_fraction": 0.1,
            "trainer": "edgeprune.pipeline.train.train defaults",
        }
    )
    folder = cache / "baselines" / f"{settings.model}-{key}"
    weights, meta_path = folder / "weights.pt", folder / "meta.json"
    if weights.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        console.print(f"baseline {settings.model} [green]cached[/] ({folder})")
        return BaselineInfo(
            key, weights, meta["val_top1"], meta["test_top1"], meta["train_s"], cached=True
        )
    data = info.data
    model = load_model(settings.model, data.num_classes)
    console.print(
        f"[bold]training baseline[/] {settings.model}: {settings.baseline_epochs} epochs on "
        f"{data.train_x.shape[0]} images"
    )
    result = train(model, data, epochs=settings.baseline_epochs, seed=settings.seed, out=weights)
    test = evaluate(model, data.test_x, data.test_y, data.mean, data.std) if data.has_test else None
    meta = {
        "key": key,
        "val_top1": result.best_val_acc,
        "test_top1": test,
        "train_s": result.wall_s,
        "train": result.to_dict(),
        "edgeprune_version": __version__,
    }
    atomic_write_json(meta_path, meta)
    return BaselineInfo(key, weights, result.best_val_acc, test, result.wall_s, cached=False)


# ---------------------------------------------------------------------------- method runs


def method_config(
    settings: BenchSettings,
    method: str,
    fraction: float,
    *,
    profile: str,
    source: Path,
    weights: Path,
    flops_ratio: float | None,
) -> RunConfig:
    """The run config of ``method`` at budget ``fraction`` (``flops_ratio`` for MACs goals)."""
    spec = SPECS[method]
    if spec.goal == "latency":
        # A speedup goal is judged on the interleaved ratio to the baseline measured in the
        # same run, so drift of the machine between runs does not move the target.
        goal: dict[str, Any] = {"speedup": 1.0 / fraction}
    else:
        if flops_ratio is None:
            raise ValueError(f"{method} needs a MACs ratio goal")
        goal = {"flops_ratio": flops_ratio}
    goal["max_steps"] = settings.max_steps
    return RunConfig.validate_dict(
        {
            "seed": settings.seed,
            "profile": profile,
            "threads": settings.threads,
            "model": {"name": settings.model, "weights": str(weights)},
            "data": {"source": str(source), "limit": settings.limit, "seed": settings.seed},
            "goal": goal,
            "search": {
                "searcher": spec.searcher,
                "round_to_multiple": spec.round_to_multiple,
                "criterion": spec.criterion,
                "step_fraction": settings.step_fraction,
                "samples": settings.samples,
                "rl_epochs": settings.rl_epochs,
                "val_subset": settings.val_subset,
                "bn_batches": settings.bn_batches,
            },
            "finetune": {
                "step_epochs": settings.step_epochs,
                "final_epochs": settings.final_epochs,
            },
        },
        where=f"{method} run config",
    )


def macs_goal(
    method: str, fraction: float, settings: BenchSettings, edgeprune_report: dict[str, Any] | None
) -> float | None:
    """The MACs ratio a non-latency method aims at (None for the latency method)."""
    goal = SPECS[method].goal
    if goal == "latency":
        return None
    if goal == "edgeprune-macs" or settings.match == "edgeprune":
        if edgeprune_report is None:
            raise ValueError(f"{method} takes its MACs target from edgeprune: run edgeprune first")
        ratio = edgeprune_report["final"]["macs"] / edgeprune_report["baseline"]["macs"]
        return min(ratio, 0.999)
    return fraction


@dataclass(frozen=True)
class MethodRun:
    """One finished method run: its report and how it came to be."""

    method: str
    fraction: float
    run_dir: Path
    report: dict[str, Any]
    status: str  # "ran", "resumed" or "cached"
    wall_s: float


def run_method(
    method: str, fraction: float, config: RunConfig, run_dir: Path, console: Console
) -> MethodRun:
    """Run ``config`` in ``run_dir``: reuse a finished run, resume a started one, else start.

    A directory whose config differs from ``config`` (a changed MACs target, say) is
    discarded: it belongs to another benchmark configuration.
    """
    t = time.perf_counter()
    report_path = run_dir / "report.json"
    config_path = run_dir / "config.yaml"
    if config_path.is_file() and RunConfig.from_yaml(config_path) != config:
        console.print(f"[yellow]{run_dir.name}: config changed, starting it again[/]")
        shutil.rmtree(run_dir)
    if report_path.is_file():
        report = json.loads(report_path.read_text(encoding="utf-8"))
        return MethodRun(method, fraction, run_dir, report, "cached", time.perf_counter() - t)
    started = (run_dir / "checkpoint" / "state.json").is_file()
    status = "resumed" if started else "ran"
    report = compress(config, run_dir, resume=started, console=console)
    torch.set_num_threads(config.threads)
    return MethodRun(method, fraction, run_dir, report, status, time.perf_counter() - t)
