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
from peer_results import seed_summary, winners

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def _cell(s: dict) -> str:
    if s["mean_top1"] is None:
        return "-"
    text = f"{100 * s['mean_top1']:.2f}%"
    if s["std_top1"] is not None:
        text += f" ({100 * s['std_top1']:.2f})"
    if s["met"] < s["n"]:
        text += f", missed {s['n'] - s['met']} of {s['n']}"
    return text


def _call(w: dict) -> str:
    if w.get("winner") is None:
        return "no method met it"
    if "runner_up" not in w:
        return f"{w['winner']} (alone)"
    lead = f"{w['winner']} +{w['margin_pp']:.2f} pp over {w['runner_up']}"
    if w["called"] is None:
        return f"{lead} (one seed: no call)"
    verdict = "win" if w["called"] else "tie"
    return f"{lead}, spread {w['spread_pp']:.2f}: {verdict}"


def seed_table(res: dict) -> str:
    """Budget x method: test top-1 mean (std over seeds), who met the budget, and the call
    (a winner only beyond the larger seed spread of the two best, among methods whose every
    run met the budget)."""
    rows = res["rows"]
    fractions = sorted({r["budget_fraction"] for r in rows}, reverse=True)
    methods = [m for m in res["settings"]["methods"] if any(r["method"] == m for r in rows)]
    summary = {(s["budget_fraction"], s["method"]): s for s in seed_summary(rows, fractions)}
    calls = {w["budget_fraction"]: w for w in winners(rows, fractions)}
    base = res["baseline"]
    prof = res.get("profile")
    profile = prof["name"] if isinstance(prof, dict) else res["settings"]["profile"]
    lines = [
        f"{res['settings']['model']} on CIFAR-10 (baseline {100 * base['test_top1']:.2f}% test "
        f"top-1; {res['settings'].get('limit') or 'all'} training images), "
        f"`{profile}`, "
        f"{res['settings']['total_epochs']:g} KD epochs for every method; test top-1, mean "
        "(std) over the search seeds:",
        "",
        "| budget | " + " | ".join(methods) + " | call |",
        "|---|" + "---:|" * len(methods) + "---|",
    ]
    for f in fractions:
        cells = [_cell(summary[(f, m)]) if (f, m) in summary else "-" for m in methods]
        lines.append(f"| {100 * f:g}% | " + " | ".join(cells) + f" | {_call(calls[f])} |")
    return "\n".join(lines)


def versus(res: dict, method: str = "edgeprune") -> str:
    """``method`` against every other method per budget: the margin, the larger of the two
    seed spreads, and whether the margin is beyond it (a win or a loss) or not (a tie)."""
    rows = res["rows"]
    fractions = sorted({r["budget_fraction"] for r in rows}, reverse=True)
    summary = {(s["budget_fraction"], s["method"]): s for s in seed_summary(rows, fractions)}
    lines = []
    for f in fractions:
        me = summary.get((f, method))
        if me is None or me["mean_top1"] is None:
            continue
        parts = []
        for (g, other), s in summary.items():
            if g != f or other == method or s["mean_top1"] is None:
                continue
            margin = 100 * (me["mean_top1"] - s["mean_top1"])
            spreads = [x["std_top1"] for x in (me, s) if x["std_top1"] is not None]
            if len(spreads) < 2:
                parts.append(f"{other} {margin:+.2f} pp (one seed)")
                continue
            spread = 100 * max(spreads)
            call = "tie" if abs(margin) <= spread else ("win" if margin > 0 else "loss")
            parts.append(f"{other} {margin:+.2f} pp (spread {spread:.2f}: {call})")
        lines.append(f"- {100 * f:g}%: {method} vs " + "; ".join(parts))
    return "\n".join(lines)


def ablation(res: dict) -> str:
    return seed_table(res) + "\n\n" + versus(res)


BLOCKS: dict[str, tuple[str, Callable[[dict], str]]] = {
    "policy-ablation": ("ablation_policy/cifar10_resnet20.json", ablation),
    "policy-ablation-criterion": ("ablation_policy_criterion/cifar10_resnet20.json", ablation),
    "depth-ties": ("depth_ties/cifar10_resnet20.json", ablation),
    "knapsack-40": ("knapsack_40/cifar10_resnet20.json", seed_table),
    "conformance": ("conformance.json", headline),
    "peer-grid": ("cifar10_resnet20.json", seed_table),
    "peer-b25-fix": ("fix_b25/cifar10_resnet20.json", seed_table),
    "peer-mobilenetv2": ("cifar10_mobilenetv2.json", seed_table),
}


def render(readme: str, results: Path = RESULTS) -> str:
    """``readme`` with every block re-rendered from its results file."""
    for name, (file, make) in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(readme):
            raise SystemExit(f"README.md has no <!-- {name}:start/end --> block")
        body = make(json.loads((results / file).read_text(encoding="utf-8")))
        text = f"{body}\n\n(Rendered from `bench/results/{file}` by `bench/readme_figures.py`.)\n"
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
