"""The run directory of ``edgeprune compress``: every artifact of a run, and its checkpoint.

Layout::

    config.yaml            the run config (written once; --resume reads it back)
    baseline.pt            the trained baseline, when the run trained one
    search.jsonl           every evaluated candidate, one JSON line each
    checkpoint/state.json  where the run is (written last, atomically)
    checkpoint/model-*.pt  the current pruned model's state_dict, named by step
    model_pruned/          the final pruned model (spec + plan JSON + state_dict)
    model.onnx             the validated export
    report.json            the single source of truth for reports

A step is committed by writing its weights, then ``state.json`` pointing at them; a crash
at any point leaves the previous committed step intact. Rows of ``search.jsonl`` past the
committed count are from a step that did not finish; resume drops them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from edgeprune._io import append_jsonl, atomic_torch_save, atomic_write_json, atomic_write_text
from edgeprune.config import RunConfig
from edgeprune.errors import SearchError
from edgeprune.pipeline.search.state import STATE_VERSION


class RunDir:
    """Paths and checkpoint I/O of one run directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.config_path = self.root / "config.yaml"
        self.baseline_weights = self.root / "baseline.pt"
        self.search_log = self.root / "search.jsonl"
        self.checkpoint_dir = self.root / "checkpoint"
        self.state_path = self.checkpoint_dir / "state.json"
        self.pruned_dir = self.root / "model_pruned"
        self.onnx_path = self.root / "model.onnx"
        self.baseline_onnx = self.root / "baseline.onnx"
        self.report_path = self.root / "report.json"
        self.oracle_cache = self.root / "latency_cache.jsonl"
        self.onnx_workdir = self.root / "candidates"
        # Wall time of the run across processes: what the resumed ones had committed, plus
        # this process's (work after a killed process's last checkpoint is redone, not lost
        # from the count).
        self._t0 = time.perf_counter()
        self._elapsed_before = 0.0

    def elapsed_s(self) -> float:
        """Wall seconds of the run so far, resumed processes included."""
        return self._elapsed_before + time.perf_counter() - self._t0

    # ---- config ------------------------------------------------------------------------
    def start(self, config: RunConfig) -> None:
        """Create a new run; refuse to overwrite one that has started."""
        if self.state_path.exists() or self.report_path.exists():
            raise SearchError(
                f"{self.root} already holds a run; continue it with --resume {self.root} "
                "or choose a new --out directory"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, config.to_yaml())

    def read_config(self) -> RunConfig:
        if not self.config_path.is_file():
            raise SearchError(
                f"{self.root} is not a run directory (no config.yaml); "
                "start one with `edgeprune compress --out DIR`"
            )
        return RunConfig.from_yaml(self.config_path)

    # ---- checkpoint --------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], model_state: dict[str, Any]) -> None:
        """Commit a step: weights first, then the state that points at them."""
        name = f"model-{state['step']:03d}-{state.get('phase', 'search')}.pt"
        atomic_torch_save(self.checkpoint_dir / name, model_state)
        atomic_write_json(
            self.state_path,
            {**state, "version": STATE_VERSION, "weights": name, "elapsed_s": self.elapsed_s()},
        )
        for old in self.checkpoint_dir.glob("model-*.pt"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def load_checkpoint(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The last committed state and weights, or None before the first commit."""
        if not self.state_path.is_file():
            return None
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            weights = torch.load(
                self.checkpoint_dir / state["weights"], map_location="cpu", weights_only=True
            )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise SearchError(
                f"checkpoint in {self.checkpoint_dir} is unreadable ({exc}); "
                "start a new run with a new --out directory"
            ) from exc
        if state.get("version") != STATE_VERSION:
            raise SearchError(
                f"checkpoint version {state.get('version')} is not {STATE_VERSION}; "
                "start a new run with this edgeprune version"
            )
        self._elapsed_before = float(state.get("elapsed_s", 0.0))
        return state, weights

    # ---- search log --------------------------------------------------------------------
    def log_candidate(self, row: dict[str, Any]) -> None:
        append_jsonl(self.search_log, row)

    def log_rows(self) -> list[dict[str, Any]]:
        if not self.search_log.is_file():
            return []
        rows = []
        for line in self.search_log.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a crash ends the committed part
        return rows

    def truncate_log(self, n_rows: int) -> None:
        """Keep the first ``n_rows`` rows (drop an unfinished step's candidates)."""
        rows = self.log_rows()[:n_rows]
        atomic_write_text(self.search_log, "".join(json.dumps(r) + "\n" for r in rows))
