"""What the proposers (analyst, planner, baseline strategies) may read of a results table.

A `SourceView` holds copies of the *source* tasks' validation values and nothing else: no test
values, no cost columns, no other task, and no reference to the `Table` it was cut from, so a
target metric cannot be read through it by any route. The only path to a target metric is the
executor, and only for the cells it evaluates. `describe()` says exactly what was handed over,
which the run record stores as `data_fed_to_analyst`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, DataError
from .spaces import Arch, SearchSpace
from .tables import Table


@dataclass(frozen=True)
class _Task:
    valid: np.ndarray  # read-only copy, NaN where the table has no row
    order: np.ndarray  # indices of known cells, best validation first


class SourceView:
    """The source task(s)' validation data of one table, and the target's name only."""

    def __init__(self, table: Table, sources: Sequence[str], *, target: str | None = None) -> None:
        sources = list(dict.fromkeys(sources))
        if not sources:
            raise ConfigError("a source view needs at least one source task")
        if target is not None and target in sources:
            raise ConfigError(
                f"source and target are both {target!r}: principles must come from another task "
                "(learning them from the target's own data is leakage); pass a different --source"
            )
        self.space: SearchSpace = table.space
        self.origin: str = table.source
        self.target = target
        self._tasks: dict[str, _Task] = {}
        for task in sources:
            table.check_task(task)
            v = np.array(table.valid[task], dtype=np.float64, copy=True)
            v.setflags(write=False)
            known = np.flatnonzero(~np.isnan(v))
            self._tasks[task] = _Task(v, known[np.argsort(-v[known], kind="stable")])

    def __repr__(self) -> str:
        return f"SourceView({', '.join(self.tasks)} of {self.origin!r}, target={self.target!r})"

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self._tasks)

    def _task(self, task: str) -> _Task:
        try:
            return self._tasks[task]
        except KeyError:
            raise DataError(
                f"task {task!r} is not in this source view (it holds {', '.join(self._tasks)}): "
                "only source tasks can be read before evaluation"
            ) from None

    def n_known(self, task: str) -> int:
        return int(self._task(task).order.size)

    def ranked(self, task: str) -> np.ndarray:
        """Indices of the task's known cells, best validation first."""
        return self._task(task).order

    def all_cells(self, task: str) -> list[tuple[Arch, float]]:
        t = self._task(task)
        return [(self.space.from_index(int(i)), float(t.valid[i])) for i in np.sort(t.order)]

    def top_cells(self, task: str, n: int) -> list[tuple[Arch, float]]:
        t = self._task(task)
        return [(self.space.from_index(int(i)), float(t.valid[i])) for i in t.order[: max(0, n)]]

    def describe(self) -> dict:
        """What this view hands over: its tasks with their row counts, and where they came from."""
        return {
            "tasks": {task: self.n_known(task) for task in self._tasks},
            "columns": "validation metric only",
            "table": self.origin,
            "target": self.target,
        }
