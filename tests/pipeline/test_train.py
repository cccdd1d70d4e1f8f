"""Training loop: it learns, keeps the best-on-validation weights, and is reproducible."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.data import DataSplits, load_data
from edgeprune.errors import DataError, EdgepruneError
from edgeprune.pipeline.train import cross_entropy_loss, evaluate, lr_at, run_epochs, train


def small_net(num_classes: int = 10) -> nn.Module:
    """Three strided conv-BN-ReLU layers: sees the whole digit, cheap at 32x32."""

    def cbr(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *cbr(3, 16), *cbr(16, 32), *cbr(32, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, num_classes),
    )  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    """Tiny models on a shared, oversubscribed 2-core box run ~10x faster on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_data("digits")


@pytest.fixture(scope="module")
def tiny_digits() -> DataSplits:
    return load_data("digits", limit=300)


def test_small_net_learns_digits_in_three_epochs(digits: DataSplits, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = small_net()
    out = tmp_path / "best.pt"
    result = train(model, digits, epochs=3, batch_size=32, augment=False, progress=False, out=out)
    assert result.best_val_acc > 0.80
    assert result.epochs == 3 and len(result.history) == 3
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.best_val_acc == max(row["val_acc"] for row in result.history)
    assert result.history[result.best_epoch - 1]["val_acc"] == result.best_val_acc
    # The model holds the best weights, and so does the file (a plain state_dict). Training
    # ran channels-last and evaluation now runs contiguous: allow one near-tie to flip.
    one = 1.5 / digits.val_x.shape[0]
    acc = evaluate(model, digits.val_x, digits.val_y, digits.mean, digits.std)
    assert acc == pytest.approx(result.best_val_acc, abs=one)
    assert all(p.is_contiguous() for p in model.parameters())
    state = torch.load(out, weights_only=True)
    assert all(v.is_contiguous() for v in state.values())
    fresh = small_net()
    fresh.load_state_dict(state)
    acc = evaluate(fresh, digits.val_x, digits.val_y, digits.mean, digits.std)
    assert acc == pytest.approx(result.best_val_acc, abs=one)
    assert evaluate(model, digits.test_x, digits.test_y, digits.mean, digits.std) > 0.75
    assert result.to_dict()["history"][0]["train_acc"] is not None


def test_same_seed_same_run(tiny_digits: DataSplits) -> None:
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        model = small_net()
        result = train(model, tiny_digits, epochs=2, batch_size=32, seed=7, progress=False)
        runs.append((result, model.state_dict()))
    (r1, s1), (r2, s2) = runs
    assert [row["loss"] for row in r1.history] == [row["loss"] for row in r2.history]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_best_epoch_weights_are_restored(digits: DataSplits) -> None:
    """A loss that wrecks the model after epoch 1 must not cost the epoch-1 weights."""
    torch.manual_seed(0)
    model = small_net()
    seen: list[int] = []

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = m(x)
        # Epoch 1 learns; later epochs learn to answer class 0 whatever the image.
        return F.cross_entropy(logits, y if not seen else torch.zeros_like(y))

    result = run_epochs(
        model, digits, loss_fn, epochs=2, lr=0.1, batch_size=32, augment=False,
        progress=False, on_epoch=lambda row: seen.append(row["epoch"]),
    )  # fmt: skip
    assert seen == [1, 2]
    assert result.best_epoch == 1 and result.history[1]["val_acc"] < result.best_val_acc - 0.2
    assert result.history[0]["train_acc"] is None  # loss_fn returned no logits
    acc = evaluate(model, digits.val_x, digits.val_y, digits.mean, digits.std)
    assert acc == pytest.approx(result.best_val_acc, abs=1.5 / digits.val_x.shape[0])


def test_lr_schedule_warms_up_then_decays() -> None:
    lrs = [lr_at(s, 100, 10, 0.1, 0.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] < 0.001
    assert lr_at(100, 100, 10, 0.1, 1e-4) == pytest.approx(1e-4)


def test_diverging_loss_is_reported(tiny_digits: DataSplits) -> None:
    def nan_loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return m(x).sum() * math.nan

    with pytest.raises(EdgepruneError, match="loss became nan in epoch 1 — lower lr"):
        run_epochs(small_net(), tiny_digits, nan_loss, epochs=1, lr=0.1, progress=False)


def test_evaluate_restores_mode_and_rejects_empty(tiny_digits: DataSplits) -> None:
    model = small_net().train()
    evaluate(model, tiny_digits.val_x, tiny_digits.val_y, tiny_digits.mean, tiny_digits.std)
    assert model.training
    empty = tiny_digits.val_x[:0]
    with pytest.raises(DataError, match="no images to evaluate"):
        evaluate(model, empty, tiny_digits.val_y[:0], tiny_digits.mean, tiny_digits.std)


def test_zero_epochs_is_refused(tiny_digits: DataSplits) -> None:
    with pytest.raises(EdgepruneError, match="epochs=0"):
        train(small_net(), tiny_digits, epochs=0, progress=False)


def test_fractional_epochs_stop_part_way_through(tiny_digits: DataSplits) -> None:
    n_batches = tiny_digits.train_x.shape[0] // 32
    seen: list[int] = []

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return F.cross_entropy(model(x), y)

    run_epochs(small_net(), tiny_digits, loss, epochs=0.5, lr=0.01, batch_size=32, progress=False)
    assert len(seen) == round(0.5 * n_batches)
    seen.clear()
    run_epochs(small_net(), tiny_digits, loss, epochs=1.5, lr=0.01, batch_size=32, progress=False)
    assert len(seen) == round(1.5 * n_batches)


def test_progress_into_a_file_prints_a_line_per_epoch(tiny_digits: DataSplits, capsys) -> None:
    train(small_net(), tiny_digits, epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "training: epoch 1/2 loss" in err and "training: epoch 2/2 loss" in err


def _train_cmd(out: Path, epochs: int, *extra: str) -> list[str]:
    import sys

    return [
        sys.executable, "-m", "edgeprune.cli", "train", "--model",
        "edgeprune.models.testing:TinyConvNet", "--data", "digits", "--epochs", str(epochs),
        "--lr", "0.05", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """kill -9 after the first epoch's checkpoint, --resume: the weights equal a run that
    was never interrupted, bit for bit, and the resumed run says where it started."""
    import os
    import signal
    import subprocess
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    epochs = 6
    whole = subprocess.run(_train_cmd(tmp_path / "whole.pt", epochs), env=env,
                           capture_output=True, text=True, timeout=500)  # fmt: skip
    assert whole.returncode == 0, whole.stderr[-2000:]

    out = tmp_path / "cut.pt"
    ckpt = tmp_path / "cut.pt.ckpt"
    proc = subprocess.Popen(_train_cmd(out, epochs), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while not ckpt.exists() and proc.poll() is None:  # ends: the process writes or exits
            time.sleep(0.02)
        assert proc.poll() is None, "training ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not out.exists()  # killed before the end: nothing but the checkpoint
    done = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= done < epochs

    resumed = subprocess.run(_train_cmd(out, epochs, "--resume"), env=env,
                             capture_output=True, text=True, timeout=500)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming at epoch {done + 1}/{epochs}" in resumed.stderr
    a, b = torch.load(tmp_path / "whole.pt"), torch.load(out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_other_settings_is_refused(tiny_digits: DataSplits, tmp_path: Path) -> None:
    ckpt = tmp_path / "run.ckpt"
    run_epochs(
        small_net(),
        tiny_digits,
        cross_entropy_loss,
        epochs=1,
        lr=0.05,
        checkpoint=ckpt,
        progress=False,
    )
    with pytest.raises(EdgepruneError, match=r"other settings \(lr: 0.05 then, 0.1 now\)"):
        run_epochs(
            small_net(), tiny_digits, cross_entropy_loss, epochs=1, lr=0.1, checkpoint=ckpt,
            resume=True, progress=False,
        )  # fmt: skip
    with pytest.raises(EdgepruneError, match="no training checkpoint"):
        run_epochs(
            small_net(), tiny_digits, cross_entropy_loss, epochs=1, lr=0.1,
            checkpoint=tmp_path / "none", resume=True, progress=False,
        )  # fmt: skip
