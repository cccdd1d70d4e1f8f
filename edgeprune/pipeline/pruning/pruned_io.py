"""Save and load pruned models without pickling modules.

A pruned model is stored as what rebuilds it: the base model spec, the residual blocks
depth pruning dropped, the plan and the exact removed channel indices (``spec.json``), and
a plain state_dict (``weights.pt``, read with ``weights_only=True``). Loading builds a
fresh base model, drops the blocks, replays the removals by group name (importance is *not*
re-scored, so the result is the same channels), then loads the weights. Nothing in the
directory can run code when loaded.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune._io import atomic_torch_save, atomic_write_json, sha256_file
from edgeprune.errors import EdgepruneError, PruningError
from edgeprune.models import ModelSpec
from edgeprune.pipeline.pruning.blocks import drop_blocks
from edgeprune.pipeline.pruning.groups import GroupSet, build_groups
from edgeprune.pipeline.pruning.plan import PruningPlan
from edgeprune.pipeline.pruning.prune import apply_removed

__all__ = ["FORMAT_VERSION", "load_pruned", "read_pruned_spec", "save_pruned"]

FORMAT_VERSION = 1
SPEC_FILE = "spec.json"
WEIGHTS_FILE = "weights.pt"


def save_pruned(
    directory: str | Path,
    model: nn.Module,
    *,
    spec: ModelSpec,
    groups: GroupSet,
    plan: PruningPlan,
    removed: Mapping[int, Sequence[int]],
    dropped: Sequence[str] = (),
    base: nn.Module | None = None,
) -> Path:
    """Write ``spec.json`` and ``weights.pt`` for a pruned model (each file atomically).

    Args:
        directory: Output directory (created).
        model: The pruned model (e.g. ``PruneResult.model``, possibly fine-tuned).
        spec: The base architecture the groups were built from.
        groups: Groups of the base model (without ``dropped`` blocks, when there are).
        plan: The plan applied.
        removed: Group id -> removed channel indices (``PruneResult.removed``).
        dropped: Residual blocks replaced by the identity before the channels were cut.
        base: The unpruned model, when ``spec`` cannot build it (a model object given to
            :func:`edgeprune.compress`); load with ``load_pruned(directory, base=...)``.

    Returns:
        The directory.

    Raises:
        PruningError: ``model`` is not what replaying ``removed`` on ``spec`` gives.
    """
    directory = Path(directory)
    source = spec.build() if base is None else base
    replay = apply_removed(drop_blocks(source, dropped), groups, removed, verify=False)
    _check_state_fits(replay, model.state_dict(), "the model to save")
    entries = [
        {"id": gid, "name": groups[gid].name, "width": groups[gid].width, "removed": sorted(idx)}
        for gid, idx in sorted(removed.items())
        if idx
    ]
    weights = directory / WEIGHTS_FILE
    atomic_torch_save(weights, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    meta = {
        "format": FORMAT_VERSION,
        "model": spec.to_dict(),
        "base": "spec" if base is None else "object",
        "input_shape": list(groups.input_shape),
        "ignored_layers": list(groups.ignored_layers),
        "dropped_blocks": list(dropped),
        "plan": plan.to_dict(),
        "removed": entries,
        "weights": WEIGHTS_FILE,
        "weights_sha256": sha256_file(weights),
    }
    # spec.json last: its presence means the directory is complete.
    atomic_write_json(directory / SPEC_FILE, meta)
    return directory


def read_pruned_spec(directory: str | Path) -> dict[str, Any]:
    """Read and check ``spec.json`` of a saved pruned model.

    Raises:
        PruningError: Missing or corrupt file, or another format version.
    """
    path = Path(directory) / SPEC_FILE
    if not path.is_file():
        raise PruningError(f"{path} does not exist — point at a directory written by save_pruned")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PruningError(
            f"{path} is not valid JSON ({exc}) — the save is corrupt; re-save"
        ) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise PruningError(
            f"{path} has format {found!r}, this edgeprune reads {FORMAT_VERSION} — "
            "re-save the model with this version"
        )
    missing = [k for k in ("model", "input_shape", "plan", "removed", "weights") if k not in meta]
    if missing:
        raise PruningError(f"{path} lacks {', '.join(missing)} — the save is corrupt; re-save")
    return meta


def load_pruned(directory: str | Path, base: nn.Module | None = None) -> nn.Module:
    """Rebuild a pruned model saved by :func:`save_pruned` (eval mode).

    ``base``: the unpruned model the removals are replayed on (not modified); needed when
    the save came from a model object (``spec.json`` ``"base": "object"``), else built
    from the spec.

    Raises:
        PruningError: Missing or corrupt files, or a saved plan that no longer fits the base
            model (e.g. its factory changed).
    """
    directory = Path(directory)
    meta = read_pruned_spec(directory)
    try:
        spec = ModelSpec.from_dict(meta["model"])
        if base is None and meta.get("base") == "object":
            raise PruningError(
                f"{directory} was pruned from a model object; pass it: "
                "load_pruned(directory, base=your_unpruned_model)"
            )
        source = spec.build() if base is None else base
        base = drop_blocks(source, [str(n) for n in meta.get("dropped_blocks", ())])
        input_shape = tuple(int(d) for d in meta["input_shape"])
        removed = {int(e["id"]): [int(i) for i in e["removed"]] for e in meta["removed"]}
        names = {int(e["id"]): (str(e["name"]), int(e["width"])) for e in meta["removed"]}
        PruningPlan.from_dict(meta["plan"])
    except EdgepruneError as exc:
        raise PruningError(f"cannot rebuild the base model of {directory}: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise PruningError(
            f"{directory / SPEC_FILE} has a malformed entry ({exc!r}) — the save is corrupt"
        ) from exc
    groups = build_groups(
        base, torch.zeros(input_shape), ignored_layers=meta.get("ignored_layers") or None
    )
    for gid, (name, width) in names.items():
        if gid >= len(groups) or (groups[gid].name, groups[gid].width) != (name, width):
            raise PruningError(
                f"saved group {gid} ({name}, {width} channels) does not exist in a fresh "
                f"{spec.name} — the model definition changed since the save; re-prune"
            )
    model = apply_removed(base, groups, removed)
    state = _read_weights(directory / str(meta["weights"]), meta.get("weights_sha256"))
    _check_state_fits(model, state, str(directory / str(meta["weights"])))
    model.load_state_dict(state, strict=True)
    return model.eval()


def _read_weights(path: Path, sha256: str | None) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PruningError(f"{path} does not exist — the save is incomplete; re-save")
    if sha256 is not None and sha256_file(path) != sha256:
        raise PruningError(f"{path} does not match its checksum in spec.json — corrupt; re-save")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise PruningError(f"cannot read {path} ({exc}) — the save is corrupt; re-save") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PruningError(f"{path} is not a state_dict — the save is corrupt; re-save")
    return state


def _check_state_fits(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    expected = model.state_dict()
    if set(expected) != set(state):
        diff = sorted(set(expected) ^ set(state))
        raise PruningError(
            f"{what} does not fit the replayed pruned architecture (keys differ: "
            f"{', '.join(diff[:3])}) — save the model that prune() returned"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise PruningError(
                f"{what} does not fit the replayed pruned architecture: {key} is "
                f"{tuple(state[key].shape)}, expected {tuple(tensor.shape)} — save the model "
                "that prune() returned with the same removed indices"
            )
