"""Pickle-free save/load of pruned models: exact round trip, clear errors on bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgeprune._io import sha256_file
from edgeprune.errors import PruningError
from edgeprune.models import ModelSpec
from edgeprune.pipeline.pruning.groups import build_groups
from edgeprune.pipeline.pruning.plan import plan_from_ratios
from edgeprune.pipeline.pruning.prune import PruneResult, prune
from edgeprune.pipeline.pruning.pruned_io import load_pruned, read_pruned_spec, save_pruned

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _pruned(spec: ModelSpec, multiple: int = 8):
    torch.manual_seed(0)
    base = spec.build().eval()
    groups = build_groups(base, X[:1])
    plan = plan_from_ratios(groups, {g.id: 0.5 for g in groups.prunable}, multiple)
    result = prune(base, groups, plan, "cluster")
    with torch.no_grad():  # stand-in for fine-tuning: weights the base could never re-create
        for p in result.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return groups, result


def _save(tmp_path: Path, spec: ModelSpec, groups, result: PruneResult) -> Path:
    return save_pruned(
        tmp_path / "pruned",
        result.model,
        spec=spec,
        groups=groups,
        plan=result.plan,
        removed=result.removed,
    )


@pytest.mark.parametrize(
    "spec", [ModelSpec("resnet20"), ModelSpec("edgeprune.models.testing:GroupedConvNet", 5)]
)
def test_round_trip_is_exact(tmp_path: Path, spec: ModelSpec) -> None:
    groups, result = _pruned(spec)
    directory = _save(tmp_path, spec, groups, result)
    assert sorted(p.name for p in directory.iterdir()) == ["spec.json", "weights.pt"]
    loaded = load_pruned(directory)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(X), result.model.eval()(X))
    for (k, v), (k2, v2) in zip(
        loaded.state_dict().items(), result.model.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)
    meta = read_pruned_spec(directory)
    assert meta["model"] == spec.to_dict()
    assert meta["plan"] == result.plan.to_dict()
    assert {e["id"]: tuple(e["removed"]) for e in meta["removed"]} == dict(result.removed)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PruneResult]:
    spec = ModelSpec("edgeprune.models.testing:TinyConvNet")
    groups, result = _pruned(spec, multiple=4)
    return _save(tmp_path_factory.mktemp("io"), spec, groups, result), result


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _edit_spec(d: Path, **changes: object) -> None:
    meta = json.loads((d / "spec.json").read_text())
    meta.update(changes)
    (d / "spec.json").write_text(json.dumps(meta))


def test_missing_and_corrupt_files_raise_pruning_errors(tmp_path: Path, saved) -> None:
    src, _ = saved
    with pytest.raises(PruningError, match="does not exist"):
        load_pruned(tmp_path / "nowhere")

    d = _copy(src, tmp_path / "badjson")
    (d / "spec.json").write_text("{not json")
    with pytest.raises(PruningError, match="not valid JSON"):
        load_pruned(d)

    d = _copy(src, tmp_path / "format")
    _edit_spec(d, format=99)
    with pytest.raises(PruningError, match="format 99"):
        load_pruned(d)

    d = _copy(src, tmp_path / "noweights")
    (d / "weights.pt").unlink()
    with pytest.raises(PruningError, match=r"weights\.pt does not exist"):
        load_pruned(d)

    d = _copy(src, tmp_path / "truncated")
    data = (d / "weights.pt").read_bytes()
    (d / "weights.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(PruningError, match="checksum"):
        load_pruned(d)
    _edit_spec(d, weights_sha256=sha256_file(d / "weights.pt"))
    with pytest.raises(PruningError, match="cannot read"):
        load_pruned(d)

    d = _copy(src, tmp_path / "badgroup")
    meta = json.loads((d / "spec.json").read_text())
    meta["removed"][0]["name"] = "renamed.layer"
    (d / "spec.json").write_text(json.dumps(meta))
    with pytest.raises(PruningError, match="model definition changed"):
        load_pruned(d)

    d = _copy(src, tmp_path / "badmodel")
    _edit_spec(d, model={"name": "no_such_model", "num_classes": 10})
    with pytest.raises(PruningError, match="cannot rebuild the base model"):
        load_pruned(d)


def test_pickled_objects_are_refused(tmp_path: Path, saved) -> None:
    src, result = saved
    d = _copy(src, tmp_path / "pickle")
    torch.save(result.model, d / "weights.pt")  # a whole module: needs unpickling code
    _edit_spec(d, weights_sha256=sha256_file(d / "weights.pt"))
    with pytest.raises(PruningError, match="cannot read"):
        load_pruned(d)


def test_save_refuses_a_model_that_does_not_match_the_plan(tmp_path: Path, saved) -> None:
    spec = ModelSpec("edgeprune.models.testing:TinyConvNet")
    base = spec.build()
    groups = build_groups(base, X[:1])
    plan = plan_from_ratios(groups, {g.id: 0.5 for g in groups.prunable})
    result = prune(base, groups, plan)
    with pytest.raises(PruningError, match="does not fit the replayed pruned architecture"):
        save_pruned(
            tmp_path / "x", base, spec=spec, groups=groups, plan=plan, removed=result.removed
        )
    assert not (tmp_path / "x" / "spec.json").exists()


def test_round_trip_with_dropped_blocks_is_exact(tmp_path: Path) -> None:
    from edgeprune.pipeline.pruning.blocks import drop_blocks

    spec = ModelSpec("resnet20", 10)
    base = drop_blocks(spec.build().eval(), ["layer1.1", "layer3.2"])
    x = torch.zeros(1, 3, 32, 32)
    groups = build_groups(base, x)
    plan = plan_from_ratios(groups, {g.id: 0.5 for g in groups.prunable}, 4)
    res = prune(base, groups, plan)
    out = save_pruned(
        tmp_path / "m", res.model, spec=spec, groups=groups, plan=plan, removed=res.removed,
        dropped=["layer1.1", "layer3.2"],
    )  # fmt: skip
    assert read_pruned_spec(out)["dropped_blocks"] == ["layer1.1", "layer3.2"]
    loaded = load_pruned(out)
    y = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(y), res.model(y))
    assert isinstance(loaded.layer1[1], torch.nn.Identity)
