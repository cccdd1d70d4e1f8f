"""Decision statistics over interleaved blocks."""

from __future__ import annotations

import pytest

from edgeprune.targets.stats import STATISTICS, block_ratio, statistic_ms

BASE = [[1.0, 1.0, 1.1, 5.0], [1.0, 1.2, 1.0, 1.0], [2.0, 2.1, 2.0, 2.2]]


def test_every_statistic_of_a_constant_is_the_constant():
    blocks = [[2.0] * 5, [2.0] * 7]
    for stat in STATISTICS:
        assert statistic_ms(blocks, stat) == pytest.approx(2.0), stat
        assert block_ratio([[1.0] * 5, [1.0] * 7], blocks, stat) == pytest.approx(0.5), stat


def test_stalls_move_the_mean_but_not_the_robust_figures():
    assert statistic_ms(BASE, "mean") > 1.6
    assert statistic_ms(BASE, "min_block_median") == pytest.approx(1.0)
    assert statistic_ms(BASE, "p10") == pytest.approx(1.0)
    assert statistic_ms(BASE, "trimmed_median") == pytest.approx(1.0)  # 5.0 and 2.x dropped


def test_ratio_pairs_blocks_so_a_slow_block_cancels():
    cand = [[0.5, 0.5, 0.55, 2.5], [0.5, 0.6, 0.5, 0.5], [1.0, 1.05, 1.0, 1.1]]
    for stat in STATISTICS:
        assert block_ratio(cand, BASE, stat) == pytest.approx(0.5), stat


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown latency statistic"):
        statistic_ms(BASE, "p42")
    with pytest.raises(ValueError, match="same number of blocks"):
        block_ratio(BASE[:2], BASE, "p50")
