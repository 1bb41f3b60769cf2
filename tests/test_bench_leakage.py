"""No leakage by construction: a spy table records every read of a target's metrics.

Every strategy (the baselines and `agent --llm none`) runs under every protocol on a table whose
columns are spies. While a strategy runs, every read of its target's validation or test values is
recorded, by cell; reading a column wholesale is recorded as such. The cells the strategy evaluated
are recorded independently, at the `Evaluator` (the one door every strategy evaluates through).
The test asserts that while a strategy runs, its target is read only at cells it evaluated, and
never wholesale.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from archlore.benchmarks import LeakageError
from archlore.benchmarks import protocols as P
from archlore.benchmarks.harness import STRATEGIES, get_strategy, make_request, run_bench, run_strategy
from archlore.tools.evaluator import Evaluator
from archlore.tools.spaces import Position, SearchSpace
from archlore.tools.tables import Table

DATA = Path(os.environ.get("ARCHLORE_DATA") or Path(__file__).resolve().parents[1] / "../shared/data").resolve()
HAS_DATA = (DATA / "nb201" / "nb201_all.csv").is_file() and (DATA / "transnas101" / "tnb101_micro_val.csv").is_file()
needs_data = pytest.mark.skipif(not HAS_DATA, reason=f"benchmark data not found at {DATA} (set ARCHLORE_DATA)")

ALL = ["random", "rea", "freq-prior", "freq-prior-unpadded", "copy-top", "rea-seeded", "agent"]
WHOLE = -1  # a wholesale read


class Spy:
    """What the target columns saw while a strategy ran, and what the strategy evaluated."""

    def __init__(self) -> None:
        self.target: str | None = None  # armed for this target while a strategy runs
        self.reads: list[tuple[str, str, int]] = []  # (task, kind, cell or WHOLE)
        self.evaluated: list[tuple] = []

    def read(self, task: str, kind: str, cell: int) -> None:
        if self.target is not None and task == self.target:
            self.reads.append((task, kind, cell))


class SpyColumn:
    """A metric column that tells the spy about every read; otherwise behaves like the array."""

    def __init__(self, values: np.ndarray, spy: Spy, task: str, kind: str) -> None:
        self._v, self._spy, self._task, self._kind = values, spy, task, kind

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)):
            self._spy.read(self._task, self._kind, int(i))
        else:
            self._spy.read(self._task, self._kind, WHOLE)
        return self._v[i]

    def __array__(self, dtype=None, copy=None):
        self._spy.read(self._task, self._kind, WHOLE)
        return np.array(self._v, dtype=dtype, copy=True)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        self._spy.read(self._task, self._kind, WHOLE)
        inputs = [np.asarray(x._v) if isinstance(x, SpyColumn) else x for x in inputs]
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __len__(self):
        self._spy.read(self._task, self._kind, WHOLE)
        return len(self._v)

    def __iter__(self):
        self._spy.read(self._task, self._kind, WHOLE)
        return iter(self._v)


def spy_table(table: Table, spy: Spy) -> Table:
    return Table(
        table.space, f"spy of {table.source}",
        {t: SpyColumn(v, spy, t, "valid") for t, v in table.valid.items()},  # type: ignore[misc]
        {t: SpyColumn(v, spy, t, "test") for t, v in table.test.items()},  # type: ignore[misc]
        dict(table.cost),
    )


@pytest.fixture
def spy(monkeypatch):
    """Arm the spy around every strategy's run and record evaluations at the Evaluator."""
    s = Spy()
    original = Evaluator.evaluate

    def evaluate(self, arch, **kw):
        ev = original(self, arch, **kw)
        s.evaluated.append((self.executor.task, self.space.index(tuple(arch))))
        return ev

    monkeypatch.setattr(Evaluator, "evaluate", evaluate)
    for name in ALL:
        info = get_strategy(name)

        def armed(req, _fn=info.fn):
            s.target, s.evaluated = req.target, []
            try:
                out = _fn(req)
            finally:
                s.target = None
            _check(s, req)
            return out

        monkeypatch.setitem(STRATEGIES, name, replace(info, fn=armed))
    return s


def _check(s: Spy, req) -> None:
    wholesale = [r for r in s.reads if r[2] == WHOLE]
    assert not wholesale, f"{req.run_id}: the target was read wholesale: {wholesale[:3]}"
    evaluated = {cell for task, cell in s.evaluated if task == req.target}
    peeked = sorted({cell for _, _, cell in s.reads} - evaluated)
    assert not peeked, f"{req.run_id}: target metrics of unevaluated cells were read: {peeked[:10]}"
    assert evaluated and len(evaluated) <= req.budget
    s.reads.clear()


TOY_YAML = "name: toy4\npositions:\n" + "".join(f"  p{i}: [a, b, c, d]\n" for i in range(4))


def _toy() -> Table:
    space = SearchSpace("toy4", [Position(f"p{i}", ("a", "b", "c", "d")) for i in range(4)])
    rng = np.random.default_rng(0)
    archs = np.array(list(space.all_archs()))
    base = archs @ np.array([1.0, 0.5, -0.5, 0.2])
    a, b = base + rng.normal(0, 0.3, len(archs)), base + rng.normal(0, 0.3, len(archs))
    return Table(space, "toy4", {"colA": a, "colB": b}, {"colB": b + rng.normal(0, 0.1, len(archs))})


def test_the_spy_sees_a_wholesale_read_and_the_guard_stops_it(spy):
    """Negative controls: the spy is not blind, and the metered column refuses bulk reads."""
    t = spy_table(_toy(), spy)
    spy.target = "colB"
    np.nanmax(t.valid["colB"])
    assert spy.reads and spy.reads[-1][2] == WHOLE
    spy.target, spy.reads = None, []
    req = make_request(t, P.custom("toy4.yaml", budget=8), "colB", "colA", 0)
    col = req.sealed_table().valid["colB"]
    for bulk in (np.asarray, np.nanmax, np.argsort, list, len):
        with pytest.raises(LeakageError):
            bulk(col)
    with pytest.raises(LeakageError):
        col[np.array([1, 2])]
    with pytest.raises(LeakageError, match="before the cell was evaluated"):
        req.sealed_table().test["colB"][3]
    assert "colB" not in req.view.tasks and req.view.tasks == ("colA",)


def test_a_peek_is_charged_as_an_evaluation(tmp_path):
    """Reading a target value by the sealed table's column is an evaluation: logged, scored, budgeted."""
    t = _toy()
    req = make_request(t, P.custom("toy4.yaml", budget=4), "colB", None, 0)
    col = req.sealed_table().valid["colB"]
    for i in (7, 7, 9, 11, 13):
        col[i]
    assert req.access.evaluated == [7, 9, 11, 13]
    from archlore.tools.errors import BudgetExhausted

    with pytest.raises(BudgetExhausted):
        col[15]


@pytest.mark.parametrize("protocol", ["custom", "curves-custom"])
def test_no_strategy_reads_an_unevaluated_target_cell_on_a_user_space(spy, tmp_path, protocol):
    t = spy_table(_toy(), spy)
    (tmp_path / "toy4.yaml").write_text(TOY_YAML)  # the agents' runner loads the space by its path
    kw = {"budgets": [4, 12]} if protocol == "curves-custom" else {"budget": 12}
    res = run_bench(protocol.split("-")[0], ALL, targets=["colB", "colA"], sources=["colA", "colB"],
                    seeds=2, out=tmp_path, table=t, space=str(tmp_path / "toy4.yaml"), options={"llm": "none"}, **kw)
    assert {r["strategy"] for r in res["rows"]} == set(ALL)


@needs_data
@pytest.mark.parametrize("protocol", ["lapt-nb201", "lapt-tnb101", "curves"])
def test_no_strategy_reads_an_unevaluated_target_cell(spy, tmp_path, protocol):
    from archlore.tools.tables import load_nb201, load_tnb101

    if protocol == "lapt-tnb101":
        table, targets, space, budgets = load_tnb101(str(DATA)), ["room_layout", "autoencoder"], None, None
    else:
        table, targets, space, budgets = load_nb201(str(DATA)), ["cifar10", "cifar100"], None, None
        if protocol == "curves":
            space, budgets = "nb201", [5, 25]
    res = run_bench(protocol, ALL, targets=targets, sources=None, seeds=2, out=tmp_path,
                    table=spy_table(table, spy), space=space, budgets=budgets, options={"llm": "none"})
    assert {r["strategy"] for r in res["rows"]} == set(ALL)
    assert all(r["seeds"] == 2 for r in res["rows"])


def test_the_request_holds_no_table():
    """A strategy's request has the view, the sealed access and settings; no field is a Table."""
    t = _toy()
    req = make_request(t, P.custom("toy4.yaml", budget=8), "colB", "colA", 0)
    from dataclasses import fields

    assert not any(isinstance(getattr(req, f.name), Table) for f in fields(req))
    sealed = req.sealed_table()
    assert set(sealed.valid) == {"colA", "colB"} and set(sealed.test) == {"colB"}
    assert isinstance(sealed.valid["colA"], np.ndarray) and not sealed.valid["colA"].flags.writeable
    # the cells a baseline evaluates are exactly what the access logged
    cells = run_strategy("copy-top", req)
    assert cells == np.argsort(-t.valid["colA"], kind="stable")[:8].tolist()
