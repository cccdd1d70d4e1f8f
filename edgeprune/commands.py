"""Glue between the CLI's parsed arguments and the library. One ``run_<command>`` each.

Nothing here computes results: it loads inputs, calls library functions, and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgeprune.errors import EdgepruneError

console = Console(stderr=True)
out = Console()


def run_profiles(args: argparse.Namespace) -> int:
    from edgeprune.profiles import list_profiles, load_profile, represents_this_host
    from edgeprune.targets.base import target_for

    if args.action == "show":
        if not args.name:
            raise EdgepruneError("`edgeprune profiles show` needs a profile name or YAML path")
        import yaml

        from edgeprune.latency.lut import host_self_check

        profile = load_profile(args.name)
        out.print(yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False), end="")
        check = host_self_check(profile)
        if check and check.get("n"):  # a YAML comment: the output stays a valid profile
            out.print(
                f"# latency table on this host (last build, {check['model']}): median error "
                f"{check['median_abs_pct']:.1f}%, worst {check['max_abs_pct']:.1f}% over "
                f"{check['n']} held-out layer sizes",
                soft_wrap=True,  # one comment line, whatever the terminal's width
            )
        return 0
    table = Table(title="Device profiles")
    table.add_column("name", no_wrap=True)
    for col in ("runtime", "precision", "batch", "input", "here"):
        table.add_column(col, no_wrap=True)
    notes = []
    for p in list_profiles():
        try:
            target = target_for(p)
            check = getattr(target, "available_for", None)
            ok, reason = check(p) if callable(check) else target.available()
        except EdgepruneError as exc:
            ok, reason = False, str(exc)
        here = "yes" if ok else "no"
        if not ok:
            notes.append(f"{p.name}: unavailable here: {reason}")
        else:
            fits, why = represents_this_host(p)
            if not fits:
                here = "runs, not that device"
                notes.append(f"{p.name}: {why}")
        shape = "x".join(map(str, p.input_shape))
        row = (p.runtime, p.precision, str(p.batch), shape, here)
        table.add_row(p.name, *row)
    out.print(table)
    for note in notes:
        out.print(note, soft_wrap=True)
    return 0


def run_models(args: argparse.Namespace) -> int:
    from edgeprune.models import model_names, native_size

    for name in model_names():
        side = native_size(name)
        out.print(f"{name:<18} {side}x{side}")
    return 0


def _load_user_model(args: argparse.Namespace, num_classes: int):  # type: ignore[no-untyped-def]
    from edgeprune.models import load_model

    return load_model(args.model, num_classes, args.weights, args.trust_pickle)


def run_train(args: argparse.Namespace) -> int:
    """Train a baseline; under ``torchrun`` every rank trains its share (DDP)."""
    from edgeprune.pipeline import distributed

    distributed.init_from_env()
    try:
        return _train(args)
    finally:
        distributed.shutdown()


def _train(args: argparse.Namespace) -> int:
    from edgeprune.data import load_data
    from edgeprune.models import native_size
    from edgeprune.pipeline import distributed
    from edgeprune.pipeline.train import train

    data = load_data(
        args.data, image_size=args.image_size or native_size(args.model), seed=args.seed
    )
    import torch

    torch.manual_seed(args.seed)  # the initial weights too: --seed makes the run repeatable
    model = _load_user_model(args, args.num_classes or data.num_classes)
    result = train(
        model,
        data,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        out=args.out,
        checkpoint=train_checkpoint(args.out),
        resume=args.resume,
    )
    if distributed.rank() == 0:
        ranks = f", {distributed.world()} processes (DDP)" if distributed.world() > 1 else ""
        out.print(
            f"best validation top-1 {100 * result.best_val_acc:.2f}% at epoch "
            f"{result.best_epoch}/{result.epochs} ({result.wall_s:.0f} s{ranks}) -> {args.out}"
        )
    return 0


def train_checkpoint(out: Path) -> Path:
    """Where ``edgeprune train --out X`` keeps its per-epoch checkpoint: ``X.ckpt``."""
    return out.with_name(out.name + ".ckpt")


def run_export(args: argparse.Namespace) -> int:
    import json

    from edgeprune.pipeline.export import export_onnx
    from edgeprune.profiles import load_profile

    profile = load_profile(args.profile)
    model = _load_user_model(args, args.num_classes or 10)
    info = export_onnx(model, profile, args.out, opset=args.opset)
    out.print(json.dumps(info.to_dict(), indent=2, default=str))
    if args.fp16:
        from edgeprune.calibration.fp16 import convert_fp16

        fp16 = convert_fp16(args.out, args.out.with_suffix(".fp16.onnx"))
        out.print(f"FP16 model -> {fp16}")
    checked = args.out
    if args.int8:
        from edgeprune._io import atomic_write_json
        from edgeprune.calibration.int8 import RECIPES, choose_recipe, compare_int8, export_int8
        from edgeprune.data import load_data

        if not args.calib_data:
            raise EdgepruneError("--int8 needs --calib-data (e.g. --calib-data digits)")
        data = load_data(args.calib_data, image_size=profile.input_shape[1])
        target = args.out.with_suffix(".int8.onnx")
        split = "test" if data.has_test else "val"
        if args.int8_recipe:
            if args.int8_recipe not in RECIPES:
                raise EdgepruneError(
                    f"--int8-recipe {args.int8_recipe!r} is unknown; use one of "
                    f"{', '.join(RECIPES)}"
                )
            recipe = RECIPES[args.int8_recipe]
            checked = export_int8(
                args.out, target, data, n_samples=args.calib_samples, recipe=recipe
            )
            choice = {"chosen": recipe.name, "why": "asked for (--int8-recipe)", "recipes": []}
        else:
            choice = choose_recipe(args.out, target, data, profile, n_samples=args.calib_samples)
        atomic_write_json(args.out.with_suffix(".int8.json"), choice)
        for r in choice["recipes"]:
            if r.get("measured"):
                out.print(
                    f"{r['name']}: {r['speedup_p50']:.2f}x FP32 at p50, top-1 "
                    f"{r['top1_int8']:.2f}% vs {r['top1_fp32']:.2f}% (val)",
                    soft_wrap=True,
                )
        if choice["chosen"] is None:
            out.print(f"[bold yellow]INT8 not written:[/] {choice['why']}", soft_wrap=True)
        else:
            checked = target
            out.print(f"INT8 ({choice['chosen']}: {choice['why']}) -> {target}", soft_wrap=True)
            cmp = compare_int8(args.out, checked, data, profile, split=split)
            out.print(json.dumps(cmp, indent=2))
    from edgeprune.targets.trt_ops import check_tensorrt_ops

    ops = check_tensorrt_ops(checked)
    out.print(ops.summary())
    return 0


def run_benchmark(args: argparse.Namespace) -> int:
    from edgeprune.pipeline.benchmark import benchmark, render_table
    from edgeprune.profiles import DEFAULT_PROFILE, load_profile, represents_this_host

    profiles = [load_profile(p) for p in (args.profile or [DEFAULT_PROFILE])]
    for prof in profiles:
        fits, why = represents_this_host(prof)
        if not fits:
            console.print(f"[bold yellow]warning:[/] {why}", soft_wrap=True)
    if args.blocks is not None and args.blocks < 1:
        raise EdgepruneError(f"--blocks must be at least 1, got {args.blocks}")
    result = benchmark(args.onnx, profiles, out_dir=args.out, blocks=args.blocks)
    out.print(render_table(result))
    from edgeprune.report import render_benchmark

    paths = render_benchmark(args.out)
    out.print("report: " + ", ".join(str(p) for p in paths.values()), soft_wrap=True)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from edgeprune.report import load_report, render_any, summary_table

    paths = render_any(args.run_dir)
    out.print(summary_table(load_report(args.run_dir)))
    out.print("\n".join(str(p) for p in paths.values()), soft_wrap=True)
    return 0


def run_agent(args: argparse.Namespace) -> int:
    from edgeprune.agent.__main__ import serve_from_args

    return serve_from_args(args)


def run_compress(args: argparse.Namespace) -> int:
    """A thin client of :func:`edgeprune.compress` (the library API). Under ``torchrun``
    rank 0 runs it and the other ranks take their share of its training (DDP)."""
    from edgeprune.pipeline import distributed

    if not distributed.init_from_env():
        _compress(args)
        return 0
    try:
        if distributed.rank() > 0:
            from edgeprune.pipeline.compress import follow
            from edgeprune.pipeline.run_dir import RunDir

            follow(RunDir(args.resume).read_config() if args.resume else compress_config(args))
        else:
            try:
                _compress(args)
            finally:
                distributed.broadcast_job(None)  # the followers stop, also after an error
    finally:
        distributed.shutdown()
    return 0


def _compress(args: argparse.Namespace) -> None:
    from edgeprune.api import compress

    if args.resume is not None:
        compress(out=args.resume, resume=True, console=console)
        return
    config = compress_config(args)
    out_dir = args.out or _default_run_dir(config)
    console.print(f"run directory: {out_dir}", soft_wrap=True)
    compress(config=config, out=out_dir, console=console)


def compress_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The run config of ``edgeprune compress``: the --config file (or the defaults), then
    the flags, then every ``--set`` in order."""
    from edgeprune.config import RunConfig

    config = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    raw = config.model_dump()
    model = raw["model"]
    for key, val in (
        ("name", args.model),
        ("weights", args.weights),
        ("num_classes", args.num_classes),
    ):
        if val is not None:
            model[key] = val
    if args.trust_pickle:
        model["trust_pickle"] = True
    if args.data is not None:
        raw["data"]["source"] = args.data
    if args.profile:
        raw["profile"] = args.profile
    goals = {
        "budget_ms": args.budget_ms,
        "speedup": args.speedup,
        "sparsity": args.sparsity,
        "flops_ratio": args.flops_ratio,
    }
    if any(v is not None for v in goals.values()):
        raw["goal"] = {**raw["goal"], **goals}  # a goal flag replaces the config's goal
    search = raw["search"]
    for key, val in (
        ("searcher", args.searcher),
        ("criterion", args.criterion),
        ("steps", args.steps),
        ("ignored_layers", args.ignore_layer),
    ):
        if val is not None:
            search[key] = val
    if args.kd_epochs is not None:
        raw["finetune"]["total_epochs"] = args.kd_epochs
    if getattr(args, "allow_foreign_profile", False):
        raw["allow_foreign_profile"] = True
    if args.seed is not None:
        raw["seed"] = args.seed
    for item in args.set or ():
        apply_override(raw, item)
    return RunConfig.validate_dict(raw, where="command line")


def apply_override(raw: dict, item: str) -> None:
    """Apply one ``section.key=value`` (value parsed as YAML) to a config dict, in place.

    Raises:
        EdgepruneError: not ``key=value``, or a path that names no field of the run config.
    """
    import yaml

    from edgeprune.config import set_field

    path, sep, text = item.partition("=")
    if not sep or not path.strip():
        raise EdgepruneError(f"--set {item!r}: write SECTION.KEY=VALUE, e.g. search.samples=8")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EdgepruneError(f"--set {item!r}: cannot parse the value ({exc})") from exc
    set_field(raw, path.strip(), value, where=f"--set {item!r}")


def _default_run_dir(config) -> Path:  # type: ignore[no-untyped-def]
    import datetime as dt

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = config.model.name.replace(":", "_").replace(".", "_")
    return Path("runs") / f"{name}-{config.profile}-{stamp}"
