"""Lay a report :class:`~edgeprune.report.blocks.Document` out as GitHub-flavoured Markdown.

Plots are referenced as PNG files relative to ``report.md`` (``plots/NAME.png``), so the
Markdown renders on GitHub and in editors next to its ``plots/`` folder.
"""

from __future__ import annotations

from edgeprune.report.blocks import Document, Figure, Heading, Para, Table

PLOTS_DIR = "plots"


def _cell(text: str) -> str:
    # A pipe would end the cell; a newline would end the row.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table(t: Table) -> str:
    """One Markdown table (alignment from ``t.alignment()``)."""
    align = {"l": ":---", "r": "---:"}
    lines = [
        "| " + " | ".join(_cell(h) for h in t.headers) + " |",
        "|" + "|".join(align[a] for a in t.alignment()) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


def render(doc: Document) -> str:
    """The whole document as Markdown text (ends with a newline)."""
    parts = [f"# {doc.title}", f"_{doc.subtitle}_"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            parts.append(f"{'#' * max(2, b.level)} {b.text}")
        elif isinstance(b, Para):
            parts.append(b.text)
        elif isinstance(b, Table):
            parts.append(table(b))
        elif isinstance(b, Figure):
            parts.append(f"![{b.caption}]({PLOTS_DIR}/{b.name}.png)\n\n*{b.caption}*")
    return "\n\n".join(parts) + "\n"
