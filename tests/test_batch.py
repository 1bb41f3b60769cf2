"""The one batch API, `Evaluator.evaluate_many`: the budget checked for the whole batch, each
result recorded the moment the executor yields it, repeats free, cells without a result skipped
at no cost. (The same API on a Ray cluster: tests/test_ray.py; with real training:
tests/test_training.py; successive halving through it: tests/test_fidelity.py.)"""

from __future__ import annotations

import pytest
from archlore.tools.errors import BudgetExhausted, UnknownCell
from archlore.tools.evaluator import Evaluator, at_once
from archlore.tools.executors import Metrics
from archlore.tools.ledger import Ledger
from archlore.tools.spaces import Position, SearchSpace

SPACE = SearchSpace("toy", [Position("a", tuple("0123456789"))])


class Scored:
    """A known-score executor (score = the digit); `concurrency` > 1 runs a batch together and
    yields the results last-first (as a cluster may); cells in `missing` have no result."""

    space = SPACE
    task = "toy"

    def __init__(self, concurrency: int = 1, missing: frozenset[int] = frozenset()) -> None:
        self.concurrency = concurrency
        self.missing = missing
        self.calls: list[int] = []

    def evaluate(self, arch: tuple[int, ...], epochs: int | None = None) -> Metrics:
        if arch[0] in self.missing:
            raise UnknownCell(f"no row for {arch}")
        self.calls.append(arch[0])
        return Metrics(float(arch[0]), None, {}, 0.0, "ok", "", epochs or 0)

    def as_completed(self, archs, epochs=None):
        for i in reversed(range(len(archs))):
            yield i, self.evaluate(archs[i], epochs)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_budget_checked_for_the_batch_and_each_result_recorded_as_it_arrives(concurrency: int) -> None:
    ex = Scored(concurrency)
    ev = Evaluator(ex, Ledger(None), "b", budget=4)
    with pytest.raises(BudgetExhausted, match="4 of 4 evaluations left, 5 new"):
        ev.evaluate_many([(i,) for i in range(5)])
    assert ex.calls == [] and ev.ledger.evaluations("b") == []  # refused whole: nothing run
    seen: list[tuple[int, int]] = []
    got = ev.evaluate_many([(1,), (2,), (1,), (3,)], proposed_by="t",
                           on_eval=lambda e: seen.append((int(e.arch), len(ev.ledger.evaluations("b")))))
    # one call per distinct cell, each in the ledger before on_eval hears of it
    assert sorted(ex.calls) == [1, 2, 3] and [n for _, n in seen] == [1, 2, 3]
    assert [a for a, _ in seen] == ([1, 2, 3] if concurrency == 1 else [3, 2, 1])  # in the order they finished
    assert [e.arch for e in got] == ["1", "2", "1", "3"] and ev.used == 3  # in the order asked
    assert ev.evaluate_many([(3,), (2,)]) == [got[3], got[1]] and len(ex.calls) == 3  # repeats are free
    ev.evaluate_many([(4,)])
    assert ev.remaining == 0
    with pytest.raises(BudgetExhausted):
        ev.evaluate_many([(5,)])


def test_a_cell_without_a_result_is_skipped_at_no_cost() -> None:
    ev = Evaluator(Scored(missing=frozenset({2})), Ledger(None), "u", budget=3)
    got = ev.evaluate_many([(1,), (2,), (3,)])
    assert [e.arch for e in got] == ["1", "3"] and ev.used == 2 and ev.remaining == 1


def test_a_cluster_s_parallelism_wins_over_its_wrapped_trainer_s_concurrency() -> None:
    class Cluster:
        parallelism = 4

        def __getattr__(self, name):  # as RayExecutor: the wrapped trainer's attributes pass through
            return getattr(Scored(concurrency=1), name)

    assert at_once(Cluster()) == 4 and at_once(Scored(2)) == 2 and at_once(object()) == 1


def test_successive_halving_reports_each_rung_result_as_it_is_recorded() -> None:
    from archlore.tools.fidelity import successive_halving

    ev = Evaluator(Scored(concurrency=3), Ledger(None), "h", budget=9)
    heard: list[tuple[str, int, int]] = []
    res = successive_halving(ev, [(i,) for i in range(9)], min_epochs=1, max_epochs=9, eta=3,
                             on_eval=lambda e: heard.append((e.arch, e.fidelity, len(ev.ledger.evaluations("h")))))
    assert [n for *_, n in heard] == list(range(1, 14))  # 9 + 3 + 1 rung results, each heard once, once recorded
    assert [(a, f) for a, f, _ in heard[9:]] == [("6", 3), ("7", 3), ("8", 3), ("8", 9)]  # the top third climbs (yielded last-first)
    assert res.best.arch == "8" and res.best.fidelity == 9 and ev.used == 9
