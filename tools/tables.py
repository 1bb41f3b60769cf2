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
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .env import env
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
    # tasks whose metric is lower-is-better ("min"); their arrays hold the NEGATED metric, so every
    # search maximises. This is the one place the sign lives: `user_value` gives the user's number.
    lower_is_better: frozenset[str] = frozenset()

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.valid)

    def direction(self, task: str) -> str:
        """'min' for a lower-is-better metric, else 'max'."""
        return "min" if task in self.lower_is_better else "max"

    def user_value(self, task: str, value: float | None) -> float | None:
        """The user's own number for an internal (maximised) value of `task`."""
        if value is None:
            return None
        return -value if task in self.lower_is_better else value

    def check_task(self, task: str) -> str:
        if task not in self.valid and task in self.cost:
            raise DataError(
                f"{task!r} is a cost column of {self.source}, not a task: limit it with --max {task}=VALUE or trade "
                f"it off with --objective TARGET,{task}; tasks: {', '.join(self.valid)}"
            )
        if task not in self.valid:
            raise DataError(f"unknown task {task!r} for {self.source}: use one of {', '.join(self.valid)}")
        return task

    def known(self, task: str) -> np.ndarray:
        """Indices (`space.index(arch)`) of the cells with a validation result, ascending.

        Built-in tables know every cell; a user table may be partial (not every combination has a
        row), and evaluating an unknown cell raises `UnknownCell`.
        """
        return np.flatnonzero(~np.isnan(self.valid[self.check_task(task)]))

    def n_known(self, task: str) -> int:
        return int(np.count_nonzero(~np.isnan(self.valid[self.check_task(task)])))

    def is_known(self, task: str, index: int) -> bool:
        return not np.isnan(self.valid[self.check_task(task)][index])

    def ranked(self, task: str) -> np.ndarray:
        """Indices of known cells, best validation first."""
        v = self.valid[self.check_task(task)]
        known = np.flatnonzero(~np.isnan(v))
        return known[np.argsort(-v[known], kind="stable")]

    def threshold(self, task: str, top_k: int) -> float:
        """The k-th best validation value (e.g. k=16 is NB201's top-0.1%)."""
        ranked = self.ranked(task)
        if not 1 <= top_k <= len(ranked):
            raise DataError(f"{self.source} has {len(ranked)} {task} results; the top {top_k} do not exist")
        return float(self.valid[task][ranked[top_k - 1]])

    def percentile(self, task: str, value: float) -> float:
        """100 x the fraction of known cells with a validation value <= `value` (100 = best)."""
        v = self.valid[self.check_task(task)]
        v = v[~np.isnan(v)]
        return 100.0 * float(np.mean(v <= value))


def default_data_dir() -> Path | None:
    """`$ARCHLORE_DATA`, else `../shared/data` (from the working directory) when it exists."""
    configured = env().archlore_data
    if configured:
        return configured
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
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in needed if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path} lacks the column(s) {', '.join(missing)}: check the file format")
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path} is not a readable UTF-8 CSV file ({exc}): check the file") from None


def _number(text: str | None, where: str) -> float:
    """A finite number from a table field; empty (or NaN/NA) means no result -> NaN."""
    text = (text or "").strip()
    if text.lower() in _MISSING:
        return np.nan
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: {text[:40]!r} is not a number (leave the field empty for no result)") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {text[:40]!r} is not a finite number")
    return value


_MISSING = {"", "nan", "na", "n/a", "none", "null"}


def _row_index(space: SearchSpace, text: str | None, where: str) -> int:
    try:
        return space.index(space.from_string(text or ""))
    except SpaceError as exc:
        raise DataError(f"{where}: {exc}") from None


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
    cost = {"params_mb": _nan_array(n), "flops_m": _nan_array(n), "latency": _nan_array(n)}
    for line, row in enumerate(rows, start=2):
        i = _row_index(space, row["arch_str"], f"{path} line {line}")
        for t, p in NB201_TASKS.items():
            valid[t][i] = _number(row[f"{p}_valid"], f"{path} line {line}, {p}_valid")
            test[t][i] = _number(row[f"{p}_test"], f"{path} line {line}, {p}_test")
        if row.get("params_mb_c10"):
            cost["params_mb"][i] = _number(row["params_mb_c10"], f"{path} line {line}, params_mb_c10")
            cost["flops_m"][i] = _number(row.get("flops_m_c10"), f"{path} line {line}, flops_m_c10")
        if row.get("edgegpu_latency_ms_c10"):
            cost["latency"][i] = _number(row["edgegpu_latency_ms_c10"], f"{path} line {line}, edgegpu_latency_ms_c10")
    # the names `--max` and `--objective` use, in plain units: parameters, FLOPs, milliseconds
    cost["params"] = cost["params_mb"] * 1e6
    cost["flops"] = cost["flops_m"] * 1e6
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
        raw = _read_json(path)
        if not isinstance(raw, dict) or not raw:
            raise DataError(f"{path} must be a JSON object {{arch_str: {{val_acc_200, test_acc_200}}}}")
        v, te = _nan_array(n), _nan_array(n)
        for arch_str, rec in raw.items():
            where = f"{path}: entry {arch_str[:120]!r}"
            i = _row_index(space, arch_str, where)
            if not isinstance(rec, dict) or "val_acc_200" not in rec or "test_acc_200" not in rec:
                raise DataError(f"{where} lacks val_acc_200/test_acc_200")
            if not np.isnan(v[i]):
                raise DataError(f"{where} repeats a cell already given (written differently): keep one")
            v[i] = _json_number(rec["val_acc_200"], f"{where}, val_acc_200")
            te[i] = _json_number(rec["test_acc_200"], f"{where}, test_acc_200")
        valid[task], test[task] = v, te
    return Table(space, f"LAPT JSON ({folder})", valid, test)


def _read_json(path: Path) -> object:
    def no_repeats(pairs: list[tuple[str, object]]) -> dict:
        out: dict = {}
        for k, v in pairs:
            if k in out:
                raise DataError(f"{path} repeats the key {k[:120]!r}: keep one")
            out[k] = v
        return out

    try:
        return json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=no_repeats)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text: check the file") from None
    except RecursionError:
        raise DataError(f"{path} nests too deeply to be a LAPT JSON file") from None


def _json_number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{where}: {json.dumps(value, default=str)[:40]} is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise DataError(f"{where}: {str(value)[:40]} is not a finite number")
    return number


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
    for line, row in enumerate(rows, start=2):
        i = _row_index(space, row["arch_str"], f"{path} line {line}")
        for t, col in TNB101_TASKS.items():
            valid[t][i] = _number(row[col], f"{path} line {line}, {col}")
    return Table(space, f"TransNAS-Bench-101 micro ({path})", valid)


COST_NAMES = frozenset({"params", "flops", "macs", "latency", "params_mb", "flops_m", "latency_ms", "memory_mb"})


def default_role(column: str) -> str | None:
    """A column's role when the space file gives none: a known cost name (params, flops, macs,
    latency...) is a cost, a name ending in `error` or `loss` a lower-is-better metric; others are
    higher-is-better metrics (None). The space file's `columns:` always wins."""
    name = column.lower()
    if name in COST_NAMES:
        return "cost"
    if name.endswith(("error", "loss", "err")):
        return "min"
    return None


MAX_TABLE_CELLS = 20_000_000  # a dense table keeps one float per cell of the space and task


def load_user_csv(
    path: str | Path,
    space: SearchSpace | str,
    *,
    encoding_column: str = "arch",
    valid_columns: list[str] | None = None,
    test_suffix: str = "_test",
) -> Table:
    """A user table: an `arch` column plus metric columns, one row per evaluated architecture.

    The `arch` column may hold, row by row, any of these forms (`space.parse`):

    - the digit string: one character 0-9a-z per position, the choice's id (`21` in a space
      `{depth: [2, 4, 8], act: [relu, gelu]}`); this is a user space's canonical string;
    - a built-in space's canonical string (NB201 `|nor_conv_3x3~0|+|none~0|none~1|+|...|`,
      TransNAS `64-41414-3_13_221`);
    - the choice names joined with '-' (`8-gelu`; names that hold '-' work when the split is
      unique);
    - a JSON list of choice names (`["8", "gelu"]`, in CSV quoted as `"[""8"", ""gelu""]"`).

    A digit string that is too short and all digits (a spreadsheet stored `0312` as the number
    312) is an error saying it lost its leading zeros. Every other column whose name does not end
    in `test_suffix` is a task's validation metric (unless the space file's `columns:` makes it a
    lower-is-better metric `min`, a `cost` or `ignore`; see `spaces.column_roles`), `<task>_test` (when present) that task's test
    metric; a metric is a finite number, or empty (also NaN/NA) for no result. A table may be
    partial (not every architecture has a row): `Table.known(task)` tells which cells are known.
    The file must be UTF-8 CSV with a header and at least one row; an architecture may appear
    once; blank lines and unnamed empty columns (trailing commas) are ignored.
    """
    path = Path(path)
    space = get_space(space) if isinstance(space, str) else space
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise DataError(f"results table {path} {what}: pass the path of a CSV file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            records = [(reader.line_num, row) for row in reader if any(f.strip() for f in row)]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}): save the table as UTF-8 CSV") from None
    except csv.Error as exc:
        raise DataError(f"{path} is not a readable CSV file ({exc}): check the file") from None
    if not records:
        raise DataError(
            f"{path} is empty: it needs a header line with an {encoding_column!r} column and metric "
            "columns, then one row per evaluated architecture"
        )
    _, header = records[0]
    header = [h.strip() for h in header]
    rows = records[1:]
    keep = [j for j, h in enumerate(header) if h or any(j < len(r) and r[j].strip() for _, r in rows)]
    unnamed = [j + 1 for j in keep if not header[j]]
    if unnamed:
        raise DataError(f"{path}: column {unnamed[0]} has values but no name in the header: name it")
    names = [header[j] for j in keep]
    repeated = sorted({h for h in names if names.count(h) > 1})
    if repeated:
        raise DataError(f"{path} repeats the column(s) {', '.join(repeated)} in its header: keep one of each")
    if encoding_column not in names:
        raise DataError(
            f"{path} has no {encoding_column!r} column (its columns: {', '.join(names)[:200]}): "
            f"name the column that holds the architectures {encoding_column!r}"
        )
    roles = {**{c: r for c in names if (r := default_role(c))}, **(getattr(space, "columns", {}) or {})}
    unknown_roles = sorted(c for c in getattr(space, "columns", {}) or {} if c not in names and c.removesuffix(test_suffix) not in names)
    if unknown_roles:
        raise DataError(
            f"{path}: the space file gives roles to column(s) {', '.join(unknown_roles)} that the table lacks "
            f"(its columns: {', '.join(names)[:200]}): fix the names under 'columns:'"
        )
    cost_cols = [c for c in names if roles.get(c) == "cost"]
    metric_cols = valid_columns or [
        c for c in names
        if c != encoding_column and not c.endswith(test_suffix) and roles.get(c, "max") in {"max", "min"}
    ]
    missing = [c for c in metric_cols if c not in names]
    if missing or not metric_cols:
        raise DataError(
            f"{path} lacks metric column(s) {', '.join(missing) or '(none found)'}: add a column per "
            f"task holding its validation metric (and optionally <task>{test_suffix})"
        )
    if not rows:
        raise DataError(f"{path} has a header but no rows: add one row per evaluated architecture")
    n = space.size()
    test_cols = [c for c in metric_cols if f"{c}{test_suffix}" in names]
    if n * (len(metric_cols) + len(test_cols)) > MAX_TABLE_CELLS:
        raise DataError(
            f"space {space.name!r} has {n} architectures: too many for a table of results "
            f"(at most {MAX_TABLE_CELLS} cells x tasks); use --executor train or a smaller space"
        )
    col = {h: keep[k] for k, h in enumerate(names)}
    valid = {c: _nan_array(n) for c in metric_cols}
    test = {c: _nan_array(n) for c in test_cols}
    cost = {c: _nan_array(n) for c in cost_cols}
    first_line: dict[int, int] = {}
    width = max(keep) + 1  # trailing unnamed empty columns may be missing from a row
    for lineno, row in rows:
        if len(row) < width or any(f.strip() for f in row[len(header):]):
            raise DataError(
                f"{path} line {lineno} has {len(row)} fields but the header has {width}: "
                "check for a missing or extra comma (quote fields that contain commas)"
            )
        try:
            i = space.index(space.parse(row[col[encoding_column]]))
        except SpaceError as exc:
            raise DataError(f"{path} line {lineno}: {exc}") from None
        if i in first_line:
            raise DataError(
                f"{path} line {lineno} repeats the architecture of line {first_line[i]} "
                f"({space.to_string(space.from_index(i))}): keep one row per architecture"
            )
        first_line[i] = lineno
        for c in metric_cols:
            valid[c][i] = _number(row[col[c]], f"{path} line {lineno}, column {c!r}")
        for c in test_cols:
            test[c][i] = _number(row[col[f"{c}{test_suffix}"]], f"{path} line {lineno}, column {c + test_suffix!r}")
        for c in cost_cols:
            cost[c][i] = _number(row[col[c]], f"{path} line {lineno}, column {c!r}")
    empty = [c for c in metric_cols if np.isnan(valid[c]).all()]
    if empty:
        raise DataError(f"{path}: column(s) {', '.join(empty)} hold no numbers: fill them or remove them")
    lower = frozenset(c for c in metric_cols if roles.get(c) == "min")
    for c in lower:  # the sign convention (see Table.lower_is_better): searches maximise
        valid[c] = -valid[c]
        if c in test:
            test[c] = -test[c]
    return Table(space, f"user table ({path})", valid, test, cost, lower)


def load_table(space: str, data: str | Path | None = None) -> Table:
    """The built-in table for a space name: nb201 or tnb101."""
    name = get_space(space).name
    if name == "nb201":
        return load_nb201(str(resolve_data_dir(data)))
    if name == "tnb101":
        return load_tnb101(str(resolve_data_dir(data)))
    raise DataError(f"space {space!r} has no built-in table: pass --table FILE.csv")
