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
    from edgeprune.profiles import list_profiles, load_profile
    from edgeprune.targets.base import target_for

    if args.action == "show":
        if not args.name:
            raise EdgepruneError("`edgeprune profiles show` needs a profile name or YAML path")
        import yaml

        profile = load_profile(args.name)
        out.print(yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    table = Table(title="Device profiles")
    for col in ("name", "runtime", "precision", "batch", "input", "available here", "device"):
        table.add_column(col)
    for p in list_profiles():
        try:
            ok, reason = target_for(p).available()
        except EdgepruneError as exc:
            ok, reason = False, str(exc)
        table.add_row(
            p.name,
            p.runtime,
            p.precision,
            str(p.batch),
            "x".join(map(str, p.input_shape)),
            "yes" if ok else f"no: {reason}",
            p.device,
        )
    out.print(table)
    return 0


def run_models(args: argparse.Namespace) -> int:
    from edgeprune.models import model_names

    for name in model_names():
        out.print(name)
    return 0


def _require(path: Path | None, what: str) -> Path:
    if path is None:
        raise EdgepruneError(f"{what} is required")
    return path
