"""Executors turn an architecture into metrics: from a table, or by training it for real."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .errors import UnknownCell
from .spaces import Arch, SearchSpace
from .tables import Table


@dataclass(frozen=True)
class Metrics:
    """What one evaluation produced. `valid` is what a search may see; `test` is for reports.

    `status` is "ok" or "failed" (then `reason` says why: out of memory, NaN loss, a builder
    error; `valid` is NaN); `fidelity` is the epochs a trained candidate had (0: not applicable).
    """

    valid: float
    test: float | None = None
    cost: dict[str, float] = field(default_factory=dict)
    wall_time: float = 0.0
    status: str = "ok"
    reason: str = ""
    fidelity: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def failed(cls, reason: str, *, wall_time: float = 0.0, fidelity: int = 0,
               cost: dict[str, float] | None = None) -> Metrics:
        return cls(math.nan, None, dict(cost or {}), wall_time, "failed", reason, fidelity)


class Executor(Protocol):
    """Evaluates architectures of one space on one task."""

    space: SearchSpace
    task: str

    def evaluate(self, arch: Arch) -> Metrics: ...


class TabularExecutor:
    """Looks metrics up in a `Table` (simulated cost: params and FLOPs where the table has them).

    On a partial table, a cell without a result raises `UnknownCell` (a `DataError`), which a
    strategy can catch to propose another cell; `table.known(task)` lists the cells it can.
    """

    def __init__(self, table: Table, task: str) -> None:
        self.table = table
        self.space = table.space
        self.task = table.check_task(task)
        self._valid = table.valid[task]
        self._test = table.test.get(task)

    def known(self) -> np.ndarray:
        """Indices (`space.index`) of the cells this executor can evaluate."""
        return self.table.known(self.task)

    def evaluate(self, arch: Arch) -> Metrics:
        start = time.perf_counter()
        i = self.space.index(self.space.validate(arch))
        valid = float(self._valid[i])
        if math.isnan(valid):
            key = self.space.to_string(arch)
            raise UnknownCell(
                f"{key} has no {self.task} result in {self.table.source} "
                f"({self.table.n_known(self.task)} of {self.space.size()} cells have one)",
                arch=key, task=self.task,
            )
        test = float(self._test[i]) if self._test is not None and not math.isnan(self._test[i]) else None
        cost = {k: float(v[i]) for k, v in self.table.cost.items() if not math.isnan(v[i])}
        return Metrics(valid, test, cost, time.perf_counter() - start)
