"""README figures are rendered from result files, never typed.

Each ``<!-- NAME:start -->`` ... ``<!-- NAME:end -->`` block of README.md is replaced by what
its renderer makes of a results file; ``--check`` exits 1 when README.md is not what the
results say (a test runs it).

    python bench/readme_figures.py            # rewrite the blocks
    python bench/readme_figures.py --check
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench_conformance import headline

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

BLOCKS: dict[str, tuple[str, Callable[[dict], str]]] = {
    "conformance": ("conformance.json", headline),
}


def render(readme: str, results: Path = RESULTS) -> str:
    """``readme`` with every block re-rendered from its results file."""
    for name, (file, make) in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(readme):
            raise SystemExit(f"README.md has no <!-- {name}:start/end --> block")
        body = make(json.loads((results / file).read_text(encoding="utf-8")))
        text = f"{body}\n(Rendered from `bench/results/{file}` by `bench/readme_figures.py`.)\n"
        readme = pattern.sub(lambda m, t=text: m.group(1) + t + m.group(2), readme)
    return readme


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when README.md is stale")
    args = ap.parse_args(argv)
    path = REPO / "README.md"
    now = path.read_text(encoding="utf-8")
    want = render(now)
    if args.check:
        if want != now:
            print("README.md figures are stale: run python bench/readme_figures.py")
            return 1
        return 0
    path.write_text(want, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
