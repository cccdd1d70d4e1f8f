"""The RL searcher: policy maths, allocation, epsilon schedule, guard, determinism, resume.

The "model" here is a deterministic function of the keep counts (accuracy loses more when
a sensitive group is pruned; latency is linear in channels): a legitimate harness for a
searcher, which never sees a model, only rewards and a cost model to meet.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from edgeprune.errors import SearchError
from edgeprune.pipeline.pruning.plan import channel_grid
from edgeprune.pipeline.search import (
    Candidate,
    Outcome,
    RLSearcher,
    RLSettings,
    Searcher,
    epsilon_at,
    make_searcher,
    policy_step,
)
from edgeprune.pipeline.search.cluster_rl import ClusterRLSearcher
from edgeprune.pipeline.search.cost import Calibration, CostModel, LayerCost
from edgeprune.pipeline.search.knapsack import solve_knapsack
from edgeprune.pipeline.search.rl import _pd_of, advantage_direction, initial_pd, sample_pd
from edgeprune.pipeline.search.task import StepTask

BASE = {10: 32, 11: 64, 12: 64, 13: 128}
SENSITIVITY = {10: 0.6, 11: 0.1, 12: 0.05, 13: 0.02}  # group 10 hurts most when pruned
COST_MS = {10: 0.02, 11: 0.01, 12: 0.01, 13: 0.005}
COST = CostModel(
    [
        LayerCost(f"l{g}", 1, w, (), ((g, 1),), lambda ci, co, c=COST_MS[g]: c * co)
        for g, w in BASE.items()
    ],
    BASE,
    0.0,
    Calibration(unit=1.0),
)
RNG = np.random.default_rng(0)
SCORES = {g: 1 + 0.1 * RNG.random(w) for g, w in BASE.items()}


def task_for(widths: dict[int, int], shrink: float = 0.85, index: int = 0) -> StepTask:
    """A step from ``widths`` to ``shrink`` x their cost, on a grid of multiples of 4."""
    return StepTask(
        widths=dict(widths),
        grids={g: tuple(k for k in channel_grid(BASE[g], 4) if k <= w) for g, w in widths.items()},
        scores={g: SCORES[g][:w] for g, w in widths.items()},
        cost=COST,
        target=shrink * COST.predict(widths),
        index=index,
    )


def fake_eval(c: Candidate) -> Outcome:
    lost = sum(SENSITIVITY[g] * (1 - k / BASE[g]) for g, k in c.keep.items())
    acc = max(0.0, 0.9 - lost)
    lat = COST.predict(c.keep)
    return Outcome(c, acc, acc, lat, macs=sum(c.keep.values()), params=0)


def run_steps(s: RLSearcher, widths: dict[int, int], n: int, shrink: float = 0.85):
    """Drive the searcher like the driver does; returns (proposal keys, chosen keys, widths)."""
    proposals, chosen, prev_acc = [], [], 0.9
    done = 0
    while done < n:
        task = task_for(widths, shrink)
        s.start_step(task)
        while batch := s.propose():
            proposals.append([c.key() for c in batch])
            for c in batch:
                assert task.fits(c.keep), c.tag  # every candidate meets the step's target
            s.observe([fake_eval(c) for c in batch])
        kept = s.choose()
        accepted = fake_eval(kept)
        if not s.end_step(accepted, prev_acc):
            continue  # collapse guard: redo from the same widths
        done += 1
        prev_acc = accepted.accuracy
        chosen.append(kept.key())
        widths = dict(kept.keep)
    return proposals, chosen, widths


def test_initial_pd_is_proportional_to_width() -> None:
    np.testing.assert_allclose(initial_pd([16, 32, 64, 16]), [0.125, 0.25, 0.5, 0.125])
    s = RLSearcher(seed=0)
    s.start_step(task_for(dict(BASE)))
    np.testing.assert_allclose(s.pd, np.array([32, 64, 64, 128]) / 288)


def test_sample_pd_adds_scaled_gaussian_then_clamps_and_renormalises() -> None:
    pd = initial_pd([32, 64, 64, 128])
    rng, twin = np.random.default_rng(3), np.random.default_rng(3)
    got = sample_pd(pd, rng, noise=0.04, floor=1e-5)
    expected = np.maximum(pd + twin.standard_normal(4) * 0.04 * twin.random(), 1e-5)
    np.testing.assert_allclose(got, expected / expected.sum())
    assert got.sum() == pytest.approx(1.0)
    # huge noise: negative entries are clamped to the floor before renormalising
    wild = sample_pd(pd, np.random.default_rng(0), noise=50.0, floor=1e-5)
    assert wild.sum() == pytest.approx(1.0) and np.all(wild > 0)
    clamped = wild[wild < 1e-4]
    assert clamped.size > 0 and np.allclose(clamped, clamped[0])


def test_update_moves_toward_best_then_clips_the_ratio() -> None:
    pd, best = np.array([0.5, 0.3, 0.2]), np.array([0.1, 0.5, 0.4])
    # lambda 0.5: PD' = [0.3, 0.4, 0.3]; ratio [0.6, 1.33, 1.5] -> [0.8, 1.2, 1.2]
    np.testing.assert_allclose(policy_step(pd, best - pd, 0.5, 0.2, 1e-5), [0.4, 0.36, 0.24])
    # lambda 0.1: PD' = [0.46, 0.32, 0.22], ratios inside [0.8, 1.2]: no clip
    np.testing.assert_allclose(policy_step(pd, best - pd, 0.1, 0.2, 1e-5), [0.46, 0.32, 0.22])
    # clip disabled: the raw move
    np.testing.assert_allclose(policy_step(pd, best - pd, 0.5, 0.0, 1e-5), [0.3, 0.4, 0.3])


def test_pd_split_water_fills_and_projection_keeps_its_shape() -> None:
    from edgeprune.pipeline.search.base import water_fill
    from edgeprune.pipeline.search.rl import project_pd, split_by_pd

    assert water_fill([0.5, 0.3, 0.2], [100, 100, 100], 10) == pytest.approx([5, 3, 2])
    # a capped entry is pinned, the rest re-split
    assert water_fill([0.9, 0.05, 0.05], [3, 100, 100], 13) == pytest.approx([3, 5, 5])
    task = task_for(dict(BASE), shrink=0.7)
    heavy_on_13 = np.array([0.01, 0.01, 0.01, 0.97])
    keep = project_pd(task, heavy_on_13)
    assert task.fits(keep)
    assert keep[13] < BASE[13] and keep[10] >= keep[13] * BASE[10] / BASE[13]
    assert all(k in task.grids[g] for g, k in split_by_pd(task, heavy_on_13, 40).items())


def test_epsilon_schedule_cosine_over_first_tenth_of_steps() -> None:
    assert epsilon_at(0, 100, 0.4) == pytest.approx(0.4)
    assert epsilon_at(5, 100, 0.4) == pytest.approx(0.2)  # half-way: cos(pi/2) = 0
    assert epsilon_at(10, 100, 0.4) == pytest.approx(0.0, abs=1e-12)
    assert all(epsilon_at(k, 100, 0.4) == 0.0 for k in range(11, 100))
    values = [epsilon_at(k, 100, 0.4) for k in range(11)]
    assert all(a > b for a, b in itertools.pairwise(values))
    assert epsilon_at(5, 100, 0.4, schedule="linear") == pytest.approx(0.2)
    assert epsilon_at(3, 100, 0.4, schedule="linear") == pytest.approx(0.28)
    assert epsilon_at(50, 100, 0.4, schedule="constant") == 0.4


def test_searcher_epsilon_follows_accepted_steps() -> None:
    settings = RLSettings(total_steps_estimate=20, rl_epochs=1, samples=2, epsilon=0.4)
    s = RLSearcher(settings, seed=0)
    assert s.epsilon == pytest.approx(0.4)
    run_steps(s, dict(BASE), 1)
    assert s.epsilon == pytest.approx(0.4 * 0.5 * (1 + np.cos(np.pi * 1 / 2)))
    run_steps(s, dict(BASE), 2)
    assert s.epsilon == 0.0


def test_first_epoch_holds_the_knapsack_and_magnitude_plans() -> None:
    s = RLSearcher(RLSettings(rl_epochs=2, samples=3), seed=0)
    task = task_for(dict(BASE))
    s.start_step(task)
    first = s.propose()
    tags = [c.tag for c in first]
    assert tags[:2] == ["step0/epoch0/knapsack", "step0/epoch0/magnitude"]
    assert dict(first[0].keep) == solve_knapsack(task)
    s.observe([fake_eval(c) for c in first])
    second = s.propose()
    assert [c.tag for c in second] == [f"step0/epoch1/sample{i}" for i in range(3)]


def test_rl_never_keeps_a_candidate_worse_than_its_seeds() -> None:
    s = RLSearcher(RLSettings(rl_epochs=3, samples=4), seed=3)
    s.start_step(task_for(dict(BASE)))
    outs = []
    while batch := s.propose():
        batch_outs = [fake_eval(c) for c in batch]
        outs += batch_outs
        s.observe(batch_outs)
    kept = s.choose()
    seeds = [o.reward for o in outs if o.candidate.tag.endswith(("knapsack", "magnitude"))]
    assert fake_eval(kept).reward >= max(seeds)


def test_every_epoch_updates_from_the_advantages_of_the_evaluated_plans() -> None:
    s = RLSearcher(RLSettings(rl_epochs=2, samples=5, step_length=0.5), seed=4)
    task = task_for(dict(BASE))
    s.start_step(task)
    pd0 = s.pd.copy()
    batch = s.propose()
    # what is learned from is the scored plan's removals, not the sample it came from
    assert all(c.pd == _pd_of(task, c.keep, 1e-5) for c in batch)
    outs = [fake_eval(c) for c in batch]
    s.observe(outs[:2])  # partial: no update yet
    np.testing.assert_array_equal(s.pd, pd0)
    s.observe(outs[2:])
    d = advantage_direction(pd0, [o.candidate.pd for o in outs], [o.reward for o in outs])
    np.testing.assert_allclose(s.pd, policy_step(pd0, d, 0.5, 0.2, 1e-5))
    assert s.updates == 1 and s.buffer[0][0] == max(o.reward for o in outs)
    # rewards that cannot tell the plans apart move nothing; the buffer keeps the best
    pd1 = s.pd.copy()
    batch = s.propose()
    s.observe([Outcome(c, reward=-1.0, accuracy=0.1) for c in batch])
    np.testing.assert_array_equal(s.pd, pd1)
    assert s.propose() == []
    chosen = s.choose()
    assert fake_eval(chosen).reward == max(o.reward for o in outs)
    assert all(s.choose() == chosen for _ in range(20))  # idempotent: no redraw


def test_advantage_direction_points_to_the_better_actions() -> None:
    pd = np.array([0.5, 0.5])
    d = advantage_direction(pd, [[0.8, 0.2], [0.2, 0.8]], [1.0, 0.0])
    np.testing.assert_allclose(d, [0.3, -0.3])
    assert advantage_direction(pd, [[0.8, 0.2]], [1.0]) is None
    assert advantage_direction(pd, [[0.8, 0.2], [0.2, 0.8]], [0.5, 0.5]) is None


def test_rl_learns_to_spare_the_sensitive_group_and_beats_the_one_shot_plans() -> None:
    # Group 10 costs most per channel *and* hurts accuracy most: importance per ms says
    # cut it, the rewards say keep it. Only the searcher that reads rewards can tell.
    cfg = {"rl_epochs": 3, "samples": 6, "noise": 0.08}
    s = RLSearcher(RLSettings(**cfg), seed=1)
    _, _, widths = run_steps(s, dict(BASE), 5)
    assert widths[10] / BASE[10] > widths[13] / BASE[13]  # the sensitive group kept more
    rl_acc = fake_eval(Candidate(widths, 0)).accuracy
    for name in ("knapsack", "magnitude", "uniform"):
        _, _, other = run_steps(make_searcher(name), dict(BASE), 5)
        assert rl_acc > fake_eval(Candidate(other, 0)).accuracy, name


def test_collapse_guard_resets_pd_and_asks_for_one_redo() -> None:
    s = RLSearcher(RLSettings(rl_epochs=1, samples=3, max_redos=1), seed=0)
    widths = {10: 28, 11: 60, 12: 64, 13: 100}
    task = task_for(widths)
    s.start_step(task)
    while batch := s.propose():
        s.observe([fake_eval(c) for c in batch])
    kept = s.choose()
    assert not np.allclose(s.pd, initial_pd(list(widths.values())))
    drop = Outcome(kept, 0.5, accuracy=0.80, latency_ms=1.0)  # 11.1% below 0.90
    assert s.end_step(drop, 0.90) is False
    np.testing.assert_allclose(s.pd, initial_pd([28, 60, 64, 100]))
    with pytest.raises(SearchError, match="start_step"):
        s.propose()
    s.start_step(task)  # redo: same step index, tags say so
    batch = s.propose()
    assert batch[0].tag == "step0/redo1/epoch0/knapsack"
    s.observe([fake_eval(c) for c in batch])
    kept = s.choose()
    assert s.end_step(Outcome(kept, 0.5, accuracy=0.5), 0.90) is True  # redo budget spent
    assert s.step_index == 1


def test_collapse_guard_threshold_is_relative_ten_percent() -> None:
    for acc, ok in [(0.82, True), (0.8101, True), (0.80, False)]:
        s = RLSearcher(RLSettings(rl_epochs=1, samples=2, max_redos=1), seed=0)
        s.start_step(task_for(dict(BASE)))
        s.observe([fake_eval(c) for c in s.propose()])
        assert s.end_step(Outcome(s.choose(), 0.0, accuracy=acc), 0.90) is ok


def test_same_seed_same_plan_other_seed_other_plan() -> None:
    cfg = {"rl_epochs": 3, "samples": 4, "noise": 0.1}
    a = run_steps(make_searcher("rl", cfg, seed=5), dict(BASE), 3)
    b = run_steps(make_searcher("rl", cfg, seed=5), dict(BASE), 3)
    c = run_steps(make_searcher("rl", cfg, seed=6), dict(BASE), 3)
    assert a == b
    assert a[0] != c[0]


def test_state_dict_round_trip_between_steps_continues_identically() -> None:
    s = RLSearcher(RLSettings(rl_epochs=3, samples=4), seed=9)
    _, _, widths = run_steps(s, dict(BASE), 1)
    saved = json.loads(json.dumps(s.state_dict()))
    clone = make_searcher("rl", {"rl_epochs": 3, "samples": 4}, seed=0)  # seed is restored
    clone.load_state_dict(saved)
    assert run_steps(s, dict(widths), 2) == run_steps(clone, dict(widths), 2)


def test_contract_misuse_and_bad_state_raise_search_error() -> None:
    s = RLSearcher(RLSettings(rl_epochs=1, samples=2), seed=0)
    with pytest.raises(SearchError, match="start_step"):
        s.propose()
    s.start_step(task_for(dict(BASE)))
    batch = s.propose()
    with pytest.raises(SearchError, match="observe"):
        s.propose()
    with pytest.raises(SearchError, match="not an outstanding"):
        s.observe([Outcome(Candidate({10: 1}, 1, tag="bogus"), 0.0, 0.5)])
    s.observe([Outcome(c, float("-inf"), 0.0) for c in batch])  # all failed
    with pytest.raises(SearchError, match="all failed"):
        s.choose()
    with pytest.raises(SearchError, match="groups changed"):
        s.start_step(task_for({10: 32, 11: 64}))
    with pytest.raises(SearchError, match="positive"):
        s.start_step(task_for(dict(BASE), shrink=0.0))
    with pytest.raises(SearchError, match="uniform"):
        s.load_state_dict(make_searcher("uniform").state_dict())
    with pytest.raises(SearchError, match="ppo_clip"):
        RLSettings(ppo_clip=1.5)
    with pytest.raises(SearchError, match="unknown searcher"):
        make_searcher("greedy")


def test_registry_names_and_rewards() -> None:
    for name in ("rl", "random", "cluster-rl", "rl-flops", "knapsack", "uniform", "magnitude"):
        assert isinstance(make_searcher(name), Searcher)
    assert make_searcher("rl").reward_kind == "accuracy"
    flops = make_searcher("rl-flops", RLSettings.paper())
    assert flops.reward_kind == "flops" and isinstance(flops, RLSearcher)
    assert flops.settings.rl_epochs == 10 and flops.settings.samples == 10


def _final_accuracy(name: str, seed: int, **settings: float) -> float:
    cfg = {"rl_epochs": 3, "samples": 6, "noise": 0.08, **settings}
    _, _, widths = run_steps(make_searcher(name, cfg, seed=seed), dict(BASE), 5)
    return fake_eval(Candidate(widths, 0)).accuracy


def test_learning_beats_the_same_proposals_with_learning_off() -> None:
    """The ablation the default rests on, on the harness: ``random`` proposes the same way
    (seeds, samples around PD, projection) but never updates PD."""
    rl = [_final_accuracy("rl", seed) for seed in range(8)]
    off = [_final_accuracy("random", seed) for seed in range(8)]
    assert np.mean(rl) > np.mean(off) + np.std(rl)
    assert sum(a > b for a, b in zip(rl, off, strict=True)) >= 6
    s = make_searcher("random", {"rl_epochs": 2, "samples": 3}, seed=0)
    run_steps(s, dict(BASE), 2)
    assert s.updates == 0 and all(h == s.history[0] for h in s.history)


def test_cluster_rl_learns_cluster_fractions_and_spares_the_sensitive_group() -> None:
    s = make_searcher("cluster-rl", {"rl_epochs": 3, "samples": 6}, seed=0)
    _, _, widths = run_steps(s, dict(BASE), 5)
    start, end = np.array(s.history[0]), np.array(s.history[-1])
    assert s.updates > 0 and end[0] > start[0] and end[3] < start[3]  # group 10 up, 13 down
    assert widths[10] / BASE[10] > widths[13] / BASE[13]
    learned = np.mean([_final_accuracy("cluster-rl", seed) for seed in range(4)])
    off = [
        run_steps(ClusterRLSearcher(RLSettings(rl_epochs=3, samples=6, learn=False), seed),
                  dict(BASE), 5)[2]
        for seed in range(4)
    ]  # fmt: skip
    assert learned > np.mean([fake_eval(Candidate(w, 0)).accuracy for w in off])
    saved = json.loads(json.dumps(s.state_dict()))
    clone = make_searcher("cluster-rl", {"rl_epochs": 3, "samples": 6}, seed=1)
    clone.load_state_dict(saved)
    assert clone.base == s.base and np.allclose(clone.pd, s.pd)
    assert run_steps(s, dict(widths), 1) == run_steps(clone, dict(widths), 1)
