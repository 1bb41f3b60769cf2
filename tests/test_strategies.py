import pytest

from archlore.tools.errors import BudgetExhausted, ConfigError
from archlore.tools.evaluator import Evaluator
from archlore.tools.evidence import all_cells, frequency_filter
from archlore.tools.executors import TabularExecutor
from archlore.tools.ledger import Ledger
from archlore.tools.spaces import SpaceFilter
from archlore.tools.strategies import REA, RandomSearch, run_search, widen_to_full
from archlore.tools.tables import load_nb201

from .conftest import needs_data


def _run(table, proposer, seed, flt=None, n=20, ledger=None, run_id="r"):
    ev = Evaluator(TabularExecutor(table, "cifar10"), ledger or Ledger(None), run_id, n)
    out = run_search(proposer, ev, flt, n, seed=seed)
    return ev, out


@needs_data
@pytest.mark.parametrize("proposer", [RandomSearch(), REA(5, 2)])
def test_reproducible_by_seed(data_dir, proposer):
    t = load_nb201(str(data_dir))
    a = [e.arch for e in _run(t, proposer, 3)[0].history]
    b = [e.arch for e in _run(t, proposer, 3)[0].history]
    c = [e.arch for e in _run(t, proposer, 4)[0].history]
    assert a == b and a != c and len(set(a)) == 20


@needs_data
def test_exhausted_filter_stops_or_widens(data_dir):
    t = load_nb201(str(data_dir))
    space = t.space
    flt = SpaceFilter(((3, 1),) + ((3,),) * 5)
    ev, out = _run(t, REA(5, 2), 0, flt)
    assert out.stopped == "exhausted" and out.evaluated == 2 and ev.used == 2
    ev = Evaluator(TabularExecutor(t, "cifar10"), Ledger(None), "w", 10)
    out = run_search(REA(5, 2), ev, flt, 10, seed=0, widen=widen_to_full(space))
    assert out.evaluated == 10 and out.filter == space.full_filter()
    assert len({e.arch for e in ev.history}) == 10


@needs_data
def test_budget_and_repeats(data_dir, tmp_path):
    t = load_nb201(str(data_dir))
    ledger = Ledger(tmp_path / "l.db")
    ev = Evaluator(TabularExecutor(t, "cifar10"), ledger, "r", 2)
    a = (3, 3, 3, 3, 3, 3)
    first = ev.evaluate(a)
    assert ev.evaluate(a) == first and ev.used == 1  # a repeat costs nothing
    ev.evaluate((1, 3, 3, 3, 3, 3))
    with pytest.raises(BudgetExhausted):
        ev.evaluate((2, 3, 3, 3, 3, 3))
    # resume from the file: finished evaluations are kept
    again = Evaluator(TabularExecutor(t, "cifar10"), Ledger(tmp_path / "l.db"), "r", 2)
    assert [e.arch for e in again.history] == [e.arch for e in ev.history]


@needs_data
def test_frequency_prior_reaches_top_fast(data_dir):
    t = load_nb201(str(data_dir))
    flt = frequency_filter(t.space, all_cells(t, "cifar100"), k=2, top_n=50)
    assert flt.size() == 64
    thr = t.threshold("cifar10", 16)
    hits = 0
    for seed in range(30):
        ev, _ = _run(t, REA(5, 2), seed, flt)
        hits += max(e.valid for e in ev.history) >= thr
    assert hits >= 25


def test_rea_config_checked():
    with pytest.raises(ConfigError):
        REA(population=2, tournament=3)
