"""Cost limits: parsing, cutting a table, an executor behind limits, and a constrained NB201 run."""

from __future__ import annotations

import numpy as np
import pytest
from archlore.agents.context import RunSettings
from archlore.agents.runner import execute
from archlore.tools.constraints import (
    ConstrainedExecutor,
    OverLimit,
    TableCost,
    broken,
    constrain_table,
    parse_limit,
    parse_limits,
)
from archlore.tools.errors import ConfigError, DataError, UnknownCell
from archlore.tools.executors import Metrics, TabularExecutor
from archlore.tools.ledger import Ledger
from archlore.tools.spaces import Position, SearchSpace
from archlore.tools.tables import Table

from tests.conftest import needs_data


def _table() -> Table:
    space = SearchSpace("toy", [Position(f"p{i}", ("a", "b", "c")) for i in range(3)])
    n = space.size()
    archs = [space.from_index(i) for i in range(n)]
    valid = np.array([sum(a) + 0.1 * a[0] for a in archs], dtype=float)
    cost = {"params": np.array([1000.0 * (1 + sum(a)) for a in archs]), "flops": np.array([1e6 * (1 + a[0]) for a in archs])}
    return Table(space, "toy table", {"acc": valid}, {}, cost)


@pytest.mark.parametrize("text,expected", [
    ("params=1.0M", ("params", 1e6)), ("flops=50M", ("flops", 5e7)), ("latency=8.5", ("latency", 8.5)),
    ("flops<=2G", ("flops", 2e9)), ("params = 300k", ("params", 3e5)),
])
def test_parse_limit(text, expected):
    name, value = parse_limit(text)
    assert name == expected[0] and value == pytest.approx(expected[1])


@pytest.mark.parametrize("text", ["params", "params=", "=3", "params=-1", "params=0", "params=1T", "params=1M=2"])
def test_parse_limit_refuses_bad_text(text):
    with pytest.raises(ConfigError):
        parse_limit(text)


def test_parse_limits_refuses_a_repeat():
    with pytest.raises(ConfigError, match="twice"):
        parse_limits(["params=1M", "params=2M"])


def test_constrain_table_cuts_exactly_the_cells_over_a_limit():
    t = _table()
    limits = {"params": 4000.0, "flops": 2e6}
    c = constrain_table(t, limits)
    for i in range(t.space.size()):
        cost = TableCost(t).cost_of(t.space.from_index(i))
        assert c.is_known("acc", i) == (not broken(cost, limits))
    assert constrain_table(c, limits) is c  # cutting again changes nothing
    with pytest.raises(DataError, match="raise a limit"):
        constrain_table(t, {"params": 10.0})
    with pytest.raises(ConfigError, match="no cost 'latency'"):
        constrain_table(t, {"latency": 1.0})


def test_constrained_executor_refuses_over_limit_cells_unevaluated():
    t = _table()
    calls = []

    class Counting(TabularExecutor):
        def evaluate(self, arch):
            calls.append(arch)
            return super().evaluate(arch)

    ex = ConstrainedExecutor(Counting(t, "acc"), TableCost(t), {"params": 3000.0})
    with pytest.raises(OverLimit) as err:
        ex.evaluate((2, 2, 2))
    assert isinstance(err.value, UnknownCell) and calls == []
    m = ex.evaluate((0, 1, 0))
    assert isinstance(m, Metrics) and m.cost["params"] == 2000.0
    known = {t.space.from_index(int(i)) for i in ex.known()}
    assert known == {a for a in t.space.all_archs() if sum(a) <= 2}


def test_costly_cost_functions_are_asked_locally_not_over_the_whole_space():
    t = _table()
    asked = []

    class Slow:  # like the training executor's cost_of: a model built per call
        def cost_of(self, arch):
            asked.append(arch)
            return TableCost(t).cost_of(arch)

    ex = ConstrainedExecutor(TabularExecutor(t, "acc"), Slow(), {"params": 3000.0}, sample=0)
    with pytest.raises(OverLimit):
        ex.evaluate((1, 1, 1))
    asked.clear()
    near = {t.space.from_index(int(i)) for i in ex.known()}
    # the feasible cells one change away from the refused (1, 1, 1), found without enumerating the space
    assert near == {(0, 1, 1), (1, 0, 1), (1, 1, 0)} and len(asked) == 6


@needs_data
def test_constrained_nb201_run_never_evaluates_a_cell_over_a_limit(data_dir):
    from archlore.tools.tables import load_nb201

    full = load_nb201(str(data_dir))
    limits = {"flops": float(np.nanmax(full.cost["flops"])) / 2, "latency": float(np.nanmedian(full.cost["latency"]))}
    settings = RunSettings(run_id="c", space="nb201", target="cifar100", source="cifar10", budget=30,
                           data=str(data_dir), memory="off", limits=limits)
    ledger = Ledger(None)
    try:
        rec = execute(settings, ledger=ledger, use_llm_spec=False)
    finally:
        ledger.close()
    assert rec["used"] == 30 and rec["limits"] == limits
    for e in rec["evaluations"]:
        i = full.space.index(full.space.from_string(e["arch"]))
        assert full.cost["flops"][i] <= limits["flops"] and full.cost["latency"][i] <= limits["latency"]
        assert e["cost"]["flops"] == full.cost["flops"][i]
    # the best cell found is no better than the best feasible cell
    feasible = constrain_table(full, limits)
    assert rec["best"]["valid"] <= np.nanmax(feasible.valid["cifar100"])


def test_evidence_carries_cost_effects_per_choice_for_the_analyst():
    from archlore.agents.principles import render_evidence
    from archlore.tools.evidence import Evidence

    t = _table()
    cells = [(t.space.from_index(i), float(t.valid["acc"][i])) for i in range(t.space.size())]
    costs = [TableCost(t).cost_of(a) for a, _ in cells]
    ev = Evidence.compute(t.space, cells, label="x", origin="run", task="acc", n_top=5, shown=cells[:3])
    ev = ev.with_costs(t.space, cells, costs, ["flops"])
    # flops depend on p0 only: c at p0 costs more than the others, p1 and p2 cost nothing extra
    by = {(c.position, c.choice): c for c in ev.costs}
    assert by[("p0", "c")].share > 0.4 and by[("p0", "a")].share < 0 and abs(by[("p1", "c")].share) < 1e-9
    assert by[("p0", "c")].metric_delta > 0
    assert Evidence.from_json(ev.to_json()) == ev
    text = render_evidence(ev.stats, ev.costs)
    assert "costs (mean over" in text and "c at p0 costs +" in text


@needs_data
def test_constrained_benchmark_copy_top_follows_the_source_under_the_limits(data_dir):
    from archlore.benchmarks import constrained as C
    from archlore.benchmarks.harness import make_request
    from archlore.tools.tables import load_nb201

    full = load_nb201(str(data_dir))
    limits = C.nb201_limits(full)
    table = constrain_table(full, limits)
    feasible = table.known("cifar10")
    by_source = feasible[np.argsort(-table.valid["cifar10"][feasible], kind="stable")]
    req = make_request(table, C.protocol(), "cifar100", "cifar10", 1000, options={"pareto": False})
    cells = C.run_strategy("copy-top", req)
    assert cells == [int(i) for i in by_source[:50]]  # the source's best feasible cells, in order
    # Pareto: the source's (accuracy, FLOPs) front over the feasible cells first, best source accuracy first
    acc, flops = table.valid["cifar10"][feasible], table.cost["flops"][feasible]
    on_front = [int(feasible[j]) for j in range(feasible.size)
                if not np.any((acc >= acc[j]) & (flops <= flops[j]) & ((acc > acc[j]) | (flops < flops[j])))]
    req = make_request(table, C.protocol(), "cifar100", "cifar10", 1000, options={"pareto": True})
    cells = C.run_strategy("copy-top", req)
    assert len(cells) == 50 and set(cells[: len(on_front)]) == set(on_front)
    assert cells[: len(on_front)] == sorted(on_front, key=lambda i: -table.valid["cifar10"][i])
    assert all(full.cost["flops"][i] <= limits["flops"] and full.cost["latency"][i] <= limits["latency"] for i in cells)


def test_constrained_executor_passes_the_fidelity_on():
    t = _table()
    seen = []

    class ByEpochs(TabularExecutor):  # a table whose value depends on the epochs asked for, like training
        def evaluate(self, arch, epochs=None):
            seen.append(epochs)
            m = super().evaluate(arch)
            return Metrics(m.valid + (epochs or 0), m.test, fidelity=epochs or 0)

    ex = ConstrainedExecutor(ByEpochs(t, "acc"), TableCost(t), {"params": 3000.0})
    assert ex.evaluate((0, 1, 0), epochs=3).fidelity == 3 and ex.evaluate((0, 1, 0)).fidelity == 0
    assert seen == [3, None]
