"""Decision statistics over interleaved blocks."""

from __future__ import annotations

from pathlib import Path

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


def test_ratio_interval_brackets_the_median_and_narrows_with_agreeing_blocks() -> None:
    from edgeprune.targets.stats import ratio_interval

    tight = ratio_interval([0.50, 0.51, 0.49, 0.50, 0.50, 0.51, 0.49])
    loose = ratio_interval([0.40, 0.62, 0.45, 0.58, 0.50, 0.66, 0.35])
    assert tight[0] <= 0.50 <= tight[1] and loose[0] <= 0.50 <= loose[1]
    assert tight[1] - tight[0] < loose[1] - loose[0]
    assert ratio_interval([0.7]) == (0.7, 0.7)
    assert ratio_interval([0.4, 0.6], seed=3) == ratio_interval([0.4, 0.6], seed=3)


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc")
def test_a_neighbours_cpu_is_seen_and_our_own_is_not() -> None:
    """A busy child process is counted as another process's core; while this process sleeps
    its own ticks are not (the load average would lag a minute and count us)."""
    import subprocess
    import sys
    import time

    from edgeprune.targets.timing import OthersCpu

    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it start spinning
        sampler = OthersCpu()
        sampler.start()
        time.sleep(1.0)
        busy = sampler.stop()
    finally:
        child.kill()
        child.wait()
    assert busy is not None and busy >= 0.5
