"""A step's candidates scored in parallel processes, with the sequential run's results.

Scoring a candidate (prune a copy, re-estimate BatchNorm, the proxy metric, MACs) depends
only on the step's model, the candidate and the run's fixed batches, so it is the same in
any process. With ``search.workers`` > 1 the unseen candidates of a batch are scored by
forked worker processes (they inherit the step's model, groups, importance and task; only
the plan goes over the pipe), and the results are handed to the searcher in proposal
order: the log, the searcher's state and the chosen plan equal a one-process run's.

Fork is needed (the model and the data are not pickled); where the platform has no fork,
or CUDA is initialised (forking it is unsafe), candidates are scored in this process.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch
from torch import nn

from edgeprune.pipeline.pruning.groups import GroupSet
from edgeprune.pipeline.run_context import RunContext
from edgeprune.pipeline.search.base import Candidate, Outcome
from edgeprune.pipeline.search.evaluator import evaluate_candidate

__all__ = ["CandidateScorer"]

# The step's objects, set before the workers fork (they read them, never the parent's
# later state) and cleared after.
_JOB: tuple[RunContext, nn.Module, GroupSet, Any, Any] | None = None


def _score_in_child(
    keep: dict[int, int], removed: int, pd: tuple[float, ...] | None, tag: str
) -> tuple[float, float, float | None, int, int, dict[str, Any]]:
    assert _JOB is not None, "worker forked without a job"
    ctx, model, groups, importance, reward = _JOB
    torch.set_num_threads(1)
    out, row = evaluate_candidate(
        ctx, model, groups, Candidate(keep, removed, pd, tag), importance, reward
    )
    return out.reward, out.accuracy, out.latency_ms, out.macs, out.params, row


class CandidateScorer:
    """Scores a step's candidates, in ``workers`` forked processes when that is possible.

    Use as a context manager around one step (the workers see the step's model).
    """

    def __init__(
        self,
        ctx: RunContext,
        model: nn.Module,
        groups: GroupSet,
        importance: Any,
        reward: Any,
        workers: int,
    ) -> None:
        self.job = (ctx, model, groups, importance, reward)
        self.workers = workers if _can_fork() else 1
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> CandidateScorer:
        global _JOB
        if self.workers > 1:
            _JOB = self.job
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("fork"))
        return self

    def __exit__(self, *exc: object) -> None:
        global _JOB
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        _JOB = None

    def score(self, cands: Sequence[Candidate]) -> list[tuple[Outcome, dict[str, Any]]]:
        """``(Outcome, log row)`` of each candidate, in order."""
        if self._pool is None or len(cands) < 2:
            return [evaluate_candidate(*self.job[:3], c, *self.job[3:]) for c in cands]
        futures = [
            self._pool.submit(_score_in_child, dict(c.keep), c.removed_channels, c.pd, c.tag)
            for c in cands
        ]
        out = []
        for c, f in zip(cands, futures, strict=True):
            reward, acc, latency, macs, params, row = f.result()
            out.append((Outcome(c, reward, acc, latency, macs, params), row))
        return out


def _can_fork() -> bool:
    if "fork" not in mp.get_all_start_methods():
        return False
    return not (torch.cuda.is_available() and torch.cuda.is_initialized())
