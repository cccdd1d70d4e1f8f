"""Bad data input: each case is a DataError that names the path and the fix."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edgeprune.data import extract_archive, load_data
from edgeprune.errors import DataError
from tests.data.conftest import make_cifar10, make_imagefolder


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist.*digits.*ImageFolder"):
        load_data(tmp_path / "nope", cache_dir=tmp_path)


def test_directory_in_no_layout_lists_the_layouts(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match=r"junk is in no supported data layout.*CIFAR.*\.npz"):
        load_data(tmp_path / "junk", cache_dir=tmp_path)


def test_unknown_file_type(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="no supported data layout"):
        load_data(tmp_path / "data.csv", cache_dir=tmp_path)


def test_empty_class_folders_are_named(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "pets")
    (root / "train" / "emu").mkdir()
    (root / "train" / "yak").mkdir()
    (root / "train" / "yak" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"empty class folder.*train/emu.*train/yak"):
        load_data(root, cache_dir=tmp_path / "c")


def test_test_class_missing_from_train(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "pets")
    (root / "test" / "cat").rename(root / "test" / "lynx")
    with pytest.raises(DataError, match=r"test/lynx is a test class with no training folder"):
        load_data(root, cache_dir=tmp_path / "c")


def test_corrupt_image_is_skipped_with_one_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_imagefolder(tmp_path / "pets")
    (root / "train" / "dog" / "bad.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    (root / "train" / "dog" / "000.png").write_bytes(b"truncated")
    d = load_data(root, val_fraction=0.2, cache_dir=tmp_path / "c")
    assert d.skipped_images == 2
    assert d.train_x.shape[0] + d.val_x.shape[0] == 3 * 6 + 1 - 2
    err = capsys.readouterr().err
    assert err.count("skipped 2 unreadable image file(s)") == 1


def test_class_with_only_unreadable_images_fails(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "pets")
    for f in (root / "train" / "fox").iterdir():
        f.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"every image of class\(es\) fox .*\(train\) is unread"):
        load_data(root, cache_dir=tmp_path / "c")


def test_npz_missing_y(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"a\.npz lacks y.*np\.savez"):
        load_data(tmp_path / "a.npz", cache_dir=tmp_path)


def test_npz_wrong_dtype(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 8, 8, 3), np.float32), y=np.arange(4) % 2)
    with pytest.raises(DataError, match=r"'x' has dtype float32, expected uint8"):
        load_data(tmp_path / "a.npz", cache_dir=tmp_path)


def test_npz_channels_first_is_rejected(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 3, 8, 8), np.uint8), y=np.arange(4) % 2)
    with pytest.raises(DataError, match=r"shape \(4, 3, 8, 8\), expected \(N, H, W, 3\)"):
        load_data(tmp_path / "a.npz", cache_dir=tmp_path)


def test_npz_label_count_mismatch(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 8, 8, 3), np.uint8), y=np.arange(3))
    with pytest.raises(DataError, match=r"expected 4 integer class labels"):
        load_data(tmp_path / "a.npz", cache_dir=tmp_path)


def test_npz_labels_outside_classes(tmp_path: Path) -> None:
    x = np.zeros((4, 8, 8, 3), np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.array([0, 1, 2, 5]), classes=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"labels span 0\.\.5 but there are 2 classes"):
        load_data(tmp_path / "a.npz", cache_dir=tmp_path)


def test_single_class(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 8, 8, 3), np.uint8), y=np.zeros(4, np.int64))
    with pytest.raises(DataError, match=r"1 class.*at least 2"):
        load_data(tmp_path / "a.npz", cache_dir=tmp_path)


def test_class_too_small_for_a_validation_split(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "pets", per_class=3)
    for f in sorted((root / "train" / "dog").iterdir())[1:]:
        f.unlink()
    with pytest.raises(DataError, match=r"class 'dog' has 1 training image.*no training samples"):
        load_data(root, cache_dir=tmp_path / "c")


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_val_fraction_out_of_range(fraction: float) -> None:
    with pytest.raises(DataError, match="val_fraction"):
        load_data("digits", val_fraction=fraction)


def test_val_fraction_taking_every_image(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "pets", per_class=4)
    with pytest.raises(DataError, match="no training samples"):
        load_data(root, val_fraction=0.9, cache_dir=tmp_path / "c")


def test_cifar_pickle_with_foreign_globals_is_refused(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path / "cifar")

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("this must never run",))

    with open(root / "data_batch_2", "wb") as fh:
        pickle.dump({b"data": Payload(), b"labels": []}, fh)
    with pytest.raises(DataError, match=r"data_batch_2 is not a CIFAR python batch.*print"):
        load_data(root, cache_dir=tmp_path / "c")


def test_cifar_batch_with_wrong_shape(tmp_path: Path) -> None:
    root = make_cifar10(tmp_path / "cifar")
    with open(root / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, fh)
    with pytest.raises(DataError, match=r"test_batch.*expected uint8 \(N, 3072\)"):
        load_data(root, cache_dir=tmp_path / "c")


def test_archive_escaping_its_root_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataError, match="escapes the archive"):
        extract_archive(archive, tmp_path / "c")
    assert not (tmp_path / "c" / "outside.txt").exists()


def test_archive_that_is_not_a_tar(tmp_path: Path) -> None:
    (tmp_path / "fake.tar.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"cannot extract .*fake\.tar\.gz"):
        load_data(tmp_path / "fake.tar.gz", cache_dir=tmp_path / "c")


def test_limit_must_be_positive() -> None:
    with pytest.raises(DataError, match="limit=0"):
        load_data("digits", limit=0)
