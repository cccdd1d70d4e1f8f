"""report.html: one self-contained file, plots embedded, no network fetches."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from edgeprune.report.blocks import Document, Heading, Para, Table
from edgeprune.report.html import render

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_self_contained_with_embedded_plots(rendered_run: Path) -> None:
    html = (rendered_run / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 4
    on_disk = {p.read_bytes() for p in (rendered_run / "plots").glob("*.png")}
    for data in images:
        png = base64.b64decode(data, validate=True)
        assert png.startswith(PNG_MAGIC)
        assert png in on_disk  # the HTML shows exactly the figures the Markdown links
    # Nothing to fetch: no URLs, no scripts, every src/href is a data: URI or an anchor,
    # and the CSP forbids fetches anyway.
    assert not re.search(r"https?://", html)
    assert "<script" not in html
    for ref in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert ref.startswith(("data:", "#")), ref
    assert "default-src 'none'; img-src data:" in html


def test_same_numbers_as_markdown(rendered_run: Path) -> None:
    html = (rendered_run / "report.html").read_text(encoding="utf-8")
    row = re.search(r"<tr><td class=\"l\">p50 latency \(ms\)</td>(.*?)</tr>", html)
    assert row is not None
    assert re.findall(r">([^<]*)</td>", row.group(1)) == ["0.438", "0.204", "2.14x faster"]
    assert '<td class="r">98.77%</td><td class="r">97.53%</td><td class="r">-1.23 pp</td>' in html
    assert '<h2 id="channels-per-layer">Channels per layer</h2>' in html
    assert '<a href="#channels-per-layer">' in html


def test_text_is_escaped() -> None:
    evil = "<img src=x onerror=1>"
    doc = Document(evil, "sub & title", (Heading(evil), Para(evil), Table(("a",), ((evil,),))))
    html = render(doc, {})
    assert "<img src=x" not in html
    assert html.count("&lt;img src=x onerror=1&gt;") == 6  # title, h1, nav link, h2, p, td
    assert "sub &amp; title" in html
