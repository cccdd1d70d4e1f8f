"""Rounding rules shared by the Markdown and HTML reports."""

from __future__ import annotations

import math

import pytest

from edgeprune.report import fmt


@pytest.mark.parametrize(
    ("fn", "value", "expected"),
    [
        (fmt.ms, 0.43651, "0.437"),
        (fmt.ms, 0.43649, "0.436"),
        (fmt.ms, 12.0, "12.000"),
        (fmt.pct, 0.987654, "98.77%"),
        (fmt.pct, 0.98764, "98.76%"),
        (fmt.pct, 1, "100.00%"),
        (fmt.macs_m, 41_218_698, "41.22M"),
        (fmt.macs_m, 13_454_999, "13.45M"),
        (fmt.params_m, 272_474, "0.272M"),
        (fmt.speedup, 2.1449, "2.14x"),
        (fmt.speedup, 2.1451, "2.15x"),
        (fmt.size, 1_118_481, "1.07 MiB"),
        (fmt.size, 380_512, "371.6 KiB"),
        (fmt.sci, 2.384e-06, "2.4e-06"),
        (fmt.text, [1, 3, 32, 32], "1x3x32x32"),
        (fmt.text, True, "yes"),
    ],
)
def test_rounding(fn, value, expected) -> None:  # type: ignore[no-untyped-def]
    assert fn(value) == expected


@pytest.mark.parametrize("fn", [fmt.ms, fmt.pct, fmt.macs_m, fmt.speedup, fmt.size, fmt.sci])
@pytest.mark.parametrize("value", [None, math.nan, math.inf, "n/a", True])
def test_missing_values_print_a_dash(fn, value) -> None:  # type: ignore[no-untyped-def]
    assert fn(value) == "-"
