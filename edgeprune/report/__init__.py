"""Reports: ``report.json`` / ``benchmark.json`` -> Markdown, self-contained HTML and plots.

The JSON is the single source of truth; everything here renders it and computes nothing
that is not in it. Typical use::

    from edgeprune.report import load_report, render_any, summary_table

    paths = render_any("runs/r1")           # report.md, report.html, plots/*.png
    console.print(summary_table(load_report("runs/r1")))
"""

from edgeprune.report.load import ReportError, find_report, load_report
from edgeprune.report.render import (
    render_any,
    render_benchmark,
    render_report,
    render_run,
    summary_table,
)

__all__ = [
    "ReportError",
    "find_report",
    "load_report",
    "render_any",
    "render_benchmark",
    "render_report",
    "render_run",
    "summary_table",
]
