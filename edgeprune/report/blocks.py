"""A report as a list of neutral blocks; the Markdown and HTML renderers only lay them out.

Building the content once (which numbers, which rounding, which order) and rendering it
twice keeps ``report.md`` and ``report.html`` saying exactly the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Heading:
    """A section title; level 1 is the document title."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    """A paragraph of plain text (renderers escape it)."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table of pre-formatted cells.

    Attributes:
        headers: Column titles.
        rows: Cells, already formatted (see :mod:`edgeprune.report.fmt`).
        align: One character per column, "l" or "r".
    """

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str = ""

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.headers):
                raise ValueError(f"row {row} has {len(row)} cells, expected {len(self.headers)}")

    def alignment(self) -> str:
        """``align`` padded: the first column left, the rest right unless given."""
        return (self.align or "l").ljust(len(self.headers), "r")


@dataclass(frozen=True)
class Figure:
    """A plot drawn by :mod:`edgeprune.report.plots`, referred to by name."""

    name: str
    caption: str


Block = Union[Heading, Para, Table, Figure]  # noqa: UP007 (a runtime alias, py3.10 safe)


@dataclass(frozen=True)
class Document:
    """A whole report: a title, its blocks, and a one-line subtitle."""

    title: str
    subtitle: str
    blocks: tuple[Block, ...]


def kv_table(pairs: list[tuple[str, str]], headers: tuple[str, str] = ("item", "value")) -> Table:
    """A two-column key/value table (left-aligned values)."""
    return Table(headers=headers, rows=tuple((k, v) for k, v in pairs), align="ll")


def flatten(d: object, prefix: str = "") -> list[tuple[str, object]]:
    """Nested dicts as dotted ``(key, leaf)`` pairs, for config and settings tables."""
    if not isinstance(d, dict):
        return [(prefix, d)]
    out: list[tuple[str, object]] = []
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.extend(flatten(v, key))
        else:
            out.append((key, v))
    return out
