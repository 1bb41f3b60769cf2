"""Data sets: every on-disk layout from files generated here (never a download)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from archlore.tools import data as D
from archlore.tools.data import load_dataset
from archlore.tools.errors import ConfigError, DataError


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(obj, f)


def _images(rng: np.random.Generator, n: int, side: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3 * side * side), dtype=np.uint8)


def _check(ds: D.Dataset, sizes: tuple[int, int, int], shape: tuple[int, ...], classes: int) -> None:
    assert (len(ds.y_train), len(ds.y_valid), len(ds.y_test)) == sizes
    assert tuple(ds.x_train.shape[1:]) == shape and ds.x_valid.dtype == torch.float32
    assert ds.y_train.dtype == torch.int64 and ds.num_classes == classes
    assert int(max(ds.y_train.max(), ds.y_valid.max(), ds.y_test.max())) < classes
    # standardised by the training split, per channel
    dims = (0, 2, 3) if ds.x_train.dim() == 4 else (0,)
    assert torch.allclose(ds.x_train.mean(dim=dims), torch.zeros(1), atol=1e-4)
    assert ds.split_info["sizes"] == dict(zip(("train", "valid", "test"), sizes))


def test_digits_is_the_old_fixed_split() -> None:
    ds = load_dataset("digits")
    _check(ds, (1078, 359, 360), (1, 8, 8), 10)
    assert load_dataset("digits") is ds  # cached
    other = load_dataset("digits", split_seed=1)
    assert other.fingerprint != ds.fingerprint and len(other.y_valid) == 359
    assert ds.split_info["split_seed"] == 0 and ds.shape.input == (1, 8, 8) and ds.shape.num_classes == 10


def test_cifar10_pickles(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = tmp_path / "cifar-10-batches-py"
    for i in range(1, 6):  # 5 batches of 8 images, labels cycling over 10 classes (bytes keys, as the real files)
        _pickle(base / f"data_batch_{i}", {b"data": _images(rng, 8, 32), b"labels": [(i * 8 + j) % 10 for j in range(8)]})
    _pickle(base / "test_batch", {b"data": _images(rng, 10, 32), b"labels": list(range(10))})
    ds = load_dataset("cifar10", root=tmp_path, split_seed=3)
    _check(ds, (36, 4, 10), (3, 32, 32), 10)
    assert ds.split_info["source"] == str(base) and "given test" in ds.split_info["split"]
    assert load_dataset("CIFAR10", root=tmp_path, split_seed=3).fingerprint == ds.fingerprint
    assert load_dataset("cifar10", root=tmp_path, split_seed=4).fingerprint != ds.fingerprint


def test_cifar100_pickles(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = tmp_path / "cifar-100-python"
    _pickle(base / "train", {"data": _images(rng, 30, 32), "fine_labels": [j % 100 for j in range(30)]})
    _pickle(base / "test", {"data": _images(rng, 6, 32), "fine_labels": [99] * 6})
    ds = load_dataset("cifar100", root=tmp_path)
    _check(ds, (27, 3, 6), (3, 32, 32), 100)


def test_a_download_is_checked_then_unpacked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real download path, served from a local file: the archive's MD5 is checked before it
    is unpacked, and a mismatch leaves nothing unpacked."""
    import hashlib
    import tarfile

    rng = np.random.default_rng(2)
    made = tmp_path / "made"
    _pickle(made / "cifar-100-python" / "train", {"data": _images(rng, 30, 32), "fine_labels": [j % 100 for j in range(30)]})
    _pickle(made / "cifar-100-python" / "test", {"data": _images(rng, 6, 32), "fine_labels": [7] * 6})
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(made / "cifar-100-python", arcname="cifar-100-python")
    monkeypatch.setitem(D.URLS, "cifar100", archive.as_uri())
    monkeypatch.setitem(D.MD5, "cifar100", "0" * 32)
    bad = tmp_path / "bad"
    with pytest.raises(DataError, match="MD5"):
        load_dataset("cifar100", root=bad)
    assert not (bad / "cifar-100-python").exists() and not list(bad.glob("*.part"))
    monkeypatch.setitem(D.MD5, "cifar100", hashlib.md5(archive.read_bytes()).hexdigest())
    _check(load_dataset("cifar100", root=tmp_path / "good"), (27, 3, 6), (3, 32, 32), 100)


def test_missing_cifar_without_network_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(D.URLS, "cifar10", "http://127.0.0.1:9/cifar-10-python.tar.gz")  # nothing listens there
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", root=root)
    msg = str(info.value)
    assert "\n" not in msg and str(root) in msg and "cifar-10-batches-py/{data_batch_1" in msg and "test_batch" in msg
    assert "download from http://127.0.0.1:9/" in msg
    with pytest.raises(DataError, match=r"\(expected cifar-100-python/\{train,test\}\); put the files there"):
        load_dataset("cifar100", root=root, download=False)


def test_imagenet16_keeps_120_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    base = tmp_path / "ImageNet16"
    for i in range(1, 11):  # labels are 1-based over 1000 classes; only 1..120 are kept
        _pickle(base / f"train_data_batch_{i}", {"data": _images(rng, 6, 16), "labels": [1, 2, 120, 121, 500, 1000]})
    _pickle(base / "val_data", {"data": _images(rng, 4, 16), "labels": [1, 60, 120, 999]})
    ds = load_dataset("imagenet16-120", root=tmp_path)
    _check(ds, (27, 3, 3), (3, 16, 16), 120)
    assert set(ds.y_test.tolist()) == {0, 59, 119}
    (base / "train_data_batch_7").unlink()
    with pytest.raises(DataError, match="missing train_data_batch_7.*never downloaded"):
        D._imagenet16(tmp_path, 0, 0.1)


def _png_tree(root: Path, per_class: int, rng: np.random.Generator, size: int = 12) -> None:
    from PIL import Image

    for cls in ("cat", "dog", "emu"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")


def test_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    _png_tree(tmp_path / "pets", 10, rng)
    from PIL import Image

    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "pets" / "emu" / "grey-big.png")  # resized, RGB
    (tmp_path / "pets" / "README.txt").write_text("not a class")
    ds = load_dataset(f"folder:{tmp_path / 'pets'}")
    _check(ds, (18, 6, 7), (3, 12, 12), 3)
    assert ds.name == "folder:pets"


def test_image_folder_with_given_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    _png_tree(tmp_path / "given" / "train", 8, rng)
    _png_tree(tmp_path / "given" / "test", 2, rng)
    ds = load_dataset(f"folder:{tmp_path / 'given'}")
    _check(ds, (21, 3, 6), (3, 12, 12), 3)
    _png_tree(tmp_path / "given" / "valid", 1, rng)
    ds = load_dataset(f"folder:{tmp_path / 'given'}", split_seed=1)
    _check(ds, (24, 3, 6), (3, 12, 12), 3)
    assert ds.split_info["split"] == "given train/valid/test"


def test_npz_unsplit_and_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 7)).astype(np.float32)
    y = np.arange(40) % 4
    np.savez(tmp_path / "vec.npz", x=x, y=y)
    ds = load_dataset(f"npz:{tmp_path / 'vec.npz'}")
    _check(ds, (24, 8, 8), (7,), 4)
    imgs = rng.integers(0, 256, size=(30, 6, 6, 3), dtype=np.uint8)  # channels last
    np.savez(tmp_path / "img.npz", x_train=imgs[:20], y_train=np.arange(20) % 2, x_test=imgs[20:], y_test=np.arange(10) % 2)
    ds = load_dataset(f"npz:{tmp_path / 'img.npz'}")
    _check(ds, (18, 2, 10), (3, 6, 6), 2)
    np.savez(tmp_path / "bad.npz", a=x)
    with pytest.raises(DataError, match="needs arrays x and y"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")
    np.savez(tmp_path / "neg.npz", x=x, y=y - 1)
    with pytest.raises(DataError, match="labels must be integers in 0"):
        load_dataset(f"npz:{tmp_path / 'neg.npz'}")


def test_unknown_and_missing_specs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown data set 'mnist': use digits, cifar10"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="folder data set .* not found"):
        load_dataset(f"folder:{tmp_path / 'none'}")
    with pytest.raises(DataError, match="npz data set .* not found"):
        load_dataset(f"npz:{tmp_path / 'none.npz'}")
    assert D.check_dataset("npz:x.npz") == "npz:x.npz"
