"""Pareto search: several objectives (`--objective accuracy,flops`), the front, its hypervolume.

An objective is a table task (a metric; its table array is already "higher is better", see
`Table.lower_is_better`) or a cost column (always lower is better). Internally every objective is
turned into a value to MAXIMISE (costs negated) by `Objectives.values`; `Objectives.user` turns a
vector back into the user's own numbers. Strategies see one scalar fitness per evaluation:
`ParetoProposer` replaces it by the negated non-domination rank (front 0 is best), so REA, guided
REA and random search pursue the whole front without knowing there are several objectives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .spaces import Arch, SearchSpace, SpaceFilter
from .tables import Table

KNOWN_COSTS = ("params", "flops", "latency")  # lower is better wherever they appear


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
    """Objective names over one table; `values(arch)` is a vector to maximise."""

    table: Table
    names: tuple[str, ...]

    @classmethod
    def of(cls, table: Table, names: Sequence[str]) -> Objectives:
        for n in names:
            if n not in table.valid and n not in table.cost:
                have = ", ".join([*table.valid, *table.cost])
                raise ConfigError(f"--objective {n}: {table.source} has no metric or cost {n!r} (it has: {have})")
        if names[0] not in table.valid:
            raise ConfigError(f"--objective {','.join(names)}: the first objective must be a metric (a task), got the cost {names[0]!r}")
        return cls(table, tuple(names))

    def direction(self, name: str) -> str:
        return "min" if name in self.table.cost else self.table.direction(name)

    def _raw(self, name: str) -> np.ndarray:
        return self.table.valid[name] if name in self.table.valid else -self.table.cost[name]

    def values(self, arch: Arch) -> tuple[float, ...]:
        i = self.table.space.index(arch)
        return tuple(float(self._raw(n)[i]) for n in self.names)

    def matrix(self, indices: np.ndarray) -> np.ndarray:
        return np.stack([self._raw(n)[indices] for n in self.names], axis=1)

    def user(self, vector: Sequence[float]) -> dict[str, float]:
        """The user's own numbers: costs as they are, lower-is-better metrics un-negated."""
        out = {}
        for n, v in zip(self.names, vector):
            out[n] = -v if n in self.table.cost else float(self.table.user_value(n, v))
        return out


def nondominated(points: np.ndarray) -> np.ndarray:
    """Indices of the rows no other row dominates (all objectives maximised), ascending.

    A row dominates another when it is >= in every objective and > in one; equal rows are all kept.
    """
    pts = np.asarray(points, dtype=float)
    if pts.size == 0:
        return np.zeros(0, dtype=np.int64)
    keep = []
    for i, p in enumerate(pts):
        ge = np.all(pts >= p, axis=1)
        gt = np.any(pts > p, axis=1)
        if not np.any(ge & gt):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


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
        pts = np.array([self.objectives.values(a) for a, _ in history])
        rk = ranks(pts)
        primary = pts[:, 0]
        span = float(np.nanmax(primary) - np.nanmin(primary)) or 1.0
        tie = (primary - np.nanmin(primary)) / span * 0.5  # < 1: never overturns a rank
        return [(a, float(-r + t)) for (a, _), r, t in zip(history, rk, tie)]

    def propose(self, space: SearchSpace, history, flt: SpaceFilter, rng: np.random.Generator) -> Arch:
        return self.inner.propose(space, self.fitness(history), flt, rng)  # type: ignore[attr-defined]


def front_of(objectives: Objectives, archs: Sequence[Arch]) -> list[int]:
    """Positions in `archs` of its Pareto front, ordered by the first objective, best first."""
    if not archs:
        return []
    pts = np.array([objectives.values(a) for a in archs])
    idx = nondominated(pts)
    return [int(i) for i in idx[np.argsort(-pts[idx, 0], kind="stable")]]


def reference_point(objectives: Objectives, indices: np.ndarray) -> tuple[float, ...]:
    """A fixed hypervolume reference: each objective's worst value over the given (feasible) cells."""
    m = objectives.matrix(indices)
    return tuple(float(np.nanmin(m[:, j])) - 1e-9 for j in range(m.shape[1]))


def is_finite(vec: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in vec)
