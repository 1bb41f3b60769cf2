"""Cost limits: `--max params=1.0M --max flops=50M`. A cell over a limit is never evaluated.

A cost is a number per architecture (parameters, FLOPs, latency...). It comes from a
`CostFunction` (`cost_of(arch) -> {name: value}`): the table's cost columns (`TableCost`), or,
for trained candidates, the training executor's count from the built model (its `cost_of`).

Two ways to keep a search inside the limits, one per executor kind:

- tabular: `constrain_table` returns a copy of the table in which every cell over a limit has no
  result. Everything that already handles partial tables (the strategies' nearest-row rule, the
  budget cap, the evidence, the baselines of the benchmark) then never sees an infeasible cell;
- any executor (training): `ConstrainedExecutor` asks the cost function before evaluating and
  raises `OverLimit` (an `UnknownCell`) instead, so a strategy moves to the nearest feasible cell.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol

import numpy as np

from .errors import ConfigError, DataError, UnknownCell
from .executors import Executor, Metrics
from .spaces import Arch, SearchSpace
from .tables import Table

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
_LIMIT = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*(?:=|<=)\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([kKmMgG]?)\s*$")


class CostFunction(Protocol):
    """What an architecture costs: `{name: value}` (e.g. params, flops, latency)."""

    def cost_of(self, arch: Arch) -> dict[str, float]: ...


class OverLimit(UnknownCell):
    """The architecture breaks a cost limit: it is not evaluated (a strategy proposes another)."""


def parse_limit(text: str) -> tuple[str, float]:
    """`params=1.0M` -> ("params", 1e6). Suffixes k/K, M, G multiply by 1e3, 1e6, 1e9."""
    m = _LIMIT.match(text or "")
    if not m:
        raise ConfigError(
            f"--max {text!r} is not NAME=VALUE: write e.g. --max params=1.0M --max flops=50M "
            "(suffixes K, M, G) or --max latency=8.5"
        )
    name, number, suffix = m.group(1), float(m.group(2)), m.group(3).lower()
    value = number * _SUFFIX[suffix]
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--max {text!r}: the limit must be a positive number")
    return name, value


def parse_limits(texts: list[str] | tuple[str, ...] | None) -> dict[str, float]:
    limits: dict[str, float] = {}
    for text in texts or ():
        name, value = parse_limit(text)
        if name in limits:
            raise ConfigError(f"--max {name} is given twice: keep one limit per cost")
        limits[name] = value
    return limits


def format_limits(limits: Mapping[str, float]) -> str:
    return ", ".join(f"{k} <= {_short(v)}" for k, v in limits.items())


def _short(v: float) -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def broken(cost: Mapping[str, float], limits: Mapping[str, float]) -> list[str]:
    """The names of the limits `cost` breaks (a missing cost counts as broken: unknown is not safe)."""
    return [k for k, lim in limits.items() if not (k in cost and cost[k] <= lim)]


class TableCost:
    """The cost columns of a table as a `CostFunction`."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.space = table.space

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.table.cost)

    def cost_of(self, arch: Arch) -> dict[str, float]:
        i = self.space.index(self.space.validate(arch))
        return {k: float(v[i]) for k, v in self.table.cost.items() if not math.isnan(v[i])}


def check_names(limits: Mapping[str, float], available: tuple[str, ...] | list[str], where: str) -> None:
    unknown = [k for k in limits if k not in available]
    if unknown:
        have = ", ".join(available) or "none"
        raise ConfigError(f"--max {unknown[0]}: {where} has no cost {unknown[0]!r} (its costs: {have})")


def feasible_mask(table: Table, limits: Mapping[str, float]) -> np.ndarray:
    """True for every cell of the space within all limits (a cell without a cost value is not)."""
    check_names(limits, list(table.cost), table.source)
    ok = np.ones(table.space.size(), dtype=bool)
    for name, lim in limits.items():
        c = table.cost[name]
        ok &= ~np.isnan(c) & (c <= lim)
    return ok


def constrain_table(table: Table, limits: Mapping[str, float]) -> Table:
    """A copy of `table` in which every cell over a limit has no result (for every task)."""
    if not limits:
        return table
    ok = feasible_mask(table, limits)
    if all(np.all(np.isnan(v) | ok) for v in table.valid.values()):
        return table  # already within the limits (cut before): nothing to cut
    if not ok.any():
        lows = ", ".join(f"{k} >= {_short(float(np.nanmin(table.cost[k])))}" for k in limits)
        raise DataError(f"no architecture of {table.source} is within {format_limits(limits)} (the cheapest: {lows}): raise a limit")

    def cut(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.where(ok, v, np.nan) for k, v in arrays.items()}

    return replace(table, source=f"{table.source} within {format_limits(limits)}", valid=cut(table.valid), test=cut(table.test))


class ConstrainedExecutor:
    """Any executor behind cost limits: an architecture over a limit raises `OverLimit`, unevaluated.

    `known()` lists the cells a strategy may fall back to (`strategies.nearest_known`). With a
    cheap cost function (a table's) on a space of at most `enumerate_up_to` cells it is every
    feasible cell, enumerated once. Otherwise (the training executor's `cost_of` builds a model
    per cell) it is local: the feasible cells one change away from the last architecture refused
    (two changes, up to `local_cap` of them, when none is), plus `sample` seeded random feasible
    cells, so the nearest feasible cell replaces a refused proposal without building the space.
    """

    def __init__(
        self, inner: Executor, cost: CostFunction, limits: Mapping[str, float], *,
        enumerate_up_to: int | None = None, local_cap: int = 100, sample: int = 32,
    ) -> None:
        self.inner = inner
        self.space: SearchSpace = inner.space
        self.task = inner.task
        self.cost = cost
        self.limits = dict(limits)
        self.local_cap = local_cap
        self.sample = sample
        cheap = isinstance(cost, TableCost)
        self.enumerate = self.space.size() <= (enumerate_up_to if enumerate_up_to is not None else (20_000 if cheap else 0))
        self._all: np.ndarray | None = None
        self._last_over: Arch | None = None

    def feasible(self, arch: Arch) -> bool:
        return not broken(self.cost.cost_of(arch), self.limits)

    def known(self) -> np.ndarray:
        if self.enumerate:
            if self._all is None:
                inner_known = getattr(self.inner, "known", None)
                cells = inner_known() if inner_known is not None else np.arange(self.space.size())
                self._all = np.array([i for i in cells if self.feasible(self.space.from_index(int(i)))], dtype=np.int64)
            return self._all
        found: set[Arch] = set()
        arch = self._last_over
        rng = np.random.default_rng([7, *(arch or ())])
        if arch is not None:
            ring = self.space.neighbours(arch)
            found = {a for a in ring if self.feasible(a)}
            if not found:
                ring2 = sorted({b for a in ring for b in self.space.neighbours(a)} - {arch})
                pick = rng.permutation(len(ring2))[: self.local_cap]
                found = {ring2[int(i)] for i in pick if self.feasible(ring2[int(i)])}
        for _ in range(self.sample):
            a = self.space.sample(rng)
            if self.feasible(a):
                found.add(a)
        return np.array(sorted(self.space.index(a) for a in found), dtype=np.int64)

    def evaluate(self, arch: Arch, epochs: int | None = None) -> Metrics:
        """`epochs`: a training executor's fidelity (successive halving), passed on."""
        cost = self.cost.cost_of(arch)
        over = broken(cost, self.limits)
        if over:
            self._last_over = tuple(arch)
            key = self.space.to_string(arch)
            raise OverLimit(
                f"{key} is over the limit(s) {format_limits({k: self.limits[k] for k in over})}: not evaluated",
                arch=key, task=self.task,
            )
        m = self.inner.evaluate(arch) if epochs is None else self.inner.evaluate(arch, epochs=epochs)  # type: ignore[call-arg]
        return replace(m, cost={**cost, **m.cost})
