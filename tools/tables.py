"""Tabular benchmarks: every architecture's metrics, loaded once and shared.

A `Table` holds, per task, a validation array (what a search may see) and optionally a test
array (for reporting only), both indexed by `space.index(arch)`, with NaN where a cell is
missing. Loaders read the NAS-Bench-201 CSV, the LAPT/GENIUS JSON files, the TransNAS-Bench-101
micro CSV and a user CSV. Nothing here downloads anything.
"""

from __future__ import annotations

import csv
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError, SpaceError
from .spaces import NB201Space, SearchSpace, TNB101Space, get_space

NB201_TASKS = {"cifar10": "c10", "cifar100": "c100", "imagenet16-120": "in16"}
NB201_LAPT_FILES = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16-120": "imagenet"}
TNB101_TASKS = {
    "class_scene": "class_scene_valid_top1",
    "class_object": "class_object_valid_top1",
    "jigsaw": "jigsaw_valid_top1",
    "room_layout": "room_layout_valid_neg_loss",
    "segmentsemantic": "segmentsemantic_valid_acc",
    "normal": "normal_valid_ssim",
    "autoencoder": "autoencoder_valid_ssim",
}
TASK_DESCRIPTIONS = {
    "cifar10": "image classification, CIFAR-10, 10 classes, 32x32 natural images",
    "cifar100": "image classification, CIFAR-100, 100 fine-grained classes, 32x32 natural images",
    "imagenet16-120": "image classification, ImageNet16-120, 120 classes, 16x16 downsampled images",
    "class_scene": "scene classification on Taskonomy indoor images (365 scene classes), top-1 accuracy",
    "class_object": "object classification on Taskonomy indoor images (100 classes), top-1 accuracy",
    "jigsaw": "self-supervised jigsaw puzzle: classify the permutation of image tiles",
    "room_layout": "room layout regression on Taskonomy indoor images, negative loss",
    "segmentsemantic": "semantic segmentation of Taskonomy indoor images, pixel accuracy",
    "normal": "surface normal estimation (pixel-level regression), SSIM",
    "autoencoder": "image autoencoding (pixel-level reconstruction), SSIM",
    "digits": "image classification, scikit-learn digits, 10 classes, 8x8 grey images",
}


@dataclass
class Table:
    """All known metrics of one space: validation (searchable) and test (reporting only)."""

    space: SearchSpace
    source: str
    valid: dict[str, np.ndarray]
    test: dict[str, np.ndarray] = field(default_factory=dict)
    cost: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.valid)

    def check_task(self, task: str) -> str:
        if task not in self.valid:
            raise DataError(f"unknown task {task!r} for {self.source}: use one of {', '.join(self.valid)}")
        return task

    def ranked(self, task: str) -> np.ndarray:
        """Indices of known cells, best validation first."""
        v = self.valid[self.check_task(task)]
        known = np.flatnonzero(~np.isnan(v))
        return known[np.argsort(-v[known], kind="stable")]

    def threshold(self, task: str, top_k: int) -> float:
        """The k-th best validation value (e.g. k=16 is NB201's top-0.1%)."""
        return float(self.valid[task][self.ranked(task)[top_k - 1]])

    def percentile(self, task: str, value: float) -> float:
        """100 x the fraction of known cells with a validation value <= `value` (100 = best)."""
        v = self.valid[task]
        v = v[~np.isnan(v)]
        return 100.0 * float(np.mean(v <= value))


def default_data_dir() -> Path | None:
    """`$ARCHLORE_DATA`, else `../shared/data` (from the working directory) when it exists."""
    env = os.environ.get("ARCHLORE_DATA")
    if env:
        return Path(env)
    for candidate in (Path.cwd() / "../shared/data", Path(__file__).resolve().parents[1] / "../shared/data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def resolve_data_dir(data: str | Path | None) -> Path:
    path = Path(data) if data else default_data_dir()
    if path is None:
        raise DataError(
            "no benchmark data directory: pass --data DIR or set ARCHLORE_DATA "
            "(it holds nb201/ and transnas101/)"
        )
    if not path.is_dir():
        raise DataError(f"data directory {path} does not exist: pass --data DIR or set ARCHLORE_DATA")
    return path.resolve()


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{what} not found at {path}: pass --data DIR pointing at the benchmark data")
    return path


def _read_csv(path: Path, needed: list[str]) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in needed if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path} lacks the column(s) {', '.join(missing)}: check the file format")
        return list(reader)


def _nan_array(n: int) -> np.ndarray:
    return np.full(n, np.nan, dtype=np.float64)


@functools.lru_cache(maxsize=8)
def load_nb201(data_dir: str | Path | None = None) -> Table:
    """All 15,625 NB201 cells for CIFAR-10, CIFAR-100 and ImageNet16-120 (200-epoch)."""
    path = _require(resolve_data_dir(data_dir) / "nb201" / "nb201_all.csv", "NAS-Bench-201 table")
    space = NB201Space()
    cols = ["arch_str"] + [f"{p}_{s}" for p in NB201_TASKS.values() for s in ("valid", "test")]
    rows = _read_csv(path, cols)
    n = space.size()
    valid = {t: _nan_array(n) for t in NB201_TASKS}
    test = {t: _nan_array(n) for t in NB201_TASKS}
    cost = {"params_mb": _nan_array(n), "flops_m": _nan_array(n)}
    for row in rows:
        i = space.index(space.from_string(row["arch_str"]))
        for t, p in NB201_TASKS.items():
            valid[t][i] = float(row[f"{p}_valid"])
            test[t][i] = float(row[f"{p}_test"])
        if row.get("params_mb_c10"):
            cost["params_mb"][i] = float(row["params_mb_c10"])
            cost["flops_m"][i] = float(row["flops_m_c10"])
    return Table(space, f"NAS-Bench-201 ({path})", valid, test, cost)


@functools.lru_cache(maxsize=8)
def load_lapt_json(data_dir: str | Path | None = None) -> Table:
    """The LAPT/GENIUS lookup files `nasbench201_{cifar10,cifar100,imagenet}.json`."""
    root = resolve_data_dir(data_dir)
    folder = root / "nb201" / "lapt_json" if (root / "nb201" / "lapt_json").is_dir() else root
    space = NB201Space()
    n = space.size()
    valid, test = {}, {}
    for task, stem in NB201_LAPT_FILES.items():
        path = _require(folder / f"nasbench201_{stem}.json", f"LAPT JSON for {task}")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        v, te = _nan_array(n), _nan_array(n)
        for arch_str, rec in raw.items():
            try:
                i = space.index(space.from_string(arch_str))
                v[i], te[i] = float(rec["val_acc_200"]), float(rec["test_acc_200"])
            except (KeyError, TypeError):
                raise DataError(f"{path}: entry {arch_str!r} lacks val_acc_200/test_acc_200") from None
        valid[task], test[task] = v, te
    return Table(space, f"LAPT JSON ({folder})", valid, test)


@functools.lru_cache(maxsize=8)
def load_tnb101(data_dir: str | Path | None = None) -> Table:
    """TransNAS-Bench-101 micro: 4,096 cells x 7 tasks (validation metrics only)."""
    path = _require(
        resolve_data_dir(data_dir) / "transnas101" / "tnb101_micro_val.csv", "TransNAS-Bench-101 table"
    )
    space = TNB101Space()
    rows = _read_csv(path, ["arch_str", *TNB101_TASKS.values()])
    n = space.size()
    valid = {t: _nan_array(n) for t in TNB101_TASKS}
    for row in rows:
        i = space.index(space.from_string(row["arch_str"]))
        for t, col in TNB101_TASKS.items():
            valid[t][i] = float(row[col])
    return Table(space, f"TransNAS-Bench-101 micro ({path})", valid)


def load_user_csv(
    path: str | Path,
    space: SearchSpace | str,
    *,
    encoding_column: str = "arch",
    valid_columns: list[str] | None = None,
    test_suffix: str = "_test",
) -> Table:
    """A user table: one encoding column (canonical or digit string) plus metric columns.

    Every numeric column not ending in `test_suffix` is a task's validation metric; a column
    `<task>_test` (when present) is that task's test metric.
    """
    path = Path(path)
    space = get_space(space) if isinstance(space, str) else space
    if not path.is_file():
        raise DataError(f"results table {path} does not exist: pass the path of a CSV file")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    if encoding_column not in header:
        raise DataError(f"{path} lacks the encoding column {encoding_column!r}: name it with --encoding-column")
    metric_cols = valid_columns or [c for c in header if c != encoding_column and not c.endswith(test_suffix)]
    missing = [c for c in metric_cols if c not in header]
    if missing or not metric_cols:
        raise DataError(f"{path} lacks metric column(s) {', '.join(missing) or '(none found)'}")
    n = space.size()
    valid = {c: _nan_array(n) for c in metric_cols}
    test = {c: _nan_array(n) for c in metric_cols if f"{c}{test_suffix}" in header}
    for lineno, row in enumerate(rows, start=2):
        try:
            i = space.index(space.parse(row[encoding_column]))
            for c in metric_cols:
                valid[c][i] = float(row[c]) if row[c] != "" else np.nan
            for c in test:
                val = row[f"{c}{test_suffix}"]
                test[c][i] = float(val) if val != "" else np.nan
        except SpaceError as exc:
            raise DataError(f"{path} line {lineno}: {exc}") from None
        except ValueError:
            raise DataError(f"{path} line {lineno}: a metric is not a number") from None
    return Table(space, f"user table ({path})", valid, test)


def load_table(space: str, data: str | Path | None = None) -> Table:
    """The built-in table for a space name: nb201 or tnb101."""
    name = get_space(space).name
    if name == "nb201":
        return load_nb201(str(resolve_data_dir(data)))
    if name == "tnb101":
        return load_tnb101(str(resolve_data_dir(data)))
    raise DataError(f"space {space!r} has no built-in table: pass --table FILE.csv")
