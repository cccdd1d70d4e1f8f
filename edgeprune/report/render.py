"""Render a loaded report to Markdown + plots and to one self-contained HTML file.

Everything comes from the JSON document (``report.json`` or ``benchmark.json``); nothing is
re-measured or recomputed from models. Outputs go next to the JSON file:

    report.md / report.html        for a compress run (``report.json``)
    benchmark.md / benchmark.html  for a benchmark (``benchmark.json``)
    plots/*.png                    the figures the Markdown refers to
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.table import Table as RichTable

from edgeprune._io import atomic_write_bytes, atomic_write_text
from edgeprune.report import benchmark_doc, compress_doc, html, markdown, plots
from edgeprune.report.load import BENCHMARK_FILE, REPORT_FILE, ReportError, find_report, load_report
from edgeprune.report.terminal import benchmark_table, compress_table

_STEM = {"compress": "report", "benchmark": "benchmark"}
_PRODUCER = {"compress": "edgeprune compress", "benchmark": "edgeprune benchmark MODEL.onnx ..."}


def render_report(report: dict[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the Markdown, its PNG plots and the HTML of an already loaded report.

    Args:
        report: A document from :func:`load_report`.
        out_dir: Where to write (created if needed).

    Returns:
        ``{file name: path}`` for the Markdown and HTML files.
    """
    out = Path(out_dir)
    pngs = plots.draw(report)
    builder = compress_doc.build if report["kind"] == "compress" else benchmark_doc.build
    doc = builder(report, pngs.keys())
    for name, png in pngs.items():
        atomic_write_bytes(out / markdown.PLOTS_DIR / f"{name}.png", png)
    stem = _STEM[report["kind"]]
    md_path, html_path = out / f"{stem}.md", out / f"{stem}.html"
    atomic_write_text(md_path, markdown.render(doc))
    atomic_write_text(html_path, html.render(doc, pngs))
    return {md_path.name: md_path, html_path.name: html_path}


def _render_kind(path: str | os.PathLike[str], kind: str, file_name: str) -> dict[str, Path]:
    p = Path(path)
    if p.is_dir():
        if not (p / file_name).is_file():
            raise ReportError(f"no {file_name} in {p}: run `{_PRODUCER[kind]} --out {p}` first")
        p = p / file_name
    report = load_report(p)
    if report["kind"] != kind:
        raise ReportError(
            f"{report['_source']} is a {report['kind']} report, not a {kind} one; "
            "render it with `edgeprune report DIR`"
        )
    return render_report(report, Path(report["_source"]).parent)


def render_run(run_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Render ``RUN_DIR/report.json`` (a compress run) to ``report.md`` and ``report.html``.

    Raises:
        ReportError: No report.json, corrupt, unsupported version, or not a compress report.
    """
    return _render_kind(run_dir, "compress", REPORT_FILE)


def render_benchmark(out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Render ``OUT_DIR/benchmark.json`` to ``benchmark.md`` and ``benchmark.html``.

    Raises:
        ReportError: No benchmark.json, corrupt, or unsupported version.
    """
    return _render_kind(out_dir, "benchmark", BENCHMARK_FILE)


def render_any(path: str | os.PathLike[str]) -> dict[str, Path]:
    """Render whatever report a path holds: a JSON file, or every report file in a directory.

    Raises:
        ReportError: Nothing to render, or a file that does not load.
    """
    p = Path(path)
    files = [p / n for n in (REPORT_FILE, BENCHMARK_FILE) if p.is_dir() and (p / n).is_file()]
    if not files:
        files = [find_report(p)]  # a file path, or the "no report.json in DIR" error
    out: dict[str, Path] = {}
    for f in files:
        report = load_report(f)
        out.update(render_report(report, f.parent))
    return out


def summary_table(report: dict[str, Any]) -> RichTable:
    """The terminal summary of a loaded report (the same tables compress and benchmark print)."""
    if report["kind"] == "compress":
        return compress_table(report)
    return benchmark_table(report)
