"""Every source layout loads to the same DataSplits shape; the tensor cache is reused."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
import torch

import edgeprune.data.imagefolder as imagefolder_mod
from edgeprune.data import DataSplits, extract_archive, load_data
from tests.data.conftest import CLASSES, class_color, make_cifar10, make_cifar100, make_npz


def _check_splits(d: DataSplits, size: int) -> None:
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)):
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert x.shape[1:] == (3, size, size) and x.shape[0] == y.shape[0]
        if y.numel():
            assert int(y.min()) >= 0 and int(y.max()) < d.num_classes
    assert d.input_shape == (3, size, size)
    assert all(s > 0 for s in d.std) and all(0 <= m <= 1 for m in d.mean)


def test_digits_is_the_default() -> None:
    d = load_data()
    _check_splits(d, 32)
    assert d.name == "digits" and d.num_classes == 10 and not d.hflip_ok
    assert d.train_x.shape[0] + d.val_x.shape[0] + d.test_x.shape[0] == 1797
    assert 340 <= d.test_x.shape[0] <= 380  # its own 20% test split
    assert int(d.train_x.max()) == 255  # 0..16 scaled to the full uint8 range


def test_imagefolder_with_test_split(imagefolder: Path, cache: Path) -> None:
    d = load_data(imagefolder, image_size=16, val_fraction=0.2, cache_dir=cache)
    _check_splits(d, 16)
    assert d.classes == CLASSES and d.hflip_ok and d.name == "pets"
    assert (d.train_x.shape[0], d.val_x.shape[0], d.test_x.shape[0]) == (15, 3, 6)
    # Flat-colour images keep their colour through decode + resize: labels line up.
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)):
        pixel = x[:, :, 8, 8].to(torch.int64)
        colour = pixel[:, 0] != pixel[:, 2]
        assert torch.all((pixel[colour, 0] - (40 + 60 * y[colour])).abs() <= 3)
    # The grayscale PNGs (index 1 of each class) became 3 equal channels at their luma.
    grays = [img[:, 8, 8] for img in d.test_x if img[0, 8, 8] == img[2, 8, 8]]
    assert len(grays) == 3 and all(int(g.min()) == int(g.max()) for g in grays)
    r, g, b = class_color(0, 1)
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    assert any(abs(int(px[0]) - luma) <= 1 for px in grays)


def test_imagefolder_without_split_dirs(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for label, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(4):
            imagefolder_mod.Image.new("RGB", (32, 32), class_color(label, i)).save(
                root / name / f"{i}.png"
            )
    d = load_data(root, val_fraction=0.25, cache_dir=tmp_path / "c")
    assert d.classes == ("a", "b") and not d.has_test and d.test_x.shape == (0, 3, 32, 32)
    assert d.train_x.shape[0] == 6 and d.val_x.shape[0] == 2


def test_cifar10_batches(tmp_path: Path) -> None:
    src = make_cifar10(tmp_path / "cifar-10-batches-py")
    d = load_data(src, val_fraction=0.2, cache_dir=tmp_path / "c")
    _check_splits(d, 32)
    assert d.classes == ("airplane", "automobile", "bird", "cat")
    assert d.train_x.shape[0] + d.val_x.shape[0] == 60 and d.test_x.shape[0] == 8
    # Rows are planar RGB (1024 R, 1024 G, 1024 B): channel 0 of image 0 is the first 1024.
    import pickle

    with open(src / "test_batch", "rb") as fh:
        row0 = pickle.load(fh, encoding="bytes")[b"data"][0]
    assert torch.equal(d.test_x[0, 0].flatten(), torch.from_numpy(row0[:1024].copy()))


def test_cifar100_batches(tmp_path: Path) -> None:
    d = load_data(make_cifar100(tmp_path / "c100"), image_size=24, cache_dir=tmp_path / "c")
    _check_splits(d, 24)
    assert d.classes == ("apple", "aquarium_fish", "baby")
    assert d.train_x.shape[0] + d.val_x.shape[0] == 30 and d.test_x.shape[0] == 9


def test_npz_arrays(tmp_path: Path) -> None:
    d = load_data(make_npz(tmp_path / "arr.npz"), image_size=16, cache_dir=tmp_path / "c")
    _check_splits(d, 16)
    assert d.classes == ("c0", "c1", "c2", "c3") and d.test_x.shape[0] == 8
    # Pixel (0, 0, 0) holds the image index and y = index % 4: the pairing survived.
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y)):
        assert torch.equal(x[:, 0, 0, 0].to(torch.int64) % 4, y)


def test_npz_grayscale_without_test_or_classes(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "gray.npz"
    np.savez(path, x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10) % 2)
    d = load_data(path, cache_dir=tmp_path / "c", val_fraction=0.2)
    assert d.classes == ("0", "1") and not d.has_test and d.input_shape == (3, 32, 32)


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = imagefolder_mod.decode_image

    def counting(path: str, image_size: int):  # type: ignore[no-untyped-def]
        calls.append(path)
        return real(path, image_size)

    monkeypatch.setattr(imagefolder_mod, "decode_image", counting)
    return calls


def test_second_load_reads_the_cache(
    imagefolder: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_decodes(monkeypatch)
    first = load_data(imagefolder, cache_dir=cache)
    assert len(calls) == 24  # 3 classes x (6 train + 2 test)
    cached = list((cache / "datasets").glob("pets-*.pt"))
    assert len(cached) == 1
    second = load_data(imagefolder, cache_dir=cache)
    assert len(calls) == 24  # no decoding the second time
    assert torch.equal(first.train_x, second.train_x) and first.mean == second.mean
    # A different image size is a different cache entry.
    load_data(imagefolder, image_size=16, cache_dir=cache)
    assert len(calls) == 48 and len(list((cache / "datasets").glob("pets-*.pt"))) == 2


def test_touching_a_file_invalidates_the_cache(
    imagefolder: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_decodes(monkeypatch)
    load_data(imagefolder, cache_dir=cache)
    target = imagefolder / "train" / "cat" / "000.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_data(imagefolder, cache_dir=cache)
    assert len(calls) == 48


def test_env_var_sets_the_cache_dir(
    imagefolder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEPRUNE_CACHE", str(tmp_path / "envcache"))
    load_data(imagefolder)
    assert list((tmp_path / "envcache" / "datasets").glob("pets-*.pt"))


def test_damaged_cache_file_is_rebuilt(imagefolder: Path, cache: Path) -> None:
    load_data(imagefolder, cache_dir=cache)
    (entry,) = (cache / "datasets").glob("*.pt")
    entry.write_bytes(b"not a torch file")
    d = load_data(imagefolder, cache_dir=cache)
    assert d.train_x.shape[0] + d.val_x.shape[0] == 18


def _tar(src: Path, tar_path: Path) -> Path:
    with tarfile.open(tar_path, "w:gz") as tar:
        for child in sorted(src.iterdir()):
            tar.add(child, arcname=child.name)
    return tar_path


def test_tar_gz_is_extracted_once_and_loaded(imagefolder: Path, tmp_path: Path) -> None:
    archive = _tar(imagefolder, tmp_path / "pets.tar.gz")
    root = extract_archive(archive, tmp_path / "c")
    assert (root / "train" / "cat").is_dir()
    marker = root / ".edgeprune-extracted"
    assert marker.is_file()
    before = marker.stat().st_mtime_ns
    assert extract_archive(archive, tmp_path / "c") == root
    assert marker.stat().st_mtime_ns == before  # not extracted again
    d = load_data(archive, cache_dir=tmp_path / "c")
    assert d.name == "pets" and d.classes == CLASSES and d.test_x.shape[0] == 6


def test_archive_with_a_single_top_folder_returns_that_folder(tmp_path: Path) -> None:
    src = make_cifar10(tmp_path / "src" / "cifar-10-batches-py")
    archive = _tar(tmp_path / "src", tmp_path / "cifar-10-python.tar.gz")
    root = extract_archive(archive, tmp_path / "c")
    assert root.name == "cifar-10-batches-py" and (root / "data_batch_1").is_file()
    assert load_data(archive, cache_dir=tmp_path / "c").test_x.shape[0] == 8
    assert src.is_dir()


def test_digits_read_directly_match_sklearn() -> None:
    from sklearn.datasets import load_digits

    from edgeprune.data.sources import _digits_arrays

    images, labels = _digits_arrays()
    bunch = load_digits()
    assert (images == bunch.images).all() and (labels == bunch.target).all()


def test_a_second_extraction_keeps_the_copy_another_process_finished(
    imagefolder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edgeprune.data.cache as cache

    archive = _tar(imagefolder, tmp_path / "pets.tar.gz")
    first = extract_archive(archive, tmp_path / "c")  # "the other process", finished
    (first / "sentinel").write_text("being read")
    marker = first / cache._EXTRACTED_MARKER
    real_write = cache.atomic_write_text
    marker.unlink()  # our process starts before the other one finished ...

    def write(path: Path, text: str) -> None:
        real_write(path, text)
        if path.name == cache._EXTRACTED_MARKER:  # ... and ends after it
            real_write(marker, "done\n")

    monkeypatch.setattr(cache, "atomic_write_text", write)
    assert extract_archive(archive, tmp_path / "c") == first
    assert (first / "sentinel").read_text() == "being read"  # not replaced under its reader
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # tmp removed
