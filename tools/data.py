"""Data sets for real training: fixed train/valid/test splits in memory, from several layouts.

`load_dataset(spec, root=..., split_seed=...)` returns a `Dataset`: float32 tensors standardised
with the training split's per-channel (per-feature for vectors) mean and std, int64 labels, the
per-sample `shape`, a `fingerprint` of the content and the split, and `split_info` for the record.
The search only ever sees `valid`; `test` is for the final report.

Specs and on-disk layouts (under `root`, default `./data`):

- `digits`: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes; no file, no download).
  The offline default.
- `cifar10`: `root/cifar-10-batches-py/` with the python pickles `data_batch_1..5` and
  `test_batch` (dicts with `data` uint8 (N, 3072) in CHW order and `labels`), the layout
  torchvision downloads. `cifar100`: `root/cifar-100-python/` with `train` and `test` (`data`,
  `fine_labels`). When the files are missing they are downloaded from the official URL into
  `root`; without network, a one-line DataError names the root and the files expected.
- `imagenet16-120`: NAS-Bench-201's down-sampled ImageNet, as its users have it:
  `root/ImageNet16/` (or `root/` itself) holding the pickles `train_data_batch_1` ..
  `train_data_batch_10` and `val_data`, each a dict with `data` uint8 (N, 768) in CHW order
  (3x16x16) and `labels`, 1-based over 1,000 classes. Only labels 1..120 are kept (shifted to
  0..119), as NB201 does. Never downloaded.
- `folder:PATH`: an ImageFolder tree, one sub-folder of images per class (names sorted give the
  labels), read with PIL as RGB; optionally split already into `train/`, `valid/`, `test/`
  sub-folders (each with the same class folders). Images of other sizes are resized to the most
  common size.
- `npz:PATH`: a NumPy `.npz` with `x` and `y`, or already split as `x_train`/`y_train`
  (+ optional `x_valid`/`y_valid`, `x_test`/`y_test`). `x` is (N, D) vectors, (N, H, W) grey
  images, or (N, C, H, W) / (N, H, W, C) images (channels last when the last axis is 1, 3 or 4
  and the second is not).

Splits: when the data has no given split, train/valid/test is 60/20/20, stratified by label,
from `split_seed` (for digits this is exactly the split used before recipes). When a test set is
given but no validation set (CIFAR, ImageNet16-120, folders or npz with train and test only),
`valid_fraction` (10%) of the training set is carved out as validation, stratified, from
`split_seed`. The split never depends on the training seed.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import pickle
import tarfile
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import ConfigError, DataError

if TYPE_CHECKING:
    from .builders import DataShape

log = logging.getLogger(__name__)

#: Official archives (the files torchvision downloads). Tests point these at unreachable URLs.
URLS: dict[str, str] = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}
#: The archives' published MD5 sums (torchvision checks the same): a corrupt or substituted
#: download is refused before it is unpacked.
MD5 = {"cifar10": "c58f30108f718f92721af3b95e74349a", "cifar100": "eb9058c3a382ffc7106e4002c42a8d85"}
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}
IMAGENET16_TRAIN = [f"train_data_batch_{i}" for i in range(1, 11)]
IMAGENET16_VAL = "val_data"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
VALID_FRACTION = 0.1
BUILT_IN = ("digits", "cifar10", "cifar100", "imagenet16-120")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A fixed train/valid/test split: float images (N, C, H, W) or vectors (N, D), int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    split_info: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> DataShape:
        from .builders import DataShape

        return DataShape(tuple(int(d) for d in self.x_train.shape[1:]), self.num_classes)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def is_image(self) -> bool:
        return self.x_train.dim() == 4

    @functools.cached_property
    def fingerprint(self) -> str:
        """A digest of the three splits' contents (so a different split or file gives another)."""
        h = hashlib.blake2b(digest_size=12)
        h.update(f"{self.num_classes}".encode())
        for t in (self.x_train, self.y_train, self.x_valid, self.y_valid, self.x_test, self.y_test):
            a = t.contiguous().numpy()
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.data)
        return h.hexdigest()

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint, "num_classes": self.num_classes,
                "shape": list(self.x_train.shape[1:]), **self.split_info}


# ---------------------------------------------------------------------------------------------
# splitting and standardising


def _split(y: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out), stratified by label when every class allows it."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        a, b = train_test_split(idx, test_size=test_size, stratify=y, random_state=seed)
    except ValueError:  # a class too small to stratify: split plainly, still from the seed
        a, b = train_test_split(idx, test_size=test_size, random_state=seed)
    return np.asarray(a), np.asarray(b)


def _to_float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32, copy=False)


def _finish(
    name: str, parts: dict[str, tuple[np.ndarray, np.ndarray]], num_classes: int | None, *,
    split_seed: int, source: str, how: str,
) -> Dataset:
    """Standardise by the training split and wrap as tensors."""
    x_train = _to_float(parts["train"][0])
    if x_train.ndim == 4:
        axes: tuple[int, ...] = (0, 2, 3)
        stats = [(float(x_train[:, c].mean()), float(x_train[:, c].std())) for c in range(x_train.shape[1])]
        mean = np.array([m for m, _ in stats], np.float32).reshape(1, -1, 1, 1)
        std = np.array([s for _, s in stats], np.float32).reshape(1, -1, 1, 1)
    else:
        axes = (0,)
        mean, std = x_train.mean(axis=axes, keepdims=True), x_train.std(axis=axes, keepdims=True)
    std = np.where(std > 0, std, 1.0).astype(np.float32)
    ys = [np.asarray(parts[k][1]).astype(np.int64) for k in ("train", "valid", "test")]
    n_classes = num_classes if num_classes is not None else int(max(int(y.max()) for y in ys if y.size)) + 1
    if any(y.size and (y.min() < 0 or y.max() >= n_classes) for y in ys):
        raise DataError(f"{source}: labels must be integers in 0..{n_classes - 1}")

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    xs = []
    for k in ("train", "valid", "test"):
        x = x_train if k == "train" else _to_float(parts[k][0])
        if len(x) == 0:
            raise DataError(f"{source}: the {k} split is empty; provide more samples")
        xs.append(t((x - mean) / std))
    info = {"source": source, "split_seed": split_seed, "split": how,
            "sizes": {k: len(y) for k, y in zip(("train", "valid", "test"), ys)},
            # what a user must do to real inputs: x / 255 (uint8 data only), then (x - mean) / std
            "normalisation": {"divide_by_255": parts["train"][0].dtype == np.uint8,
                              "mean": [round(float(v), 6) for v in mean.ravel()],
                              "std": [round(float(v), 6) for v in std.ravel()]}}
    return Dataset(name, xs[0], t(ys[0]), xs[1], t(ys[1]), xs[2], t(ys[2]), n_classes, info)


def _split_all(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[dict, str]:
    """60/20/20 stratified: the held-out 40% is split in half into valid and test."""
    train, rest = _split(y, 0.4, seed)
    valid, test = _split(y[rest], 0.5, seed)
    valid, test = rest[valid], rest[test]
    return {"train": (x[train], y[train]), "valid": (x[valid], y[valid]), "test": (x[test], y[test])}, "60/20/20 stratified"


def _carve_valid(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int,
                 fraction: float) -> tuple[dict, str]:
    train, valid = _split(y, fraction, seed)
    parts = {"train": (x[train], y[train]), "valid": (x[valid], y[valid]), "test": (x_test, y_test)}
    return parts, f"given test; valid = {fraction:.0%} of train, stratified"


# ---------------------------------------------------------------------------------------------
# layouts


def _digits(split_seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    parts, how = _split_all(x, y, split_seed)
    return _finish("digits", parts, 10, split_seed=split_seed, source="sklearn.datasets.load_digits", how=how)


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            raw = pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"{path} is not a readable python pickle ({exc})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path} does not hold a dict with 'data' and labels")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def _download(name: str, root: Path, expected: str) -> None:
    url = URLS[name]
    root.mkdir(parents=True, exist_ok=True)
    archive = root / url.rsplit("/", 1)[-1]
    log.info("downloading %s into %s", url, root)
    try:
        tmp = archive.with_suffix(".part")
        urllib.request.urlretrieve(url, tmp)
        digest = hashlib.md5(tmp.read_bytes(), usedforsecurity=False).hexdigest()
        if digest != MD5[name]:
            tmp.unlink()
            raise ValueError(f"the archive's MD5 is {digest}, not the published {MD5[name]}")
        tmp.replace(archive)
        with tarfile.open(archive) as tar:
            try:
                tar.extractall(root, filter="data")
            except TypeError:  # Python < 3.12 without extraction filters
                tar.extractall(root)
    except (OSError, tarfile.TarError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(
            f"{name} not found under {root} (expected {expected}) and the download from {url} failed "
            f"({reason}); put the files there or pass another data root"
        ) from None


def _cifar(name: str, root: Path, split_seed: int, download: bool, fraction: float) -> Dataset:
    folder, train_files, test_files, label_key = CIFAR_FILES[name]
    base = root / folder
    expected = f"{folder}/{{{','.join(train_files + test_files)}}}"
    if not all((base / f).is_file() for f in train_files + test_files):
        if not download:
            raise DataError(f"{name} not found under {root} (expected {expected}); put the files there")
        _download(name, root, expected)
        if not all((base / f).is_file() for f in train_files + test_files):
            raise DataError(f"{name}: the archive unpacked under {root} lacks {expected}")

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            d = _unpickle(base / f)
            if "data" not in d or label_key not in d:
                raise DataError(f"{base / f} lacks 'data' or {label_key!r}")
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[label_key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    x, y = read(train_files)
    x_test, y_test = read(test_files)
    parts, how = _carve_valid(x, y, x_test, y_test, split_seed, fraction)
    return _finish(name, parts, 10 if name == "cifar10" else 100, split_seed=split_seed, source=str(base), how=how)


def _imagenet16(root: Path, split_seed: int, fraction: float, classes: int = 120) -> Dataset:
    base = next((b for b in (root / "ImageNet16", root) if (b / IMAGENET16_VAL).is_file()), root / "ImageNet16")
    files = IMAGENET16_TRAIN + [IMAGENET16_VAL]
    missing = [f for f in files if not (base / f).is_file()]
    if missing:
        raise DataError(
            f"imagenet16-{classes} not found under {root} (expected ImageNet16/{{train_data_batch_1..10,val_data}}; "
            f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); it is never downloaded: "
            f"copy NAS-Bench-201's ImageNet16 folder there"
        )

    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in names:
            d = _unpickle(base / f)
            if "data" not in d or "labels" not in d:
                raise DataError(f"{base / f} lacks 'data' or 'labels'")
            x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 16, 16)
            y = np.asarray(d["labels"], dtype=np.int64)
            keep = (y >= 1) & (y <= classes)
            xs.append(x[keep])
            ys.append(y[keep] - 1)
        return np.concatenate(xs), np.concatenate(ys)

    x, y = read(IMAGENET16_TRAIN)
    x_test, y_test = read([IMAGENET16_VAL])
    parts, how = _carve_valid(x, y, x_test, y_test, split_seed, fraction)
    return _finish(f"imagenet16-{classes}", parts, classes, split_seed=split_seed, source=str(base), how=how)


def _read_class_folders(path: Path, classes: list[str] | None) -> tuple[list, np.ndarray, list[str]]:
    names = classes or sorted(p.name for p in path.iterdir() if p.is_dir())
    if not names:
        raise DataError(f"{path} has no class sub-folders (expected PATH/<class>/<image files>)")
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, cls in enumerate(names):
        folder = path / cls
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    images.append(im.convert("RGB"))
            except (OSError, UnidentifiedImageError) as exc:
                raise DataError(f"{f} is not a readable image ({exc})") from None
            labels.append(label)
    return images, np.asarray(labels, dtype=np.int64), names


def _stack(images: list) -> np.ndarray:
    size = Counter(im.size for im in images).most_common(1)[0][0]
    arrays = [np.asarray(im if im.size == size else im.resize(size)) for im in images]
    return np.stack(arrays).transpose(0, 3, 1, 2).copy()  # (N, 3, H, W) uint8


def _folder(path: Path, split_seed: int, fraction: float) -> Dataset:
    if not path.is_dir():
        raise DataError(f"folder data set {path} not found (expected PATH/<class>/<images> or PATH/train/<class>/...)")
    name = f"folder:{path.name}"
    if (path / "train").is_dir():
        imgs, y, classes = _read_class_folders(path / "train", None)
        given = {"train": (imgs, y)}
        for split in ("valid", "test"):
            if (path / split).is_dir():
                given[split] = _read_class_folders(path / split, classes)[:2]
        if not imgs:
            raise DataError(f"{path / 'train'} holds no images")
        sized = Counter(im.size for part in given.values() for im in part[0]).most_common(1)[0][0]
        arrays = {k: (_stack([im.resize(sized) if im.size != sized else im for im in v[0]]) if v[0] else
                      np.zeros((0, 3, sized[1], sized[0]), np.uint8), v[1]) for k, v in given.items()}
        return _from_given(name, arrays, len(classes), split_seed, fraction, source=str(path))
    imgs, y, classes = _read_class_folders(path, None)
    if not imgs:
        raise DataError(f"{path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    parts, how = _split_all(_stack(imgs), y, split_seed)
    return _finish(name, parts, len(classes), split_seed=split_seed, source=str(path), how=how)


def _from_given(name: str, given: dict, num_classes: int | None, seed: int, fraction: float, *, source: str) -> Dataset:
    if "valid" in given and "test" in given:
        return _finish(name, given, num_classes, split_seed=seed, source=source, how="given train/valid/test")
    if "test" in given:
        parts, how = _carve_valid(*given["train"], *given["test"], seed, fraction)
    elif "valid" in given:  # given valid but no test: carve the test set from train
        train, test = _split(given["train"][1], fraction, seed)
        x, y = given["train"]
        parts = {"train": (x[train], y[train]), "valid": given["valid"], "test": (x[test], y[test])}
        how = f"given valid; test = {fraction:.0%} of train, stratified"
    else:
        parts, how = _split_all(*given["train"], seed)
    return _finish(name, parts, num_classes, split_seed=seed, source=source, how=how)


def _images_layout(x: np.ndarray, source: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return x.transpose(0, 3, 1, 2)
    if x.ndim in (2, 4):
        return x
    raise DataError(f"{source}: x must be (N, D), (N, H, W) or (N, C, H, W) / (N, H, W, C); got shape {x.shape}")


def _npz(path: Path, split_seed: int, fraction: float) -> Dataset:
    if not path.is_file():
        raise DataError(f"npz data set {path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable .npz ({exc})") from None
    given = {}
    if "x_train" in arrays:
        for split in ("train", "valid", "test"):
            if f"x_{split}" in arrays:
                if f"y_{split}" not in arrays:
                    raise DataError(f"{path} has x_{split} but no y_{split}")
                given[split] = (_images_layout(arrays[f"x_{split}"], str(path)), arrays[f"y_{split}"])
    elif "x" in arrays and "y" in arrays:
        given["train"] = (_images_layout(arrays["x"], str(path)), arrays["y"])
    else:
        raise DataError(f"{path} needs arrays x and y (or x_train, y_train ...); it has {', '.join(arrays) or 'none'}")
    for split, (x, y) in given.items():
        if len(x) != len(y):
            raise DataError(f"{path}: x_{split} has {len(x)} samples but y_{split} has {len(y)}")
        if not np.issubdtype(np.asarray(y).dtype, np.integer):
            raise DataError(f"{path}: labels must be integers, got {np.asarray(y).dtype}")
    return _from_given(f"npz:{path.stem}", given, None, split_seed, fraction, source=str(path))


@functools.lru_cache(maxsize=2)
def _load_cached(spec: str, root: str, split_seed: int, download: bool, fraction: float) -> Dataset:
    r = Path(root)
    if spec == "digits":
        return _digits(split_seed)
    if spec in ("cifar10", "cifar100"):
        return _cifar(spec, r, split_seed, download, fraction)
    if spec == "imagenet16-120":
        return _imagenet16(r, split_seed, fraction)
    kind, _, path = spec.partition(":")
    if kind == "folder" and path:
        return _folder(Path(path).expanduser(), split_seed, fraction)
    if kind == "npz" and path:
        return _npz(Path(path).expanduser(), split_seed, fraction)
    raise ConfigError(f"unknown data set {spec!r}: use {', '.join(BUILT_IN)}, folder:PATH or npz:PATH")


def load_dataset(
    spec: str | Dataset, *, root: str | Path | None = None, split_seed: int = 0, download: bool = True,
    valid_fraction: float = VALID_FRACTION,
) -> Dataset:
    """The data set named by `spec` (see the module docstring), split by `split_seed`.

    The last two loaded are cached in memory (keyed by spec, root and split), so a second
    executor on the same data does not read it again.
    """
    if isinstance(spec, Dataset):
        return spec
    if not 0 < valid_fraction < 1:
        raise ConfigError(f"valid_fraction must be between 0 and 1, got {valid_fraction}")
    spec = spec.strip()
    key = spec.lower() if spec.lower() in BUILT_IN else spec
    return _load_cached(key, str(Path(root).expanduser() if root else Path("data")), int(split_seed), download,
                        float(valid_fraction))


def check_dataset(spec: str) -> str:
    """`spec` if it names a data set archlore knows how to load (no file is read), else ConfigError."""
    kind, _, path = spec.partition(":")
    if spec.lower() in BUILT_IN or (kind in ("folder", "npz") and path):
        return spec
    raise ConfigError(f"unknown data set {spec!r}: use {', '.join(BUILT_IN)}, folder:PATH or npz:PATH")
