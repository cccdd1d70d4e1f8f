"""Find, parse and check a ``report.json`` (compress) or ``benchmark.json`` (benchmark).

Renderers index into the document freely, so every key they need is checked here first:
a missing or corrupt file fails with one line naming the file, the problem and the fix,
never with a ``KeyError`` from deep inside a plot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError

REPORT_FILE = "report.json"
BENCHMARK_FILE = "benchmark.json"
SUPPORTED_VERSIONS = (1,)
KINDS = ("compress", "benchmark")

# Dotted paths a renderer reads unconditionally, per kind.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "compress": (
        "profile.name",
        "config",
        "goal",
        "baseline.accuracy",
        "baseline.macs",
        "baseline.params",
        "baseline.latency",
        "final.accuracy",
        "final.macs",
        "final.params",
        "final.latency",
        "speedup.measured_p50",
        "channels",
        "search.steps",
        "search.candidates",
    ),
    "benchmark": ("entries",),
}
_ENTRY_KEYS = ("model", "profile", "latency", "speedup_vs_first")
_LATENCY_KEYS = ("p50_ms", "p90_ms", "times_ms")


class ReportError(EdgepruneError):
    """A report file that is missing, corrupt, of an unknown kind or an unsupported version."""


def find_report(path_or_dir: str | os.PathLike[str]) -> Path:
    """The report file for a run or benchmark directory (or the file itself).

    ``report.json`` wins over ``benchmark.json`` when a directory holds both.

    Raises:
        ReportError: The path does not exist, or the directory holds neither file.
    """
    path = Path(path_or_dir)
    if path.is_file():
        return path
    if not path.exists():
        raise ReportError(
            f"{path} does not exist: pass a run directory from `edgeprune compress --out DIR` "
            "or a benchmark directory from `edgeprune benchmark --out DIR`"
        )
    for name in (REPORT_FILE, BENCHMARK_FILE):
        if (path / name).is_file():
            return path / name
    raise ReportError(
        f"no report.json in {path}: run `edgeprune compress --out {path}` first "
        f"(or `edgeprune benchmark MODEL.onnx ... --out {path}` for a benchmark report)"
    )


def _get(doc: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _infer_kind(doc: dict[str, Any], file: Path) -> str:
    kind = doc.get("kind")
    if kind is None and (file.name == BENCHMARK_FILE or "entries" in doc):
        # benchmark.json (pipeline/benchmark.py) carries no "kind" field.
        return "benchmark"
    if kind not in KINDS:
        raise ReportError(
            f"{file} is a report of unknown kind {kind!r} (expected one of {', '.join(KINDS)}); "
            "is it an edgeprune report.json?"
        )
    return str(kind)


def _check_latency(file: Path, where: str, lat: Any) -> None:
    if not isinstance(lat, dict) or any(k not in lat for k in _LATENCY_KEYS):
        raise ReportError(
            f"{file} is incomplete: {where} lacks latency statistics "
            f"({', '.join(_LATENCY_KEYS)}); re-run the command that wrote it"
        )


def _check(doc: dict[str, Any], kind: str, file: Path) -> None:
    missing = [p for p in _REQUIRED[kind] if not _get(doc, p)[0]]
    if missing:
        raise ReportError(
            f"{file} is incomplete: missing {', '.join(repr(m) for m in missing)}; "
            "re-run the command that wrote it"
        )
    if kind == "benchmark":
        if not isinstance(doc["entries"], list) or not doc["entries"]:
            raise ReportError(f"{file} has no benchmark entries; re-run `edgeprune benchmark`")
        for i, e in enumerate(doc["entries"]):
            if not isinstance(e, dict) or any(k not in e for k in _ENTRY_KEYS):
                raise ReportError(
                    f"{file} is incomplete: entry {i} lacks one of {', '.join(_ENTRY_KEYS)}; "
                    "re-run `edgeprune benchmark`"
                )
            _check_latency(file, f"entry {i} ({e['model']} on {e['profile']})", e["latency"])
        return
    prof = doc["profile"]["name"]
    for side in ("baseline", "final"):
        lat = doc[side]["latency"]
        if not isinstance(lat, dict) or prof not in lat:
            raise ReportError(
                f"{file} is incomplete: {side}.latency has no entry for profile {prof!r}; "
                "re-run `edgeprune compress`"
            )
        for name, stats in lat.items():
            _check_latency(file, f"{side}.latency[{name!r}]", stats)


def load_report(path_or_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a compress ``report.json`` or a ``benchmark.json``.

    Args:
        path_or_dir: The JSON file, or a directory holding ``report.json`` or
            ``benchmark.json``.

    Returns:
        The parsed document; ``kind`` is always set ("compress" or "benchmark"), and
        ``_source`` holds the file it came from (for renderers; never written back).

    Raises:
        ReportError: No such file, corrupt JSON, unknown kind, unsupported version, or a
            field the renderers need is missing.
    """
    file = find_report(path_or_dir)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {file}: {exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{file} is corrupt (line {exc.lineno}, column {exc.colno}): {exc.msg}; "
            "re-run the command that wrote it"
        ) from exc
    if not isinstance(doc, dict):
        raise ReportError(
            f"{file} is corrupt (line 1): the top level is a {type(doc).__name__}, "
            "expected a JSON object; re-run the command that wrote it"
        )
    version = doc.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise ReportError(
            f"{file} has report version {version!r}, this edgeprune reads version "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}; render it with the edgeprune that "
            "wrote it, or re-run the command"
        )
    kind = _infer_kind(doc, file)
    _check(doc, kind, file)
    return {**doc, "kind": kind, "_source": str(file)}
