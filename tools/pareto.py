"""Pareto search: several objectives (`--objective accuracy,flops`), the front, its hypervolume.

An objective is a table task (a metric; its table array is already "higher is better", see
`Table.lower_is_better`) or a cost column (always lower is better). Internally every objective is
turned into a value to MAXIMISE (costs negated) by `Objectives.values`; `Objectives.user` turns a
vector back into the user's own numbers. Strategies see one scalar fitness per evaluation:
`ParetoProposer` replaces it by the negated non-domination rank (front 0 is best), so REA, guided
REA and random search pursue the whole front without knowing there are several objectives.

Without a table (`--executor train`) the objectives come from the run itself (`Objectives.trained`):
the first, the target, is the validation accuracy the candidate was trained to; a cost is what the
cost function counts on the built model (the training executor's `cost_of`: params, flops), or
the evaluation's own recorded cost (`Metrics.cost`) where it is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError
from .spaces import Arch, SearchSpace, SpaceFilter
from .tables import Table

KNOWN_COSTS = ("params", "flops", "latency")  # lower is better wherever they appear
TRAINED_COSTS = ("params", "flops", "params_mb", "flops_m")  # what the training executor counts on a built model


def parse_objectives(text: str | Sequence[str] | None) -> list[str]:
    if not text:
        return []
    parts = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    names = [p.strip() for p in parts if p.strip()]
    if len(names) < 2:
        raise ConfigError(f"--objective {text!r} needs at least two names, e.g. --objective accuracy,flops")
    if len(set(names)) != len(names):
        raise ConfigError(f"--objective {text!r} repeats a name")
    return names


@dataclass(frozen=True)
class Objectives:
    """Objective names over one table (or, trained, over a cost function); `values(arch)` is a
    vector to maximise."""

    table: Table | None
    names: tuple[str, ...]
    cost: Any = None  # a CostFunction (`cost_of(arch) -> {name: value}`) for costs the table lacks

    @classmethod
    def of(cls, table: Table, names: Sequence[str]) -> Objectives:
        for n in names:
            if n not in table.valid and n not in table.cost:
                have = ", ".join([*table.valid, *table.cost])
                raise ConfigError(f"--objective {n}: {table.source} has no metric or cost {n!r} (it has: {have})")
        if names[0] not in table.valid:
            raise ConfigError(f"--objective {','.join(names)}: the first objective must be a metric (a task), got the cost {names[0]!r}")
        return cls(table, tuple(names))

    @classmethod
    def trained(cls, names: Sequence[str], cost: Any = None) -> Objectives:
        """Trained candidates: the first name is the target (its validation accuracy, passed to
        `values` as `primary`), the others costs counted on the built model (`TRAINED_COSTS`)."""
        check_trained(names)
        return cls(None, tuple(names), cost)

    def is_cost(self, name: str) -> bool:
        return name != self.names[0] and (self.table is None or name not in self.table.valid)

    def direction(self, name: str) -> str:
        if self.is_cost(name):
            return "min"
        return self.table.direction(name) if self.table is not None else "max"

    def _raw(self, name: str) -> np.ndarray:
        assert self.table is not None, "a table's objectives"
        return self.table.valid[name] if name in self.table.valid else -self.table.cost[name]

    def values(self, arch: Arch, primary: float | None = None, cost: Mapping[str, float] | None = None) -> tuple[float, ...]:
        """The vector to maximise. `primary`: the target's value as evaluated (a trained
        candidate's validation accuracy; a table's own value wins); `cost`: the evaluation's
        recorded costs (else the table's, else the cost function's)."""
        i = self.table.space.index(arch) if self.table is not None else None
        counted: dict[str, float] | None = None
        out = []
        for n in self.names:
            if self.table is not None and (n in self.table.valid or n in self.table.cost):
                out.append(float(self._raw(n)[i]))
            elif n == self.names[0]:
                out.append(float("nan") if primary is None else float(primary))
            elif cost is not None and n in cost:
                out.append(-float(cost[n]))
            else:
                if counted is None:
                    counted = dict(self.cost.cost_of(arch)) if self.cost is not None else {}
                out.append(-float(counted[n]) if n in counted else float("nan"))
        return tuple(out)

    def matrix(self, indices: np.ndarray) -> np.ndarray:
        return np.stack([self._raw(n)[indices] for n in self.names], axis=1)

    def user(self, vector: Sequence[float]) -> dict[str, float]:
        """The user's own numbers: costs as they are, lower-is-better metrics un-negated."""
        out = {}
        for n, v in zip(self.names, vector):
            if self.is_cost(n):
                out[n] = -v
            else:
                out[n] = float(self.table.user_value(n, v)) if self.table is not None else float(v)
        return out


def check_trained(names: Sequence[str]) -> None:
    """Trained candidates trade their accuracy only against what is counted on the built model."""
    other = [n for n in names[1:] if n not in TRAINED_COSTS]
    if other:
        raise ConfigError(
            f"--objective {','.join(names)}: with --executor train the objectives are the target's validation "
            f"accuracy then costs counted on the built model ({', '.join(TRAINED_COSTS)}); {other[0]!r} is neither"
        )


def nondominated(points: np.ndarray) -> np.ndarray:
    """Indices of the rows no other row dominates (all objectives maximised), ascending.

    A row dominates another when it is >= in every objective and > in one; equal rows are all kept.
    """
    pts = np.asarray(points, dtype=float)
    if pts.size == 0:
        return np.zeros(0, dtype=np.int64)
    if pts.ndim == 2 and pts.shape[1] == 2 and not np.isnan(pts).any():
        return _nondominated_2d(pts)
    keep = []
    for i, p in enumerate(pts):
        ge = np.all(pts >= p, axis=1)
        gt = np.any(pts > p, axis=1)
        if not np.any(ge & gt):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def _nondominated_2d(pts: np.ndarray) -> np.ndarray:
    """`nondominated` for two objectives in O(n log n): sorted by the first objective, a row is
    dominated when a row with a larger first value has a second value at least as large, or a row
    with the same first value has a larger second one."""
    x, y = pts[:, 0], pts[:, 1]
    order = np.lexsort((-y, -x))  # first objective descending, ties: second descending
    xs, ys = x[order], y[order]
    new_group = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(new_group) - 1
    group_max = np.maximum.reduceat(ys, np.flatnonzero(new_group))  # the group's best second value
    best_before = np.r_[-np.inf, np.maximum.accumulate(group_max)[:-1]]  # over strictly larger first values
    keep = (best_before[group] < ys) & (group_max[group] <= ys)
    return np.sort(order[keep]).astype(np.int64)


def ranks(points: np.ndarray) -> np.ndarray:
    """Non-domination rank per row: 0 for the front, 1 for the front of the rest, ..."""
    pts = np.asarray(points, dtype=float)
    out = np.full(len(pts), -1, dtype=np.int64)
    left = np.arange(len(pts))
    r = 0
    while left.size:
        front = left[nondominated(pts[left])]
        out[front] = r
        left = np.setdiff1d(left, front)
        r += 1
    return out


def hypervolume_2d(points: np.ndarray, ref: Sequence[float]) -> float:
    """The area dominated by `points` (two objectives, maximised) and bounded below by `ref`."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    pts = pts[np.all(pts > np.asarray(ref, dtype=float), axis=1)]
    if pts.size == 0:
        return 0.0
    front = pts[nondominated(pts)]
    front = front[np.argsort(-front[:, 0])]  # best first objective first, so the second rises
    area, y_prev = 0.0, float(ref[1])
    for x, y in front:
        if y > y_prev:
            area += (x - ref[0]) * (y - y_prev)
            y_prev = y
    return float(area)


@dataclass(frozen=True)
class ParetoProposer:
    """Wraps a proposer: history fitness becomes -(non-domination rank) + a small primary tie-break."""

    inner: object
    objectives: Objectives

    @property
    def name(self) -> str:
        return f"{getattr(self.inner, 'name', 'search')}+pareto"

    def fitness(self, history: Sequence[tuple[Arch, float]]) -> list[tuple[Arch, float]]:
        if not history:
            return []
        pts = np.array([self.objectives.values(a, f) for a, f in history], dtype=float).reshape(len(history), -1)
        rk = ranks(np.nan_to_num(pts, nan=-np.inf))  # an unknown value never dominates
        primary = pts[:, 0]
        span = float(np.nanmax(primary) - np.nanmin(primary)) or 1.0
        tie = (primary - np.nanmin(primary)) / span * 0.5  # < 1: never overturns a rank
        return [(a, float(-r + t)) for (a, _), r, t in zip(history, rk, tie)]

    def propose(self, space: SearchSpace, history, flt: SpaceFilter, rng: np.random.Generator) -> Arch:
        return self.inner.propose(space, self.fitness(history), flt, rng)  # type: ignore[attr-defined]


def front_of(
    objectives: Objectives, archs: Sequence[Arch], primary: Sequence[float | None] | None = None,
    costs: Sequence[Mapping[str, float] | None] | None = None,
) -> list[int]:
    """Positions in `archs` of its Pareto front, ordered by the first objective, best first.
    `primary`/`costs`: per arch, the evaluated target value and recorded costs (`Objectives.values`)."""
    if not archs:
        return []
    pts = np.array([objectives.values(a, primary[k] if primary is not None else None, costs[k] if costs is not None else None)
                    for k, a in enumerate(archs)], dtype=float).reshape(len(archs), -1)
    finite = np.flatnonzero(np.all(np.isfinite(pts), axis=1))  # a failed candidate is on no front
    idx = finite[nondominated(pts[finite])]
    return [int(i) for i in idx[np.argsort(-pts[idx, 0], kind="stable")]]


def reference_point(objectives: Objectives, indices: np.ndarray) -> tuple[float, ...]:
    """A fixed hypervolume reference: each objective's worst value over the given (feasible) cells."""
    m = objectives.matrix(indices)
    return tuple(float(np.nanmin(m[:, j])) - 1e-9 for j in range(m.shape[1]))


def is_finite(vec: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in vec)
