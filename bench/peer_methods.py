"""Pieces of the CIFAR-10 peer benchmark (``bench_cifar10.py``): data, baseline, method runs.

Every method is one ``edgeprune compress`` run (``edgeprune.pipeline.compress.compress``)
with its own run config; they share the baseline weights, the data, the device profile, the
goal and its stopping rule (speedup 1/fraction over the baseline p50, reached through the
library's latency schedule and landed on interleaved measurements), and the KD budget.
Only the searcher, the channel rounding, the criterion, depth pruning and what a group's
channels are worth (``values``: measured sensitivity for edgeprune's searchers, summed
criterion scores for the peers, whose tools know no such calibration) differ:

=================== =========== ======== ===== =========== ===============================
method              searcher    rounding depth values      where the channels go
=================== =========== ======== ===== =========== ===============================
edgeprune           rl          yes      auto  sensitivity RL on knapsack + magnitude seeds
edgeprune-random    random      yes      auto  sensitivity the same, learning off (ablation)
cluster-rl          cluster-rl  yes      auto  sensitivity RL over kept clusters (Wu et al.)
edgeprune-cluster   rl          yes      auto  sensitivity rl, cluster representatives kept
edgeprune-deeper    rl          yes      auto  sensitivity rl, depth near-ties: most blocks
knapsack-criterion  knapsack    yes      auto  criterion   knapsack by summed scores (ablation)
edgeprune-width     rl          yes      off   sensitivity channels only (ablation)
knapsack            knapsack    yes      auto  sensitivity most value per ms (HALP-style)
knapsack-width      knapsack    yes      off   sensitivity channels only (ablation)
rl-flops            rl-flops    yes      off   criterion   RL-Pruner's FLOPs reward
uniform             uniform     yes      off   criterion   one ratio everywhere
magnitude           magnitude   no       off   criterion   Torch-Pruning global L2
magnitude-rounded   magnitude   yes      off   criterion   global L2 + our channel grid
=================== =========== ======== ===== =========== ===============================

A method whose channel floor is above the budget is refused before it prunes anything; the
benchmark records the refusal and the floor it names instead of a model.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
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
from edgeprune.errors import DataError, SearchError
from edgeprune.models import load_model
from edgeprune.pipeline.compress import compress
from edgeprune.pipeline.train import evaluate, train

#: The default grid: edgeprune and the peers as their users run them, plus the ablations.
DEFAULT_METHODS: tuple[str, ...] = (
    "edgeprune",
    "edgeprune-width",
    "knapsack",
    "knapsack-width",
    "rl-flops",
    "uniform",
    "magnitude",
    "magnitude-rounded",
)
#: Every method ``--methods`` takes: the default grid and the policy ablations
#: (``edgeprune-random``: learning off; ``cluster-rl``: the second paper's searcher;
#: ``edgeprune-cluster``: rl keeping cluster representatives, which of cluster-rl's two
#: parts pays; ``edgeprune-deeper``: near-tied depth options go to more blocks;
#: ``knapsack-criterion``: the knapsack valued by summed scores, not measured
#: sensitivity).
METHODS: tuple[str, ...] = (
    "edgeprune",
    "edgeprune-random",
    "cluster-rl",
    "edgeprune-cluster",
    "edgeprune-deeper",
    "knapsack-criterion",
    *DEFAULT_METHODS[1:],
)


@dataclass(frozen=True)
class MethodSpec:
    """How a benchmark method maps onto a run config.

    Attributes:
        searcher: ``search.searcher`` of the run.
        round_to_multiple: Round channel counts to the device's channel multiple.
        criterion: Which channels inside a group go, and how the searcher ranks them
            (magnitude: Torch-Pruning's L2).
        depth: ``search.depth``: ``auto`` weighs dropping residual blocks (edgeprune's
            searchers), ``off`` prunes channels only (the peers, as their users run them,
            and ``edgeprune-width``/``knapsack-width``, the channel-only ablations).
        values: ``search.values``: ``sensitivity`` (edgeprune's searchers: group values
            calibrated by measured proxy drops) or ``criterion`` (summed criterion scores:
            the peers, whose own tools know no such calibration, and ``knapsack-criterion``,
            the calibration's ablation).
        depth_ties: ``search.depth_ties``: which block count a near-tie of the depth
            choice goes to (``edgeprune-deeper``: the most blocks within the margin).
    """

    searcher: str
    round_to_multiple: bool
    criterion: str
    depth: str = "off"
    values: str = "sensitivity"
    depth_ties: str = "fewer"


SPECS: dict[str, MethodSpec] = {
    "edgeprune": MethodSpec("rl", True, "l1", "auto"),
    "edgeprune-random": MethodSpec("random", True, "l1", "auto"),
    "cluster-rl": MethodSpec("cluster-rl", True, "cluster", "auto"),
    "edgeprune-cluster": MethodSpec("rl", True, "cluster", "auto"),
    "edgeprune-deeper": MethodSpec("rl", True, "l1", "auto", depth_ties="more"),
    "edgeprune-width": MethodSpec("rl", True, "l1", "off"),
    "knapsack": MethodSpec("knapsack", True, "l1", "auto"),
    "knapsack-width": MethodSpec("knapsack", True, "l1", "off"),
    "knapsack-criterion": MethodSpec("knapsack", True, "l1", "auto", "criterion"),
    "rl-flops": MethodSpec("rl-flops", True, "l1", values="criterion"),
    "uniform": MethodSpec("uniform", True, "l1", values="criterion"),
    "magnitude": MethodSpec("magnitude", False, "l2", values="criterion"),
    "magnitude-rounded": MethodSpec("magnitude", True, "l2", values="criterion"),
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
        weights: Use these baseline weights (e.g. ``../shared/baselines/resnet20-cifar10.pt``)
            instead of training one; their accuracy is measured, not trusted.
        steps, samples, rl_epochs, val_subset, bn_batches, max_steps: Search knobs.
        step_epochs, total_epochs: KD epochs after each step, and in all (the final
            fine-tune gets the rest): the same budget for every method.
        repeats: Interleaved benchmark runs of the final measurement (medians are kept).
        blocks: Rounds per benchmark run (None: the profile's).
        seed: Seed of data split and baseline training.
        search_seed: Seed of the search and the KD recovery (None: ``seed``). Repeats of a
            method with the shared baseline vary this one: the data split must stay the
            one the baseline was trained with.
        seeds: Search + KD seeds each method is repeated with (the split and the baseline
            stay): the spread a winner must beat. Empty: one run with ``search_seed``.
        threads: torch threads.
    """

    archive: str
    smoke_per_class: int | None = None
    limit: int | None = 10000
    model: str = "resnet20"
    baseline_epochs: int = 30
    profile: str = "cpu-ort-1t"
    budgets: tuple[float, ...] = (0.5, 0.35)
    methods: tuple[str, ...] = DEFAULT_METHODS
    weights: str | None = None
    steps: int = 3
    samples: int = 6
    rl_epochs: int = 3
    val_subset: int = 1000
    bn_batches: int = 4
    max_steps: int = 10
    step_epochs: float = 0.25
    total_epochs: float = 8.0
    repeats: int = 5
    blocks: int | None = None
    seed: int = 0
    search_seed: int | None = None
    threads: int = 1
    seeds: tuple[int, ...] = ()

    def run_seeds(self) -> tuple[int | None, ...]:
        """Seeds of the repeated runs (None: the single run of ``search_seed``)."""
        return self.seeds or (None,)

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
    """Train the baseline once per config hash; later runs load it from the cache.

    With ``settings.weights`` the given checkpoint is used instead; its validation and test
    accuracy are measured here on this benchmark's splits, never taken from its README.
    """
    if settings.weights:
        return _given_baseline(settings, info, console)
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


def _given_baseline(settings: BenchSettings, info: DataInfo, console: Console) -> BaselineInfo:
    weights = Path(settings.weights or "").expanduser()
    if not weights.is_file():
        raise DataError(f"baseline weights {weights} do not exist; pass --weights PATH.pt")
    data = info.data
    model = load_model(settings.model, data.num_classes, weights)
    val = evaluate(model, data.val_x, data.val_y, data.mean, data.std)
    test = evaluate(model, data.test_x, data.test_y, data.mean, data.std) if data.has_test else None
    console.print(f"baseline {settings.model} from {weights}: val {val:.4f}, test {test}")
    key = digest({"weights": sha256_file(weights), "model": settings.model})
    return BaselineInfo(key, weights.resolve(), val, test, 0.0, cached=True)


# ---------------------------------------------------------------------------- method runs


def method_config(
    settings: BenchSettings,
    method: str,
    fraction: float,
    *,
    profile: str,
    source: Path,
    weights: Path,
    seed: int | None = None,
) -> RunConfig:
    """The run config of ``method`` at budget ``fraction``.

    Every method gets the same goal: a speedup judged on the interleaved ratio to the
    baseline measured in the same run (drift of the machine between runs does not move it).
    """
    spec = SPECS[method]
    goal: dict[str, Any] = {"speedup": 1.0 / fraction, "max_steps": settings.max_steps}
    return RunConfig.validate_dict(
        {
            "seed": seed
            if seed is not None
            else settings.seed
            if settings.search_seed is None
            else settings.search_seed,
            "profile": profile,
            "threads": settings.threads,
            "model": {"name": settings.model, "weights": str(weights)},
            "data": {"source": str(source), "limit": settings.limit, "seed": settings.seed},
            "goal": goal,
            "search": {
                "searcher": spec.searcher,
                "round_to_multiple": spec.round_to_multiple,
                "criterion": spec.criterion,
                "depth": spec.depth,
                "values": spec.values,
                "depth_ties": spec.depth_ties,
                "steps": settings.steps,
                "samples": settings.samples,
                "rl_epochs": settings.rl_epochs,
                "val_subset": settings.val_subset,
                "bn_batches": settings.bn_batches,
            },
            "finetune": {
                "step_epochs": settings.step_epochs,
                "total_epochs": settings.total_epochs,
            },
        },
        where=f"{method} run config",
    )


@dataclass(frozen=True)
class MethodRun:
    """One finished method run: its report and how it came to be."""

    method: str
    fraction: float
    run_dir: Path
    report: dict[str, Any]
    status: str  # "ran", "resumed" or "cached"
    wall_s: float
    seed: int | None = None  # of a repeated run (None: the single run)


REFUSED = "refused.json"  # a method's refusal of the budget, in place of its report


def is_finished(run_dir: Path) -> bool:
    """A run :func:`run_method` would reuse: a report, or a recorded refusal."""
    return (run_dir / "report.json").is_file() or (run_dir / REFUSED).is_file()


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
    refused_path = run_dir / REFUSED
    if refused_path.is_file():
        report = json.loads(refused_path.read_text(encoding="utf-8"))
        return MethodRun(method, fraction, run_dir, report, "refused", time.perf_counter() - t)
    started = (run_dir / "checkpoint" / "state.json").is_file()
    status = "resumed" if started else "ran"
    try:
        report = compress(config, run_dir, resume=started, console=console)
    except SearchError as exc:
        if (run_dir / "checkpoint" / "state.json").is_file():
            raise  # refused only before pruning; anything later is a failure
        console.print(f"[yellow]{method} refused the budget:[/] {exc}")
        report = {"refused": str(exc), "floor_ms": refused_floor_ms(str(exc))}
        atomic_write_json(refused_path, report)
        status = "refused"
    torch.set_num_threads(config.threads)
    return MethodRun(method, fraction, run_dir, report, status, time.perf_counter() - t)


def refused_floor_ms(message: str) -> float | None:
    """The predicted floor a refusal names (the smallest figure it gives in ms)."""
    found = [float(v) for v in re.findall(r"([0-9]+\.[0-9]+) ms (?:predicted|with)", message)]
    return min(found) if found else None
