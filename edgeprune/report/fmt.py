"""Number formatting shared by the Markdown and HTML renderers (one rounding everywhere).

Milliseconds to 3 decimals, accuracy as a percentage with 2, MACs in millions with 2,
speedups with 2 and an "x". A missing or non-finite value prints as "-".
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "-"


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def ms(v: Any) -> str:
    """``0.4368`` -> ``"0.437"`` (milliseconds, 3 decimals)."""
    f = _num(v)
    return MISSING if f is None else f"{f:.3f}"


def pct(v: Any) -> str:
    """A fraction as a percentage: ``0.98765`` -> ``"98.77%"``."""
    f = _num(v)
    return MISSING if f is None else f"{100 * f:.2f}%"


def macs_m(v: Any) -> str:
    """``40_812_345`` -> ``"40.81M"``."""
    f = _num(v)
    return MISSING if f is None else f"{f / 1e6:.2f}M"


def params_m(v: Any) -> str:
    """``272_474`` -> ``"0.272M"`` (3 decimals: small models have well under 1M)."""
    f = _num(v)
    return MISSING if f is None else f"{f / 1e6:.3f}M"


def speedup(v: Any) -> str:
    """``1.8349`` -> ``"1.83x"``."""
    f = _num(v)
    return MISSING if f is None else f"{f:.2f}x"


def ratio(v: Any, digits: int = 4) -> str:
    """A plain number (rewards, ratios without a unit)."""
    f = _num(v)
    return MISSING if f is None else f"{f:.{digits}f}"


def size(v: Any) -> str:
    """Bytes as KiB or MiB: ``1_118_481`` -> ``"1.07 MiB"``."""
    f = _num(v)
    if f is None:
        return MISSING
    if f >= 1024 * 1024:
        return f"{f / (1024 * 1024):.2f} MiB"
    return f"{f / 1024:.1f} KiB"


def sci(v: Any) -> str:
    """Small errors such as an export's max abs diff: ``3.1e-06``."""
    f = _num(v)
    return MISSING if f is None else f"{f:.1e}"


def seconds(v: Any) -> str:
    f = _num(v)
    return MISSING if f is None else f"{f:.1f} s"


def text(v: Any) -> str:
    """Any JSON value as a short cell: numbers kept, None as "-", lists comma-joined."""
    if v is None:
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return (
            "x".join(map(str, v)) if all(isinstance(x, int) for x in v) else ", ".join(map(str, v))
        )
    return str(v)


def metric_of(report: dict[str, Any]) -> tuple[str, bool]:
    """The report's task metric: its name and whether it prints as a percentage
    (``top-1``, True for classifiers; the user's name for :func:`edgeprune.compress`)."""
    m = report.get("metric") or {}
    return str(m.get("name") or "top-1"), bool(m.get("percent", True))


def metric(v: Any, percent: bool) -> str:
    """A task-metric value: a percentage (:func:`pct`) or 4 significant digits."""
    if percent:
        return pct(v)
    f = _num(v)
    return MISSING if f is None else f"{f:.4g}"
