"""The only road from a strategy to the target's metrics: one cell at a time, each read an evaluation.

The harness never hands a strategy the benchmark `Table`. It hands it a `SourceView` (copies of the
source task's validation values) and a `TargetAccess`, whose target columns are `MeteredColumn`s:
they answer a single cell's value and nothing else (no slices, no iteration, no conversion to an
array), and the first read of a cell's validation value *is* that cell's evaluation: it is logged in
order and charged to the run's budget. A test value is answered only for a cell already evaluated.
Which cells *have* a result (`np.isnan(column)`, what `Table.known` asks) is public, as it is for
any partial table: it says nothing about how good a cell is, and a cell without one costs nothing.
The harness scores a run from this log, not from what the strategy returns, so a strategy can
neither read a metric it did not pay for nor report one it did not measure.
"""

from __future__ import annotations

import numpy as np

from archlore.tools.errors import ArchloreError, BudgetExhausted
from archlore.tools.executors import TabularExecutor
from archlore.tools.tables import Table


class LeakageError(ArchloreError):
    """A strategy tried to read target metrics other than those of the cells it evaluates."""


class _Meter:
    """The cells of one run in the order they were first evaluated, and the budget they spend."""

    def __init__(self, budget: int, n: int) -> None:
        self.budget = budget
        self.n = n
        self.order: list[int] = []
        self.seen: set[int] = set()

    def charge(self, i: int) -> None:
        if i in self.seen:
            return  # a repeat is free, as in tools.evaluator
        if len(self.order) >= self.budget:
            raise BudgetExhausted(f"the run has spent its budget of {self.budget} evaluations")
        self.order.append(i)
        self.seen.add(i)


class MeteredColumn:
    """One target metric column, readable a cell at a time (see the module docstring)."""

    __slots__ = ("__values", "__meter", "__charges", "__missing", "task", "kind")

    def __init__(self, values: object, meter: _Meter, *, task: str, kind: str, missing: np.ndarray) -> None:
        self.__values = values
        self.__meter = meter
        self.__missing = missing  # read-only: True where the cell has no result
        self.__charges = kind == "valid"
        self.task = task
        self.kind = kind

    def __repr__(self) -> str:
        return f"MeteredColumn({self.task!r}, {self.kind})"

    def __getitem__(self, i: object) -> np.float64:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise LeakageError(
                f"the {self.kind} column of target {self.task!r} answers one cell at a time, by index "
                f"(got {type(i).__name__}): evaluate cells through the executor"
            )
        i = int(i)
        meter = self.__meter
        if not 0 <= i < meter.n:
            raise LeakageError(f"cell index {i} is outside the space (0..{meter.n - 1})")
        if self.__charges:
            if self.__missing[i]:
                return np.float64(np.nan)  # no result: the executor says so, and nothing is spent
            meter.charge(i)
        elif i not in meter.seen:
            raise LeakageError(
                f"the {self.kind} value of cell {i} of target {self.task!r} was asked for before the cell "
                "was evaluated: only evaluated cells have metrics"
            )
        return np.float64(self.__values[i])

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: object, **kwargs: object) -> np.ndarray:
        if ufunc is np.isnan and method == "__call__" and len(inputs) == 1 and not kwargs:
            return self.__missing.copy()  # which cells have a result: public, not a metric
        self._bulk()
        raise AssertionError("unreachable")

    def _bulk(self, *_: object, **__: object) -> None:
        raise LeakageError(
            f"the {self.kind} column of target {self.task!r} cannot be read as a whole: "
            "a strategy sees target metrics only of the cells it evaluates"
        )

    __array__ = __iter__ = __len__ = __contains__ = _bulk


class TargetAccess:
    """One run's access to its target: a metered executor and, for code that builds its own
    executor from a table (the agents' runner), a sealed table holding nothing else."""

    def __init__(self, table: Table, target: str, budget: int, *, source: str | None = None,
                 source_valid: np.ndarray | None = None, missing: dict[str, np.ndarray] | None = None) -> None:
        """`missing`: per column kind ("valid", "test"), True where the target has no result (the
        harness computes it once per target; by default it is computed here)."""
        table.check_task(target)
        n = table.space.size()
        self.target = target
        self._meter = _Meter(budget, n)
        missing = missing or missing_masks(table, target)
        valid = {target: MeteredColumn(table.valid[target], self._meter, task=target, kind="valid", missing=missing["valid"])}
        if source is not None:
            if source_valid is None:
                raise ValueError("a sealed table with a source needs the source's validation copy")
            valid = {source: source_valid, **valid}
        test = {}
        if target in table.test:
            test[target] = MeteredColumn(table.test[target], self._meter, task=target, kind="test", missing=missing["test"])
        # cost columns (parameters, FLOPs) describe a cell, not its result on a task
        self._table = Table(table.space, f"{target} of {table.source}, metered", valid, test, dict(table.cost))  # type: ignore[arg-type]

    def executor(self) -> TabularExecutor:
        """An executor for the target: the only way a strategy gets a target metric."""
        return TabularExecutor(self._table, self.target)

    def sealed_table(self) -> Table:
        """A table with the source's validation copy (if any) and the metered target, nothing else."""
        return self._table

    @property
    def evaluated(self) -> list[int]:
        """Indices of the cells evaluated so far, in order (what the harness scores)."""
        return list(self._meter.order)


def missing_masks(table: Table, target: str) -> dict[str, np.ndarray]:
    """Read-only masks of the target's cells without a validation (test) result."""
    out = {}
    for kind, cols in (("valid", table.valid), ("test", table.test)):
        if target in cols:
            m = np.isnan(np.asarray(cols[target], dtype=np.float64))
            m.setflags(write=False)
            out[kind] = m
    return out
