"""Budget accounting: each unique architecture costs one evaluation; a repeat is free.

The `Evaluator` joins an executor, a ledger and a run id. It is the only way strategies and
agents evaluate anything, so the budget and the ledger can never disagree.
"""

from __future__ import annotations

import logging

from .errors import BudgetExhausted
from .executors import Executor
from .ledger import Evaluation, Ledger
from .spaces import Arch

log = logging.getLogger(__name__)


class Evaluator:
    def __init__(self, executor: Executor, ledger: Ledger, run_id: str, budget: int) -> None:
        self.executor = executor
        self.space = executor.space
        self.ledger = ledger
        self.run_id = run_id
        self.budget = budget
        self._history = ledger.evaluations(run_id)  # resume: what is finished stays finished
        self._by_arch = {e.arch: e for e in self._history}
        self._archs = [self.space.from_string(e.arch) for e in self._history]

    @property
    def history(self) -> list[Evaluation]:
        return list(self._history)

    @property
    def used(self) -> int:
        return len(self._history)

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.used)

    def pairs(self) -> list[tuple[Arch, float]]:
        """(architecture, validation metric) per evaluation, oldest first: what proposers read."""
        return [(a, e.valid) for a, e in zip(self._archs, self._history)]

    def best(self) -> Evaluation | None:
        return max(self._history, key=lambda e: e.valid, default=None)

    def evaluate(self, arch: Arch, *, proposed_by: str = "", round: int = 0) -> Evaluation:
        key = self.space.to_string(arch)
        if key in self._by_arch:
            return self._by_arch[key]
        if self.remaining <= 0:
            raise BudgetExhausted(f"run {self.run_id} has spent its budget of {self.budget} evaluations")
        m = self.executor.evaluate(arch)
        ev = self.ledger.record(
            self.run_id, key, m.valid, m.test, cost=m.cost, wall_time=m.wall_time,
            proposed_by=proposed_by, round=round,
        )
        log.debug("evaluated %s -> %.4f (%s)", key, m.valid, proposed_by)
        self._history.append(ev)
        self._archs.append(tuple(arch))
        self._by_arch[key] = ev
        return ev
