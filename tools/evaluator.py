"""Budget accounting: each unique architecture costs one evaluation; a repeat is free.

The `Evaluator` joins an executor, a ledger and a run id. It is the only way strategies and
agents evaluate anything, so the budget and the ledger can never disagree.

Failed candidates (out of memory, NaN loss, a builder error) are recorded with their reason.
With `count_failed=True` (the default) a failed architecture costs one evaluation like any other;
with False it is free. Either way it is never evaluated again (asking again returns its failed
record), it is never the best, and it is left out of `pairs()`, what proposers and analysts
compare; `seen()` includes it, so a strategy can avoid proposing it again.

Fidelities (epochs), "like with like": an architecture may have results at several fidelities
(successive halving trains it for more epochs at each rung it survives); it costs one evaluation
whatever its number of rungs. An architecture's *result* is its highest-fidelity evaluation; if
that one failed, the architecture counts as failed.

- `best()` compares results at the same fidelity only: among architectures whose result is at
  the highest fidelity any architecture reached, the one with the best `valid` (an architecture
  stopped at a lower rung lost a comparison at that rung, so it cannot be the best).
- `pairs()` hands proposers and analysts one value per architecture, all at one fidelity: the
  *comparison fidelity*, the fidelity at which the most architectures have an ok result (ties:
  the higher). With successive halving that is the first rung, which every candidate ran; with a
  single fidelity it is that one. Architectures without a result there are left out.
  `pairs(fidelity=F)` asks for another fidelity.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from .errors import BudgetExhausted, UnknownCell
from .executors import Executor, Metrics
from .ledger import Evaluation, Ledger
from .spaces import Arch

log = logging.getLogger(__name__)


def at_once(executor: Executor) -> int:
    """How many candidates `executor` runs at once: a cluster's `parallelism` (asked first: a
    `RayExecutor` passes its wrapped trainer's `concurrency` of 1 through), a trainer's
    `concurrency`, else 1."""
    for name in ("parallelism", "concurrency"):
        n = getattr(executor, name, None)
        if n is not None:
            return max(1, int(n))
    return 1


class Evaluator:
    def __init__(
        self, executor: Executor, ledger: Ledger, run_id: str, budget: int, *, count_failed: bool = True,
    ) -> None:
        self.executor = executor
        self.space = executor.space
        self.ledger = ledger
        self.run_id = run_id
        self.budget = budget
        self.count_failed = count_failed
        self._history: list[Evaluation] = []
        self._at: dict[tuple[str, int], Evaluation] = {}  # (arch, fidelity) -> evaluation
        self._result: dict[str, Evaluation] = {}  # arch -> its highest-fidelity evaluation (first-seen order)
        self._arch_of: dict[str, Arch] = {}
        for ev in ledger.evaluations(run_id):  # resume: what is finished stays finished
            self._add(ev, self.space.from_string(ev.arch))

    def _add(self, ev: Evaluation, arch: Arch) -> None:
        self._history.append(ev)
        self._at[(ev.arch, ev.fidelity)] = ev
        self._arch_of.setdefault(ev.arch, tuple(arch))
        old = self._result.get(ev.arch)
        if old is None or ev.fidelity >= old.fidelity:
            self._result[ev.arch] = ev

    @property
    def history(self) -> list[Evaluation]:
        """Every evaluation (all fidelities, failed ones too), oldest first: the run's record."""
        return list(self._history)

    def results(self) -> list[Evaluation]:
        """One evaluation per architecture (its highest fidelity), failed ones included."""
        return list(self._result.values())

    def failed(self) -> list[Evaluation]:
        return [e for e in self._result.values() if not e.ok]

    @property
    def used(self) -> int:
        """Budget spent: unique architectures (failed ones only when `count_failed`)."""
        return sum(1 for e in self._result.values() if e.ok or self.count_failed)

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.used)

    def seen(self) -> set[Arch]:
        """Every architecture evaluated (failed ones too): what a strategy must not propose again."""
        return set(self._arch_of.values())

    def is_failed(self, arch: Arch) -> bool:
        ev = self._result.get(self.space.to_string(arch))
        return ev is not None and not ev.ok

    def comparison_fidelity(self) -> int | None:
        counts = Counter(e.fidelity for e in self._history if e.ok and self._result[e.arch].ok)
        if not counts:
            return None
        return max(counts, key=lambda f: (counts[f], f))

    def pairs(self, fidelity: int | None = None) -> list[tuple[Arch, float]]:
        """(architecture, validation metric) at one fidelity, oldest first: what proposers read."""
        f = self.comparison_fidelity() if fidelity is None else fidelity
        out = []
        for key, result in self._result.items():
            ev = self._at.get((key, f)) if f is not None else None
            if result.ok and ev is not None and ev.ok:
                out.append((self._arch_of[key], ev.valid))
        return out

    def best(self) -> Evaluation | None:
        ok = [e for e in self._result.values() if e.ok]
        if not ok:
            return None
        top = max(e.fidelity for e in ok)
        return max((e for e in ok if e.fidelity == top), key=lambda e: e.valid)

    def evaluate(self, arch: Arch, *, proposed_by: str = "", round: int = 0, epochs: int | None = None) -> Evaluation:
        """Evaluate `arch` (at `epochs` when given: executors with fidelities only).

        A repeat is free: without `epochs` any earlier result of `arch` is returned; with it, the
        one at that fidelity. A failed architecture is never evaluated again. Only a new
        architecture needs budget left (a new fidelity of a known one is free).
        """
        key = self.space.to_string(arch)
        known = self._result.get(key)
        if known is not None:
            if not known.ok:
                return known
            if epochs is None:
                return known
            if (key, int(epochs)) in self._at:
                return self._at[(key, int(epochs))]
        elif self.remaining <= 0:
            raise BudgetExhausted(f"run {self.run_id} has spent its budget of {self.budget} evaluations")
        m: Metrics = self.executor.evaluate(arch) if epochs is None else self.executor.evaluate(arch, epochs=epochs)  # type: ignore[call-arg]
        return self.record(arch, m, proposed_by=proposed_by, round=round)

    def evaluate_many(
        self,
        archs: Iterable[Arch],
        *,
        epochs: int | None = None,
        proposed_by: str = "",
        round: int = 0,
        on_eval: Callable[[Evaluation], None] | None = None,
    ) -> list[Evaluation]:
        """Evaluate a batch: the one batch API (the search step, successive halving, a Ray cluster).

        The budget is checked first, for the whole batch: BudgetExhausted, and nothing evaluated,
        if the new architectures among `archs` need more evaluations than are left (the caller
        sizes its batch to `remaining`). What is already known at this fidelity (or failed) and
        repeats within `archs` are free and never run again.

        An executor that runs several candidates at once (`concurrency` or `parallelism` above 1,
        and `as_completed(archs, epochs)` yielding ``(index, Metrics)`` as each finishes: the
        training executor's threads, `RayExecutor`'s tasks) gets the pending ones together;
        any other evaluates them one by one. Either way each result is recorded in the ledger the
        moment it arrives, then passed to `on_eval` (progress; an exception there stops the batch,
        with every finished result kept and, on Ray, what is still running cancelled).

        Returns the evaluation of each item of `archs`, in order (a repeat gets its first one),
        leaving out only cells the executor has no result for (`UnknownCell`: a partial table, a
        cell over a limit) when it evaluates one at a time; such a cell costs nothing.
        """
        archs = [tuple(a) for a in archs]
        keys = [self.space.to_string(a) for a in archs]
        new = {k for k in keys if k not in self._result}
        if len(new) > self.remaining:
            raise BudgetExhausted(
                f"run {self.run_id} has {self.remaining} of {self.budget} evaluations left, {len(new)} new candidates asked"
            )
        todo = list({k: a for a, k in zip(archs, keys) if self._pending(k, epochs)}.values())
        ex = self.executor
        together = at_once(ex) > 1 and callable(getattr(ex, "as_completed", None))
        results: Iterable[tuple[int, Metrics]]
        if together and len(todo) > 1:
            results = ex.as_completed(todo, epochs=epochs)  # type: ignore[attr-defined]
        else:
            results = self._one_by_one(todo, epochs)
        for i, m in results:
            ev = self.record(todo[i], m, proposed_by=proposed_by, round=round)
            if on_eval is not None:
                on_eval(ev)
        return [self.evaluate(a, epochs=epochs) for a, k in zip(archs, keys) if not self._pending(k, epochs)]

    def _one_by_one(self, todo: list[Arch], epochs: int | None) -> Iterator[tuple[int, Metrics]]:
        for i, a in enumerate(todo):
            try:
                m = self.executor.evaluate(a) if epochs is None else self.executor.evaluate(a, epochs=epochs)  # type: ignore[call-arg]
            except UnknownCell as exc:
                log.info("no result for %s, skipped at no cost: %s", self.space.to_string(a), exc)
                continue
            yield i, m

    def _pending(self, key: str, epochs: int | None) -> bool:
        known = self._result.get(key)
        if known is None:
            return True
        return known.ok and epochs is not None and (key, int(epochs)) not in self._at

    def record(self, arch: Arch, m: Metrics, *, proposed_by: str = "", round: int = 0) -> Evaluation:
        """Record a result the executor produced (here or elsewhere) under the budget's accounting."""
        key = self.space.to_string(arch)
        ev = self.ledger.record(
            self.run_id, key, m.valid, m.test, cost=m.cost, wall_time=m.wall_time,
            proposed_by=proposed_by, round=round, status=getattr(m, "status", "ok"),
            reason=getattr(m, "reason", ""), fidelity=getattr(m, "fidelity", 0),
        )
        if ev.ok:
            log.debug("evaluated %s -> %.4f at fidelity %d (%s)", key, ev.valid, ev.fidelity, proposed_by)
        else:
            log.warning("candidate %s failed: %s", key, ev.reason)
        self._add(ev, tuple(arch))
        return ev
