"""Lay a report :class:`~edgeprune.report.blocks.Document` out as one self-contained HTML file.

Plots are embedded as base64 PNG ``data:`` URIs and the CSS is inline; a
Content-Security-Policy forbids every network fetch, so the file shows the same offline,
attached to a ticket, or opened from a mail client.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from html import escape

from edgeprune.report.blocks import Document, Figure, Heading, Para, Table

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1200px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
.subtitle { color: #666; margin-top: 0; }
nav { font-size: .9em; margin: 1em 0; }
nav a { margin-right: 1em; color: #0550ae; text-decoration: none; }
table { border-collapse: collapse; margin: .8em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: .25em .6em; }
th { background: #f4f4f4; }
tr:nth-child(even) td { background: #fafafa; }
td.r, th.r { text-align: right; }
td.l, th.l { text-align: left; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
"""


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _table(t: Table) -> str:
    al = t.alignment()
    head = "".join(f'<th class="{a}">{escape(h)}</th>' for h, a in zip(t.headers, al, strict=True))
    body = "\n".join(
        "<tr>"
        + "".join(f'<td class="{a}">{escape(c)}</td>' for c, a in zip(row, al, strict=True))
        + "</tr>"
        for row in t.rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _figure(f: Figure, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="fig-{escape(f.name)}"><img src="data:image/png;base64,{data}" '
        f'alt="{escape(f.caption)}"><figcaption>{escape(f.caption)}</figcaption></figure>'
    )


def render(doc: Document, plots: Mapping[str, bytes]) -> str:
    """The whole document as one HTML page; ``plots`` maps figure names to PNG bytes.

    Raises:
        KeyError: A figure block names a plot that is not in ``plots`` (a bug).
    """
    parts: list[str] = []
    toc: list[str] = []
    for b in doc.blocks:
        if isinstance(b, Heading):
            anchor = _anchor(b.text)
            toc.append(f'<a href="#{anchor}">{escape(b.text)}</a>')
            level = max(2, min(b.level, 6))
            parts.append(f'<h{level} id="{anchor}">{escape(b.text)}</h{level}>')
        elif isinstance(b, Para):
            parts.append(f"<p>{escape(b.text)}</p>")
        elif isinstance(b, Table):
            parts.append(_table(b))
        elif isinstance(b, Figure):
            parts.append(_figure(b, plots[b.name]))
    body = "\n".join(parts)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{escape(doc.title)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>{escape(doc.title)}</h1>
<p class="subtitle">{escape(doc.subtitle)}</p>
<nav>{" ".join(toc)}</nav>
{body}
</body>
</html>
"""
