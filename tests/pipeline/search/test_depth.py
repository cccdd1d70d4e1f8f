"""The depth choice's block counts and its pick among them."""

from __future__ import annotations

import math

import pytest

from edgeprune.pipeline.search.depth import option_counts, pick_count


def test_option_counts_cover_zero_and_the_most_evenly():
    assert option_counts(7, 8) == list(range(8))
    assert option_counts(0, 8) == [0]
    many = option_counts(25, 8)
    assert many[0] == 0 and many[-1] == 25 and len(many) == 8 and many == sorted(set(many))


def _se(p: float) -> float:  # a 1,000-image proxy's binomial standard error
    return math.sqrt(p * (1 - p) / 1000)


def _options(scores: dict[int, float | None]) -> list[dict]:
    return [
        {"blocks": n, "reachable": s is not None, "proxy_accuracy": s} if s is not None
        else {"blocks": n, "reachable": False}
        for n, s in scores.items()
    ]  # fmt: skip


# The 50% budget's options of the CIFAR-10 policy ablation (seed 0, l1).
ABLATION_50 = {0: 0.523, 1: 0.636, 2: 0.683, 3: 0.66, 4: 0.514, 5: 0.464, 6: 0.346, 7: 0.222}


def test_fewer_keeps_the_best_scoring_count_and_more_the_deepest_near_tie():
    z = math.sqrt(2 * math.log(7))
    count, margin = pick_count(_options(ABLATION_50), _se, "fewer")
    assert count == 2
    assert margin == pytest.approx(_se(0.523) * z)
    # 3 blocks score 0.023 under the best, inside the best-of-7 margin (0.031); 4 do not.
    count, _ = pick_count(_options(ABLATION_50), _se, "more")
    assert count == 3


def test_depth_must_beat_channels_alone_by_the_margin_whatever_the_ties():
    close = {0: 0.66, 1: 0.67, 2: 0.68, 3: 0.665}  # +0.02 over channels alone < margin
    for ties in ("fewer", "more"):
        assert pick_count(_options(close), _se, ties)[0] == 0
    # Channels alone best: no blocks, even when a deeper count is within the margin.
    assert pick_count(_options({0: 0.70, 1: 0.69, 2: 0.60}), _se, "more") == (0, None)


def test_unreachable_counts_are_never_picked():
    opts = _options({0: None, 1: None, 2: 0.40, 3: 0.41, 4: None})
    assert pick_count(opts, _se, "fewer") == (3, None)
    assert pick_count(opts, _se, "more") == (3, None)
    assert pick_count(_options({0: None, 1: None}), _se, "more") == (0, None)


def test_an_exact_tie_goes_to_fewer_blocks_by_default():
    assert pick_count(_options({0: 0.30, 1: 0.50, 2: 0.50}), _se, "fewer")[0] == 1


def test_re_scored_finalists_compete_on_both_draws_and_the_rest_not_at_all():
    opts = _options(ABLATION_50)
    # The disjoint draw says 3 blocks, not 2; 1 block was not a finalist and cannot win on
    # its proxy score alone, however it compares with the finalists' combined scores.
    scores = {0: 0.52, 2: 0.65, 3: 0.68}
    for o in opts:
        if o["blocks"] in scores:
            o["score"] = scores[o["blocks"]]
    count, margin = pick_count(opts, _se, "fewer")
    assert count == 3
    # N counts every option the finalists were screened from (7 with blocks), not the 2.
    assert margin == pytest.approx(_se(0.52) * math.sqrt(2 * math.log(7)))
    opts[1]["score"] = 0.70  # now 1 block is a finalist, and the best on both draws
    assert pick_count(opts, _se, "fewer")[0] == 1
