"""Loading user models (module:factory) and weights files, and the errors people see."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeprune.errors import ModelError
from edgeprune.models import create_model, load_model, load_weights_
from edgeprune.models.testing import TinyConvNet

X = torch.randn(2, 3, 32, 32)


def _trained_like(model: nn.Module) -> nn.Module:
    """Perturb every tensor so a round trip cannot pass by matching a fresh init."""
    torch.manual_seed(1)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.1)
    return model.eval()


def _same_outputs(a: nn.Module, b: nn.Module) -> bool:
    with torch.no_grad():
        return torch.equal(a.eval()(X), b.eval()(X))


def _user_module(directory: Path, body: str) -> str:
    """Write a uniquely named module into ``directory`` and return its name."""
    name = f"user_net_{uuid.uuid4().hex[:8]}"
    (directory / f"{name}.py").write_text(textwrap.dedent(body))
    return name


# --- weights files -------------------------------------------------------------------------


def test_state_dict_round_trip(tmp_path: Path) -> None:
    src = _trained_like(create_model("resnet20", num_classes=7))
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    loaded = load_model("resnet20", num_classes=7, weights=path)
    assert not loaded.training
    assert _same_outputs(src, loaded)
    assert not _same_outputs(src, create_model("resnet20", num_classes=7))


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_wrapped_and_ddp_prefixed_checkpoint(tmp_path: Path, key: str) -> None:
    src = _trained_like(TinyConvNet())
    ddp = {f"module.{k}": v for k, v in src.state_dict().items()}
    path = tmp_path / "ckpt.pt"
    torch.save({key: ddp, "epoch": 12, "best_acc": 0.9}, path)
    model = load_weights_(TinyConvNet(), path)
    assert _same_outputs(src, model)


def test_wrong_architecture_names_first_bad_tensor(tmp_path: Path) -> None:
    path = tmp_path / "wide.pt"
    torch.save(TinyConvNet(width=32).state_dict(), path)
    with pytest.raises(ModelError) as info:
        load_model("edgeprune.models.testing:TinyConvNet", weights=path)
    msg = str(info.value)
    assert "stem.0.weight is [32,3,3,3] in the file, [16,3,3,3] in the model" in msg
    assert "TinyConvNet" in msg and "same --model" in msg


def test_wrong_num_classes_points_at_num_classes(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save(create_model("resnet20", num_classes=10).state_dict(), path)
    with pytest.raises(
        ModelError, match=r"fc\.weight is \[10,64\] in the file, \[7,64\].*num_classes"
    ):
        load_model("resnet20", num_classes=7, weights=path)


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "r56.pt"
    torch.save(create_model("resnet56").state_dict(), path)
    with pytest.raises(ModelError, match=r"resnet20: unexpected \d+ key\(s\): layer1\.3\.conv1"):
        load_model("resnet20", weights=path)
    torch.save(create_model("resnet20").state_dict(), path)
    with pytest.raises(ModelError, match=r"resnet56: missing \d+ key\(s\).*\(\+\d+ more\)"):
        load_model("resnet56", weights=path)


def test_pickled_module_refused_without_trust(tmp_path: Path) -> None:
    src = _trained_like(TinyConvNet(num_classes=3))
    path = tmp_path / "whole.pt"
    torch.save(src, path)
    with pytest.raises(ModelError, match=r"pickled module.*--trust-pickle.*state_dict\(\)"):
        load_model("edgeprune.models.testing:TinyConvNet", num_classes=3, weights=path)
    loaded = load_model("resnet20", weights=path, trust_pickle=True)
    assert isinstance(loaded, TinyConvNet)  # the file's module, not the named architecture
    assert _same_outputs(src, loaded)
    torch.save({"model": src, "epoch": 3}, path)  # a training checkpoint holding the module
    assert _same_outputs(src, load_model("resnet20", weights=path, trust_pickle=True))
    # load_weights_ with trust copies the pickled module's tensors into the given model.
    assert _same_outputs(src, load_weights_(TinyConvNet(num_classes=3), path, trust_pickle=True))


def test_missing_corrupt_and_non_state_dict_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nope\.pt does not exist"):
        load_model("resnet20", weights=tmp_path / "nope.pt")
    good = tmp_path / "good.pt"
    torch.save(TinyConvNet().state_dict(), good)
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(ModelError, match=r"cannot read weights file .*trunc\.pt"):
        load_weights_(TinyConvNet(), truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(ModelError, match="cannot read weights file"):
        load_weights_(TinyConvNet(), garbage)
    listy = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listy)
    with pytest.raises(ModelError, match="not a state_dict"):
        load_weights_(TinyConvNet(), listy)
    mixed = tmp_path / "mixed.pt"
    torch.save({"weights": {"a": torch.zeros(1)}, "note": "hello"}, mixed)
    with pytest.raises(ModelError, match=r"entry 'weights' is a dict"):
        load_weights_(TinyConvNet(), mixed)


# --- names and factories -------------------------------------------------------------------


def test_unknown_model_name() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'resnet200'.*densenet.*resnet20"):
        load_model("resnet200")


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("no_such_pkg_xyz.nets:build", r"cannot import module 'no_such_pkg_xyz\.nets'.*PYTHONPATH"),
        ("edgeprune.models.testing:NoSuchNet", r"has no attribute 'NoSuchNet'"),
        ("edgeprune.models.testing:torch", r"is a module, not a callable"),
        ("edgeprune.models.testing", r"unknown model .*or give your own as 'package\.module"),
        (":build", r"neither a zoo name nor 'package\.module:factory'"),
        ("json:dumps", r"factory 'json:dumps' raised TypeError"),
        ("builtins:dict", r"returned a dict, not a torch\.nn\.Module"),
    ],
)
def test_bad_factory_specs(spec: str, pattern: str) -> None:
    with pytest.raises(ModelError, match=pattern):
        load_model(spec)


def test_user_factory_with_and_without_num_classes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    name = _user_module(
        tmp_path,
        """
        from torch import nn
        from edgeprune.models.testing import TinyConvNet

        def with_classes(num_classes=10):
            return TinyConvNet(num_classes=num_classes)

        def fixed():
            return TinyConvNet(num_classes=5)

        def with_kwargs(**kw):
            return TinyConvNet(**kw)
        """,
    )
    assert load_model(f"{name}:with_classes", num_classes=3)(X).shape == (2, 3)
    assert load_model(f"{name}:fixed", num_classes=3)(X).shape == (2, 5)
    assert load_model(f"{name}:with_kwargs", num_classes=4)(X).shape == (2, 4)


def test_user_module_with_missing_dependency_or_import_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    needs_dep = _user_module(tmp_path, "import not_installed_dep_xyz\n")
    with pytest.raises(ModelError, match=r"needs 'not_installed_dep_xyz', which is not installed"):
        load_model(f"{needs_dep}:build")
    broken = _user_module(tmp_path, "raise RuntimeError('boom at import')\n")
    with pytest.raises(ModelError, match=r"raised RuntimeError on import.*boom at import"):
        load_model(f"{broken}:build")


def test_module_in_working_directory_and_file_path(tmp_path: Path, monkeypatch) -> None:
    # The console script does not put the cwd on sys.path; loading must still find ./net.py.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.chdir(tmp_path)
    name = _user_module(tmp_path, "from edgeprune.models.testing import TinyConvNet as build\n")
    assert isinstance(load_model(f"{name}:build"), TinyConvNet)
    other = _user_module(tmp_path, "from edgeprune.models.testing import GroupedConvNet as net\n")
    model = load_model(f"{tmp_path / other}.py:net", num_classes=2)
    assert model(X).shape == (2, 2)
    with pytest.raises(ModelError, match=r"missing\.py .*does not exist"):
        load_model(f"{tmp_path}/missing.py:net")
