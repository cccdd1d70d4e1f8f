"""Streaming ImageFolder data: same split and pixels as in memory, chosen by size, and a
224-px set through ``compress`` without decoding it whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgeprune.data import (
    DataSplits,
    StreamingSplits,
    iterate_batches,
    load_data,
    open_data,
)
from edgeprune.data.streaming import load_streaming
from edgeprune.errors import DataError
from tests.data.conftest import make_imagefolder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("sf") / "data", per_class=9, test_per_class=3)


def test_streamed_split_and_pixels_equal_the_in_memory_ones(folder: Path, tmp_path: Path) -> None:
    mem = load_data(folder, image_size=32, val_fraction=0.25, seed=3, cache_dir=tmp_path)
    st = load_streaming(folder, image_size=32, val_fraction=0.25, seed=3, workers=0)
    for split in ("train", "val", "test"):
        assert torch.equal(st.labels(split), mem.labels(split))
        idx = torch.arange(st.size(split))
        assert torch.equal(st.take(split, idx), mem.take(split, idx))
    # every training image is in the stats sample here, so the statistics agree
    assert st.mean == pytest.approx(mem.mean, abs=1e-6)
    assert st.std == pytest.approx(mem.std, abs=1e-6)
    # the same order and augmentation give the same batches, decoded by worker processes
    st2 = load_streaming(folder, image_size=32, val_fraction=0.25, seed=3, workers=2)
    got = list(
        st2.batches(
            "train", 8, shuffle=True, augment=True, generator=torch.Generator().manual_seed(5)
        )
    )
    want = list(
        iterate_batches(
            mem.train_x, mem.train_y, 8, shuffle=True, augment=True,
            generator=torch.Generator().manual_seed(5), mean=st.mean, std=st.std,
        )
    )  # fmt: skip
    assert len(got) == len(want)
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        assert torch.equal(gy, wy)
        torch.testing.assert_close(gx, wx)


def test_auto_streams_only_sets_too_big_for_memory(folder: Path, tmp_path: Path) -> None:
    kw = {"image_size": 32, "cache_dir": tmp_path, "val_fraction": 0.25}
    assert isinstance(open_data(folder, **kw), DataSplits)
    tiny_limit = 30 * 3 * 32 * 32 / 2**20  # fewer bytes than the 36 decoded images
    assert isinstance(open_data(folder, memory_limit_mb=tiny_limit, **kw), StreamingSplits)
    assert isinstance(open_data(folder, loader="stream", **kw), StreamingSplits)
    with pytest.raises(DataError, match=r"data\.loader=stream reads ImageFolder trees"):
        open_data("digits", loader="stream")


def test_a_224px_imagefolder_compresses_streamed(tmp_path: Path) -> None:
    from edgeprune.config import RunConfig
    from edgeprune.pipeline.compress import compress_run

    root = make_imagefolder(tmp_path / "big", per_class=12, test_per_class=2, size=(256, 240))
    cfg = RunConfig.validate_dict(
        {
            "input_shape": [3, 224, 224],
            "model": {"name": "edgeprune.models.testing:TinyConvNet", "baseline_epochs": 1},
            "data": {"source": str(root), "val_fraction": 0.25, "loader": "stream"},
            "goal": {"speedup": 1.3},
            "search": {
                "steps": 1, "samples": 2, "rl_epochs": 1, "val_subset": 50, "bn_batches": 1,
                "depth": "off",
            },
            "finetune": {"total_epochs": 0.5, "step_epochs": 0.25, "batch_size": 8},
        }
    )  # fmt: skip
    report, model = compress_run(cfg, tmp_path / "run")
    assert report["data"]["loader"] == "stream"
    assert report["data"]["train"] == 27 and report["data"]["test"] == 6
    assert report["profile"]["input_shape"] == [3, 224, 224]
    assert report["final"]["accuracy"]["test"] is not None
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 3)
    saved = json.loads((tmp_path / "run" / "model_pruned" / "spec.json").read_text())
    assert saved["input_shape"] == [1, 3, 224, 224]


def test_an_unreadable_file_is_dropped_from_its_batch_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_imagefolder(tmp_path / "d", per_class=4, test_per_class=1)
    st = load_streaming(root, image_size=32, val_fraction=0.25, seed=0, workers=0)
    Path(st.files["train"][0]).write_bytes(b"not an image")
    n = sum(int(y.shape[0]) for _, y in st.batches("train", 4, shuffle=False, augment=False,
                                                  generator=None))  # fmt: skip
    assert n == st.size("train") - 1
    assert "skipped 1 unreadable image(s) of the train split" in capsys.readouterr().err
