"""The depth choice's block counts."""

from __future__ import annotations

from edgeprune.pipeline.search.depth import option_counts


def test_option_counts_cover_zero_and_the_most_evenly():
    assert option_counts(7, 8) == list(range(8))
    assert option_counts(0, 8) == [0]
    many = option_counts(25, 8)
    assert many[0] == 0 and many[-1] == 25 and len(many) == 8 and many == sorted(set(many))
