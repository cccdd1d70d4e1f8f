"""Command line: a thin front over the library. ``main(argv)`` is what tests call.

Errors meant for people (:class:`EdgepruneError`) print as one line and exit with 2;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from edgeprune.errors import EdgepruneError


def _add_model_args(
    p: argparse.ArgumentParser,
    *,
    weights_required: bool = False,
    model_default: str | None = "resnet20",
) -> None:
    p.add_argument(
        "--model",
        default=model_default,
        help="zoo name (see `edgeprune models`) or package.module:factory (default resnet20)",
    )
    p.add_argument(
        "--weights",
        type=Path,
        required=weights_required,
        help="state_dict file (.pt), loaded with weights_only=True",
    )
    p.add_argument("--num-classes", type=int, default=None, help="default: from data, or 10")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow --weights to be a whole pickled nn.Module (runs code from the file)",
    )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="edgeprune",
        description="Prune CNNs to a latency budget measured on the target runtime.",
    )
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "compress",
        help="prune + fine-tune a model to a latency budget",
        description="Flags override the --config file's values; --set overrides any field.",
    )
    _add_model_args(p, model_default=None)
    p.add_argument("--data", default=None, help="data path or 'digits' (embedded default)")
    p.add_argument("--profile", default=None, help="profile name or YAML path")
    p.add_argument("--budget-ms", type=float, default=None)
    p.add_argument("--speedup", type=float, default=None, help="target p50 speedup vs baseline")
    p.add_argument("--sparsity", type=float, default=None, help="paper-style channel sparsity")
    p.add_argument("--flops-ratio", type=float, default=None, help="keep this MACs fraction")
    p.add_argument(
        "--searcher",
        default=None,
        help="rl (default) | random | cluster-rl | knapsack | magnitude | uniform | rl-flops",
    )
    p.add_argument("--criterion", default=None, help="l1 | l2 | taylor | bn_scale | cluster")
    p.add_argument("--steps", type=int, default=None, help="latency steps to the budget")
    p.add_argument("--kd-epochs", type=float, default=None, help="total KD fine-tune epochs")
    p.add_argument(
        "--ignore-layer", action="append", default=None, help="never prune this layer (repeatable)"
    )
    p.add_argument(
        "--allow-foreign-profile",
        action="store_true",
        help="search against a profile that describes another CPU architecture, measured here",
    )
    p.add_argument(
        "--set",
        action="append",
        default=None,
        metavar="SECTION.KEY=VALUE",
        help="override any run-config field, e.g. --set search.samples=8 (repeatable)",
    )
    p.add_argument("--config", type=Path, default=None, help="run config YAML")
    p.add_argument("--out", type=Path, default=None, help="run directory")
    p.add_argument("--resume", type=Path, default=None, help="continue the run in this dir")
    p.add_argument("--seed", type=int, default=None)

    p = sub.add_parser("train", help="train a baseline model")
    _add_model_args(p)
    p.add_argument("--data", default="digits")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--image-size", type=int, default=None, help="image side (default: the model's, 32/224)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="best weights (.pt state_dict)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint written after every epoch (<out>.ckpt)",
    )

    p = sub.add_parser("export", help="export a model to validated ONNX")
    _add_model_args(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--profile", default="cpu-ort-1t", help="batch and input shape from here")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--int8", action="store_true", help="also write an INT8 Q/DQ model")
    p.add_argument("--fp16", action="store_true", help="also write an FP16 model")
    p.add_argument("--calib-data", default=None, help="data for INT8 calibration")
    p.add_argument("--calib-samples", type=int, default=256)
    p.add_argument(
        "--int8-recipe",
        default=None,
        help="quantization recipe (default: measured per profile; see `edgeprune.calibration."
        "int8.RECIPES`)",
    )

    p = sub.add_parser("benchmark", help="measure ONNX models on device profiles")
    p.add_argument("onnx", nargs="+", type=Path)
    p.add_argument("--profile", action="append", default=None, help="repeatable")
    p.add_argument("--out", type=Path, default=Path("benchmark"))
    p.add_argument("--blocks", type=int, default=None, help="interleaved blocks (default: profile)")

    p = sub.add_parser("profiles", help="list device profiles, or show one")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?")

    p = sub.add_parser("models", help="list the built-in model zoo (and each input size)")

    p = sub.add_parser("report", help="re-render report.md/html from a run's report.json")
    p.add_argument("run_dir", type=Path)

    p = sub.add_parser("agent", help="serve latency measurements on this device over HTTP")
    from edgeprune.agent.__main__ import add_agent_arguments

    add_agent_arguments(p)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from edgeprune import commands

        return int(getattr(commands, f"run_{args.command}")(args) or 0)
    except EdgepruneError as exc:
        if args.debug:
            raise
        print(f"edgeprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
