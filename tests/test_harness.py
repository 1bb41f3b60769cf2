import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import archlore.benchmarks as bench
from archlore.benchmarks import protocols as P
from archlore.benchmarks.harness import (
    STRATEGIES,
    StrategyRequest,
    get_strategy,
    register_strategy,
    run_bench,
    run_strategy,
)
from archlore.tools.errors import ArchloreError, ConfigError, DataError
from archlore.tools.ledger import Evaluation
from archlore.tools.spaces import Position, SearchSpace
from archlore.tools.tables import Table

DATA = Path(os.environ.get("ARCHLORE_DATA") or Path(__file__).resolve().parents[1] / "../shared/data").resolve()
HAS_DATA = (DATA / "nb201" / "nb201_all.csv").is_file() and (DATA / "transnas101" / "tnb101_micro_val.csv").is_file()
needs_data = pytest.mark.skipif(not HAS_DATA, reason=f"benchmark data not found at {DATA} (set ARCHLORE_DATA)")

NB201_FIELDS = {"mean_evals_to_top", "p_hit", "test_at_stop", "test_at_budget"}
TNB101_FIELDS = {"mean_percentile", "p_top1"}
KEYS = {"strategy", "space", "target", "source", "seeds"}


def _toy_table() -> Table:
    """A 4x4x4 space whose metric rewards high choice ids; two tasks with different tastes."""
    space = SearchSpace("toy", [Position(f"p{i}", ("a", "b", "c", "d")) for i in range(3)])
    archs = list(space.all_archs())
    up = np.array([sum(a) for a in archs], dtype=float)
    down = np.array([sum(3 - c for c in a) for a in archs], dtype=float)
    return Table(space, "toy", {"up": up, "down": down}, {"up": up + 0.5, "down": down + 0.5})


def _req(table, strategy_target="up", source=None, seed=0, budget=12) -> StrategyRequest:
    return StrategyRequest(table, "toy", strategy_target, source, seed, budget, 4, 2, 2, 8, {})


def _metrics(rows):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


# -- registry (no data needed) ----------------------------------------------------------------
def test_builtins_registered():
    assert {"random", "rea", "freq-prior"} <= set(STRATEGIES)
    assert STRATEGIES["freq-prior"][1] is True and STRATEGIES["rea"][1] is False


@pytest.mark.parametrize("name", ["random", "rea", "freq-prior"])
def test_builtin_deterministic_per_seed(name):
    t = _toy_table()
    src = "down" if name == "freq-prior" else None
    a = [e.arch for e in run_strategy(name, _req(t, source=src, seed=1))]
    b = [e.arch for e in run_strategy(name, _req(t, source=src, seed=1))]
    c = [e.arch for e in run_strategy(name, _req(t, source=src, seed=2))]
    assert a == b and a != c and len(a) == len(set(a)) == 12


def test_freq_prior_source_equal_target_is_an_error():
    with pytest.raises(ConfigError, match="source and target"):
        run_strategy("freq-prior", _req(_toy_table(), "up", source="up"))


def test_freq_prior_needs_a_source():
    with pytest.raises(ConfigError, match="needs a source"):
        run_strategy("freq-prior", _req(_toy_table(), "up", source=None))


def test_unknown_strategy_is_an_error():
    with pytest.raises(ConfigError, match="unknown strategy 'no-such-thing'.*rea"):
        get_strategy("no-such-thing")
    with pytest.raises(ConfigError, match="unknown strategy"):
        get_strategy("../evil")


def test_register_strategy_and_contract(monkeypatch):
    monkeypatch.delitem(STRATEGIES, "toy-first", raising=False)

    def first(req):  # evaluates the first `budget` cells of the table
        return [Evaluation(req.run_id, i, str(i), float(req.table.valid[req.target][i]), None) for i in range(req.budget)]

    register_strategy("toy-first", first, needs_source=False)
    try:
        assert len(run_strategy("toy-first", _req(_toy_table()))) == 12
        register_strategy("toy-first", lambda req: first(req) + first(req), needs_source=False)
        with pytest.raises(ArchloreError, match="budget"):
            run_strategy("toy-first", _req(_toy_table()))
        register_strategy("toy-first", lambda req: [], needs_source=False)
        with pytest.raises(ArchloreError, match="no evaluations"):
            run_strategy("toy-first", _req(_toy_table()))
    finally:
        STRATEGIES.pop("toy-first", None)
    with pytest.raises(ConfigError, match="invalid"):
        register_strategy("Bad Name", first, needs_source=False)


_PLUGIN = '''
from archlore.benchmarks.harness import register_strategy, random_strategy

def toy(req):
    return random_strategy(req)

register_strategy("toy-plugin", toy, needs_source=True)
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on archlore.benchmarks' path, as if a plugin module were installed there."""
    monkeypatch.setattr(bench, "__path__", [*bench.__path__, str(tmp_path)])
    for mod in ("archlore.benchmarks.strategies_toy_plugin", "archlore.benchmarks.strategies_toy_broken"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    yield tmp_path
    STRATEGIES.pop("toy-plugin", None)
    STRATEGIES.pop("toy-broken", None)


def test_plugin_hook_imports_and_registers(plugin_dir):
    (plugin_dir / "strategies_toy_plugin.py").write_text(_PLUGIN)
    assert "toy-plugin" not in STRATEGIES
    fn, needs_source = get_strategy("toy-plugin")
    assert needs_source and STRATEGIES["toy-plugin"] == (fn, True)
    assert len(run_strategy("toy-plugin", _req(_toy_table(), source="down"))) == 12


def test_plugin_hook_reports_a_missing_dependency_and_a_silent_module(plugin_dir):
    (plugin_dir / "strategies_toy_broken.py").write_text("import archlore_no_such_dependency\n")
    with pytest.raises(ConfigError, match="archlore_no_such_dependency"):
        get_strategy("toy-broken")
    (plugin_dir / "strategies_toy_broken.py").write_text("X = 1\n")
    sys.modules.pop("archlore.benchmarks.strategies_toy_broken", None)
    with pytest.raises(ConfigError, match="did not register"):
        get_strategy("toy-broken")


# -- scoring (no data needed) -----------------------------------------------------------------
class _E:
    def __init__(self, valid, test=None):
        self.valid, self.test = valid, test


def test_score_top_hit():
    evals = [_E(1, 10), _E(3, 30), _E(2, 20), _E(5, 50), _E(4, 40)]
    s = P.score_top_hit(evals, threshold=5, budget=5)
    assert (s.evals_to_top, s.hit, s.test_at_stop, s.test_at_budget) == (4, True, 50, 50)
    s = P.score_top_hit(evals, threshold=6, budget=20)
    assert (s.evals_to_top, s.hit, s.test_at_stop, s.test_at_budget) == (20, False, 50, 50)
    s = P.score_top_hit(evals, threshold=3, budget=5)
    assert (s.evals_to_top, s.test_at_stop, s.test_at_budget) == (2, 30, 50)
    agg = P.aggregate_top_hit([P.score_top_hit(evals, 5, 5), P.score_top_hit(evals, 6, 5)])
    assert agg["mean_evals_to_top"] == 4.5 and agg["p_hit"] == 0.5


def test_curves_and_percentile_on_a_toy_table():
    t = _toy_table()
    evals = [_E(0.0, 0.5), _E(9.0, 9.5), _E(3.0, 3.5)]
    assert P.score_percentile(evals, t, "up") == t.percentile("up", 9.0)
    c = P.score_curve(evals, t, "up", [1, 2, 10], P.CurveScale.of(t, "up"))
    assert c["valid_regret"] == [9.0, 0.0, 0.0]
    assert c["valid_percentile"][0] == pytest.approx(100 / 64) and c["test_percentile"][1] == 100.0


def test_unknown_protocol_and_bad_budgets(tmp_path):
    with pytest.raises(ConfigError, match="unknown protocol 'nope'.*lapt-nb201"):
        run_bench("nope", ["rea"], targets=None, sources=None, seeds=1, out=tmp_path, data=None)
    with pytest.raises(ConfigError, match="curves"):
        P.get_protocol("lapt-nb201", budgets=[10])
    with pytest.raises(ConfigError, match="positive"):
        P.get_protocol("curves", budgets=[0, 10])


def test_missing_data_dir_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="--data"):
        run_bench("lapt-nb201", ["rea"], targets=None, sources=None, seeds=1, out=tmp_path, data=tmp_path / "absent")


# -- protocols on the real tables -------------------------------------------------------------
@needs_data
def test_nb201_protocol_rows_and_files(tmp_path):
    seen = []
    res = run_bench(
        "lapt-nb201", ["rea", "freq-prior"], targets=["cifar10", "cifar100"], sources=None, seeds=4,
        out=tmp_path / "p1.json", data=DATA, options={"llm": "none"}, progress=seen.append,
    )
    rows = res["rows"]
    # rea: one row per target; freq-prior: each other dataset as source
    assert [(r["strategy"], r["target"], r["source"]) for r in rows] == [
        ("rea", "cifar10", None), ("rea", "cifar100", None),
        ("freq-prior", "cifar10", "cifar100"), ("freq-prior", "cifar10", "imagenet16-120"),
        ("freq-prior", "cifar100", "cifar10"), ("freq-prior", "cifar100", "imagenet16-120"),
    ]
    for r in rows:
        assert KEYS | NB201_FIELDS <= set(r) and r["space"] == "nb201" and r["seeds"] == 4 and r["llm"] == "none"
        assert 1 <= r["mean_evals_to_top"] <= 20 and 0 <= r["p_hit"] <= 1
    assert len(seen) == len(rows)
    s = res["settings"]
    assert (s["budget"], s["population"], s["tournament"], s["k"], s["top_n"]) == (20, 5, 2, 2, 50)
    assert s["thresholds"]["cifar10"] == pytest.approx(91.418)
    payload = json.loads((tmp_path / "p1.json").read_text())
    assert payload["protocol"] == "lapt-nb201" and _metrics(payload["rows"]) == _metrics(rows)
    assert "| freq-prior | cifar10 | cifar100 |" in (tmp_path / "p1.md").read_text()
    assert (tmp_path / "p1.png").read_bytes()[:4] == b"\x89PNG"


@needs_data
def test_tnb101_protocol_rows(tmp_path):
    res = run_bench(
        "lapt-tnb101", ["random", "freq-prior"], targets=["class_scene", "normal"], sources=None, seeds=3,
        out=tmp_path, data=DATA,
    )
    assert res["files"]["json"] == str(tmp_path / "lapt-tnb101.json")
    assert [(r["strategy"], r["target"], r["source"]) for r in res["rows"]] == [
        ("random", "class_scene", None), ("random", "normal", None),
        ("freq-prior", "class_scene", "jigsaw"), ("freq-prior", "normal", "jigsaw"),
    ]
    for r in res["rows"]:
        assert KEYS | TNB101_FIELDS <= set(r) and r["space"] == "tnb101" and 0 <= r["mean_percentile"] <= 100
    assert res["settings"]["budget"] == 50 and res["settings"]["k"] == 3
    for ext in ("json", "md", "png"):
        assert (tmp_path / f"lapt-tnb101.{ext}").stat().st_size > 0


@needs_data
def test_protocol_deterministic_per_seed(tmp_path):
    kw = dict(targets=["imagenet16-120"], sources=["cifar10"], seeds=5, data=DATA)
    a = run_bench("lapt-nb201", ["random", "rea", "freq-prior"], out=tmp_path / "a.json", **kw)
    b = run_bench("lapt-nb201", ["random", "rea", "freq-prior"], out=tmp_path / "b.json", **kw)
    assert _metrics(a["rows"]) == _metrics(b["rows"])
    c = run_bench("lapt-nb201", ["rea"], out=tmp_path / "c.json", **{**kw, "seeds": 6})
    assert _metrics(c["rows"]) != _metrics(a["rows"][1:2])


@needs_data
def test_curves_rows(tmp_path):
    res = run_bench(
        "curves", ["rea", "freq-prior"], targets=["cifar10"], sources=["cifar100"], seeds=2,
        out=tmp_path, data=DATA, budgets=[5, 10, 80],
    )
    assert res["files"]["json"].endswith("curves-nb201.json") and Path(res["files"]["png"]).is_file()
    for r in res["rows"]:
        assert r["budgets"] == [5, 10, 80] and len(r["valid_percentile"]) == 3 and len(r["test_regret"]) == 3
        assert r["valid_percentile"] == sorted(r["valid_percentile"])  # best-so-far never drops
        assert r["valid_regret"] == sorted(r["valid_regret"], reverse=True)
    tnb = run_bench("curves", ["rea"], targets=["normal"], sources=None, seeds=2, out=tmp_path, data=DATA,
                    space="tnb101", budgets=[10, 20])
    assert tnb["rows"][0]["test_percentile"] is None and tnb["settings"]["population"] == 10


@needs_data
def test_bad_names_are_config_errors(tmp_path):
    kw = dict(sources=None, seeds=1, out=tmp_path, data=DATA)
    with pytest.raises(ConfigError, match="unknown target 'cifar11'.*cifar10"):
        run_bench("lapt-nb201", ["rea"], targets=["cifar11"], **kw)
    with pytest.raises(ConfigError, match="unknown source"):
        run_bench("lapt-nb201", ["freq-prior"], targets=None, **{**kw, "sources": ["jigsaw"]})
    with pytest.raises(ConfigError, match="other --sources"):
        run_bench("lapt-nb201", ["freq-prior"], targets=["cifar10"], **{**kw, "sources": ["cifar10"]})
    with pytest.raises(ConfigError, match="unknown strategy"):
        run_bench("lapt-nb201", ["rea", "nope"], targets=None, **kw)
    with pytest.raises(ConfigError, match="drop --space"):
        run_bench("lapt-nb201", ["rea"], targets=None, space="tnb101", **kw)


@needs_data
def test_plugin_strategy_runs_in_a_protocol(plugin_dir, tmp_path):
    (plugin_dir / "strategies_toy_plugin.py").write_text(_PLUGIN)
    res = run_bench("lapt-nb201", ["toy-plugin"], targets=["cifar100"], sources=None, seeds=2, out=tmp_path, data=DATA)
    assert [(r["strategy"], r["source"]) for r in res["rows"]] == [("toy-plugin", "cifar10"), ("toy-plugin", "imagenet16-120")]
