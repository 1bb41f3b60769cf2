"""The harness: registry and plugin contract, the baselines' behaviour on toy tables, and the
protocols on the real tables, with every figure checked against an independent computation."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

import archlore.benchmarks as bench
from archlore.benchmarks import baselines as B
from archlore.benchmarks import protocols as P
from archlore.benchmarks.harness import (
    STRATEGIES,
    get_strategy,
    make_request,
    register_strategy,
    run_bench,
    run_strategy,
)
from archlore.tools.errors import ArchloreError, BudgetExhausted, ConfigError, DataError
from archlore.tools.spaces import Position, SearchSpace
from archlore.tools.tables import Table, load_nb201

DATA = Path(os.environ.get("ARCHLORE_DATA") or Path(__file__).resolve().parents[1] / "../shared/data").resolve()
HAS_DATA = (DATA / "nb201" / "nb201_all.csv").is_file() and (DATA / "transnas101" / "tnb101_micro_val.csv").is_file()
needs_data = pytest.mark.skipif(not HAS_DATA, reason=f"benchmark data not found at {DATA} (set ARCHLORE_DATA)")

BASELINES = {"random": False, "rea": False, "freq-prior": True, "freq-prior-unpadded": True, "copy-top": True,
             "rea-seeded": True}


def _toy_table() -> Table:
    """A 4x4x4 space; task `up` rewards high choice ids, `down` low ones, `near` is `up` with
    position p2 not mattering to the top (so its top cells do not agree there)."""
    space = SearchSpace("toy", [Position(f"p{i}", ("a", "b", "c", "d")) for i in range(3)])
    archs = list(space.all_archs())
    up = np.array([sum(a) + 0.01 * space.index(a) / 64 for a in archs], dtype=float)
    down = np.array([sum(3 - c for c in a) for a in archs], dtype=float)
    near = np.array([a[0] + a[1] + 0.3 * ((a[2] * 7) % 4) for a in archs], dtype=float)
    return Table(space, "toy", {"up": up, "down": down, "near": near}, {"up": up + 0.5, "down": down + 0.5})


TOY = P.custom("toy", budget=12, population=4, tournament=2, k=2, top_n=8)


def _req(table, target="up", source=None, seed=0, proto=TOY):
    return make_request(table, proto, target, source, seed)


def _archs(table, cells):
    return [table.space.from_index(i) for i in cells]


# -- registry (no data needed) ----------------------------------------------------------------
def test_builtin_baselines_registered():
    for name, needs in BASELINES.items():
        info = STRATEGIES[name]
        assert info.baseline and info.needs_source is needs


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_stay_in_budget_never_repeat_and_repeat_per_seed(name):
    t = _toy_table()
    src = "down" if BASELINES[name] else None
    a = run_strategy(name, _req(t, source=src, seed=1))
    b = run_strategy(name, _req(t, source=src, seed=1))
    assert a == b and len(a) == len(set(a)) == 12
    if name in {"random", "rea", "freq-prior", "freq-prior-unpadded"}:
        assert run_strategy(name, _req(t, source=src, seed=2)) != a


def test_copy_top_evaluates_the_source_ranking_in_order():
    t = _toy_table()
    cells = run_strategy("copy-top", _req(t, source="down"))
    expected = np.argsort(-t.valid["down"], kind="stable")[:12]  # the source's best first
    assert cells == expected.tolist()


def test_rea_seeded_starts_from_the_source_top_cells():
    t = _toy_table()
    cells = run_strategy("rea-seeded", _req(t, source="down", seed=3))
    top = np.argsort(-t.valid["down"], kind="stable")[: TOY.population].tolist()
    assert cells[: TOY.population] == top
    assert cells[TOY.population:] != np.argsort(-t.valid["down"], kind="stable")[TOY.population:12].tolist()


def test_unpadded_prior_keeps_only_choices_seen_among_the_top():
    t = _toy_table()
    req = _req(t, target="up", source="near")
    padded = B.prior_filter(req.view, "near", k=2, top_n=4, padded=True)
    unpadded = B.prior_filter(req.view, "near", k=2, top_n=4, padded=False)
    top = np.argsort(-t.valid["near"], kind="stable")[:4]
    seen = [set(t.space.from_index(int(i))[j] for i in top) for j in range(3)]
    for j in range(3):
        assert set(unpadded.allowed[j]) == set(unpadded.allowed[j]) & seen[j]  # nothing unseen
        assert set(unpadded.allowed[j]) <= set(padded.allowed[j]) and len(padded.allowed[j]) == 2
    # p0 and p1: the top-4 all pick 'd' there, so padding adds a second, unseen choice
    assert [len(a) for a in unpadded.allowed[:2]] == [1, 1]
    top4 = P.custom("toy", budget=12, population=4, tournament=2, k=2, top_n=4)
    cells = run_strategy("freq-prior-unpadded", _req(t, target="up", source="near", proto=top4))
    assert all(unpadded.contains(a) for a in _archs(t, cells[: unpadded.size()]))
    assert sorted(cells[: unpadded.size()]) == sorted(t.space.index(a) for a in unpadded.members())


def test_a_source_equal_to_the_target_is_refused():
    with pytest.raises(ConfigError, match="leakage"):
        _req(_toy_table(), "up", source="up")


def test_strategies_that_need_a_source_refuse_to_run_without_one():
    with pytest.raises(ConfigError, match="needs a source"):
        run_strategy("copy-top", _req(_toy_table(), "up", source=None))


def test_unknown_strategy_is_an_error():
    with pytest.raises(ConfigError, match="unknown strategy 'no-such-thing'.*rea"):
        get_strategy("no-such-thing")
    with pytest.raises(ConfigError, match="unknown strategy"):
        get_strategy("../evil")


def test_register_strategy_and_the_budget_contract(monkeypatch):
    monkeypatch.delitem(STRATEGIES, "toy-first", raising=False)

    def first(n):
        def fn(req):  # evaluates the first n cells of the space through the executor
            ex = req.executor()
            for i in range(n):
                ex.evaluate(req.space.from_index(i))
        return fn

    try:
        register_strategy("toy-first", first(12), needs_source=False)
        assert run_strategy("toy-first", _req(_toy_table())) == list(range(12))
        register_strategy("toy-first", first(13), needs_source=False)
        with pytest.raises(BudgetExhausted):  # the 13th evaluation is refused, whatever the strategy
            run_strategy("toy-first", _req(_toy_table()))
        register_strategy("toy-first", first(0), needs_source=False)
        with pytest.raises(ArchloreError, match="evaluated no cell"):
            run_strategy("toy-first", _req(_toy_table()))
    finally:
        STRATEGIES.pop("toy-first", None)
    with pytest.raises(ConfigError, match="invalid"):
        register_strategy("Bad Name", first(1), needs_source=False)


def test_what_a_strategy_returns_is_not_what_is_scored(monkeypatch, tmp_path):
    """A strategy claiming great evaluations it never made is scored on what it did evaluate."""
    from archlore.tools.ledger import Evaluation

    def liar(req):
        req.executor().evaluate(req.space.from_index(0))  # the worst `up` cell
        return [Evaluation(req.run_id, 0, "333", 1e9, 1e9)]

    register_strategy("toy-liar", liar, needs_source=False)
    try:
        res = run_bench(TOY, ["toy-liar"], targets=["up"], sources=None, seeds=2, out=tmp_path / "l.json",
                        table=_toy_table())
    finally:
        STRATEGIES.pop("toy-liar", None)
    row = res["rows"][0]
    assert row["percentile"] == pytest.approx(100 / 64) and row["p_top5"] == 0.0


_PLUGIN = '''
from archlore.benchmarks.baselines import random_strategy
from archlore.benchmarks.harness import register_strategy

register_strategy("toy-plugin", random_strategy, needs_source=True)
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
    info = get_strategy("toy-plugin")
    assert info.needs_source and not info.baseline and STRATEGIES["toy-plugin"] is info
    assert len(run_strategy("toy-plugin", _req(_toy_table(), source="down"))) == 12


def test_plugin_hook_reports_a_missing_dependency_and_a_silent_module(plugin_dir):
    (plugin_dir / "strategies_toy_broken.py").write_text("import archlore_no_such_dependency\n")
    with pytest.raises(ConfigError, match="archlore_no_such_dependency"):
        get_strategy("toy-broken")
    (plugin_dir / "strategies_toy_broken.py").write_text("X = 1\n")
    sys.modules.pop("archlore.benchmarks.strategies_toy_broken", None)
    with pytest.raises(ConfigError, match="did not register"):
        get_strategy("toy-broken")


def test_run_bench_on_a_toy_table_matches_a_hand_computation(tmp_path):
    t = _toy_table()
    res = run_bench(TOY, ["copy-top", "rea"], targets=["up"], sources=["down", "near"], seeds=3, out=tmp_path,
                    table=t, split="heldout")
    rows = {(r["strategy"], r["source"]): r for r in res["rows"]}
    # copy-top from `down` walks `up`'s worst cells first: the top-5 of `up` is never reached
    down = rows[("copy-top", "down")]
    assert down["evals_to_top5"] == 12.0 and down["p_top5"] == 0.0
    # from `near`: the first cell of near's ranking that is in up's top-5 (by up's validation)
    order = np.argsort(-t.valid["near"], kind="stable")
    thr = np.sort(t.valid["up"])[-5]
    first = next(i + 1 for i, c in enumerate(order) if t.valid["up"][c] >= thr)
    assert rows[("copy-top", "near")]["evals_to_top5"] == (first if first <= 12 else 12)
    assert res["settings"]["seeds"] == {"split": "heldout", "first": 1000, "count": 3}
    assert "held-out split" in Path(res["files"]["md"]).read_text()


def test_missing_data_dir_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="--data"):
        run_bench("lapt-nb201", ["rea"], targets=None, sources=None, seeds=1, out=tmp_path, data=tmp_path / "absent")


def test_an_incomplete_target_is_refused(tmp_path):
    t = _toy_table()
    t.valid["up"] = t.valid["up"].copy()
    t.valid["up"][5] = np.nan
    with pytest.raises(ConfigError, match="63 of the space's 64 cells"):
        run_bench(TOY, ["rea"], targets=["up"], sources=None, seeds=1, out=tmp_path, table=t)


# -- protocols on the real tables -------------------------------------------------------------
def _independent_nb201(t, target, cells, budget=20):
    """The lapt-nb201 metrics of one run, computed without the protocols module."""
    v = np.array([t.valid[target][i] for i in cells])
    te = np.array([t.test[target][i] for i in cells])
    ranked = np.sort(t.valid[target])[::-1]

    def evals_to(k):
        hits = [i + 1 for i in range(len(v)) if v[: i + 1].max() >= ranked[k - 1]]
        return float(hits[0]) if hits else float(budget)

    def regret(at):
        i = int(np.argmax(v[:at]))
        return ranked[0] - v[i], t.test[target].max() - te[i]

    return {"evals_to_top01": evals_to(16), "evals_to_top5": evals_to(5),
            "valid_regret@10": regret(10)[0], "test_regret@20": regret(20)[1]}


@needs_data
def test_nb201_rows_match_an_independent_computation(tmp_path):
    seen = []
    res = run_bench(
        "lapt-nb201", ["rea", "freq-prior"], targets=["cifar10", "cifar100"], sources=None, seeds=4,
        out=tmp_path / "p1.json", data=DATA, options={"llm": "none"}, progress=seen.append, split="heldout",
    )
    rows = res["rows"]
    assert [(r["strategy"], r["target"], r["source"]) for r in rows] == [
        ("rea", "cifar10", None), ("rea", "cifar100", None),
        ("freq-prior", "cifar10", "cifar100"), ("freq-prior", "cifar10", "imagenet16-120"),
        ("freq-prior", "cifar100", "cifar10"), ("freq-prior", "cifar100", "imagenet16-120"),
    ]
    assert len(seen) == len(rows)
    t = load_nb201(str(DATA))
    proto = P.get_protocol("lapt-nb201")
    for r in rows:
        assert r["llm"] == "none" and r["seeds"] == 4
        for j, seed in enumerate(range(1000, 1004)):  # re-run each seed and score it by hand
            cells = run_strategy(r["strategy"], make_request(t, proto, r["target"], r["source"], seed))
            for key, want in _independent_nb201(t, r["target"], cells).items():
                assert r["per_seed"][key][j] == pytest.approx(want, abs=1e-6), (r["strategy"], key, seed)
        assert r["evals_to_top01"] == pytest.approx(np.mean(r["per_seed"]["evals_to_top01"]), abs=1e-4)
        hits = sum(r["per_seed"]["p_top01"])
        ci = binomtest(hits, 4).proportion_ci(method="wilson")
        assert (r["p_top01_lo"], r["p_top01_hi"]) == pytest.approx((ci.low, ci.high), abs=1e-4)
    payload = json.loads((tmp_path / "p1.json").read_text())
    assert payload["protocol"] == "lapt-nb201" and payload["baselines"] == ["rea", "freq-prior"]
    md = (tmp_path / "p1.md").read_text()
    assert "| freq-prior | cifar10 | cifar100 | 4 | – |" in md and "Wilson" in md  # baselines take no llm
    assert (tmp_path / "p1.png").read_bytes()[:4] == b"\x89PNG"


@needs_data
def test_tnb101_rows(tmp_path):
    res = run_bench(
        "lapt-tnb101", ["random", "copy-top"], targets=["class_scene", "autoencoder"], sources=None, seeds=3,
        out=tmp_path, data=DATA,
    )
    assert res["files"]["json"] == str(tmp_path / "lapt-tnb101.json")
    assert [(r["strategy"], r["target"], r["source"]) for r in res["rows"]] == [
        ("random", "class_scene", None), ("random", "autoencoder", None),
        ("copy-top", "class_scene", "jigsaw"), ("copy-top", "autoencoder", "jigsaw"),
    ]
    from archlore.tools.tables import load_tnb101

    t = load_tnb101(str(DATA))
    for r in res["rows"]:
        if r["strategy"] == "copy-top":  # deterministic: jigsaw's top-50, scored by hand
            best = t.valid[r["target"]][np.argsort(-t.valid["jigsaw"], kind="stable")[:50]].max()
            pct = 100 * np.mean(t.valid[r["target"]] <= best)
            assert r["per_seed"]["percentile"] == pytest.approx([pct] * 3)
            assert r["p_top1"] == float(pct >= 99)
    assert "autoencoder | jigsaw †" in (tmp_path / "lapt-tnb101.md").read_text()  # the held-out pair


@needs_data
def test_protocol_deterministic_per_seed(tmp_path):
    kw = dict(targets=["imagenet16-120"], sources=["cifar10"], data=DATA)
    names = ["random", "rea", "freq-prior", "rea-seeded"]
    a = run_bench("lapt-nb201", names, out=tmp_path / "a.json", seeds=5, **kw)
    b = run_bench("lapt-nb201", names, out=tmp_path / "b.json", seeds=5, **kw)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert strip(a["rows"]) == strip(b["rows"])
    c = run_bench("lapt-nb201", ["rea"], out=tmp_path / "c.json", seeds=6, **kw)
    assert c["rows"][0]["per_seed"]["evals_to_top5"][:5] == a["rows"][1]["per_seed"]["evals_to_top5"]


@needs_data
def test_curves_rows(tmp_path):
    res = run_bench(
        "curves", ["rea", "freq-prior"], targets=["cifar10"], sources=["cifar100"], seeds=2,
        out=tmp_path, data=DATA, budgets=[5, 10, 80],
    )
    assert res["files"]["json"].endswith("curves-nb201.json") and Path(res["files"]["png"]).is_file()
    for r in res["rows"]:
        pct = [r[f"valid_percentile@{b}"] for b in (5, 10, 80)]
        reg = [r[f"valid_regret@{b}"] for b in (5, 10, 80)]
        assert pct == sorted(pct) and reg == sorted(reg, reverse=True)  # best-so-far never gets worse
    tnb = run_bench("curves", ["rea"], targets=["normal"], sources=None, seeds=2, out=tmp_path, data=DATA,
                    space="tnb101", budgets=[10, 20])
    assert tnb["rows"][0]["test_percentile@10"] is None and tnb["settings"]["population"] == 10


@needs_data
def test_bad_names_are_config_errors(tmp_path):
    kw = dict(sources=None, seeds=1, out=tmp_path, data=DATA)
    with pytest.raises(ConfigError, match="unknown target 'cifar11'.*cifar10"):
        run_bench("lapt-nb201", ["rea"], targets=["cifar11"], **kw)
    with pytest.raises(ConfigError, match="unknown source"):
        run_bench("lapt-nb201", ["freq-prior"], targets=None, **{**kw, "sources": ["jigsaw"]})
    with pytest.raises(ConfigError, match="other --source"):
        run_bench("lapt-nb201", ["freq-prior"], targets=["cifar10"], **{**kw, "sources": ["cifar10"]})
    with pytest.raises(ConfigError, match="unknown strategy"):
        run_bench("lapt-nb201", ["rea", "nope"], targets=None, **kw)
    with pytest.raises(ConfigError, match="drop --space"):
        run_bench("lapt-nb201", ["rea"], targets=None, space="tnb101", **kw)
    with pytest.raises(ConfigError, match="overwrite row fields"):
        run_bench("lapt-nb201", ["rea"], targets=None, options={"p_top5": 1}, **{**kw, "sources": None})


@needs_data
def test_plugin_strategy_runs_in_a_protocol(plugin_dir, tmp_path):
    (plugin_dir / "strategies_toy_plugin.py").write_text(_PLUGIN)
    res = run_bench("lapt-nb201", ["toy-plugin", "copy-top"], targets=["cifar100"], sources=None, seeds=2,
                    out=tmp_path, data=DATA)
    assert [(r["strategy"], r["source"]) for r in res["rows"]] == [
        ("toy-plugin", "cifar10"), ("toy-plugin", "imagenet16-120"),
        ("copy-top", "cifar10"), ("copy-top", "imagenet16-120"),
    ]
    # the plugin is not a baseline, so it meets the strongest baseline of each pair
    comps = res["comparisons"]
    assert {(c["source"], c["metric"]) for c in comps} == {
        (s, m) for s in ("cifar10", "imagenet16-120") for m in ("evals_to_top01", "evals_to_top5", "test_regret@20")}
    assert all(c["baseline"] == "copy-top" for c in comps)
    assert "strongest baseline" in (tmp_path / "lapt-nb201.md").read_text()


def test_json_keeps_lists_of_scalars_on_one_line_and_round_trips():
    from archlore.benchmarks.harness import dumps

    payload = {"rows": [{"per_seed": {"a": [1.0, None, True], "b": ["x y", "z"]}, "n": 3}], "s": "  two  spaces "}
    text = dumps(payload)
    assert json.loads(text) == payload and '"a": [1.0, null, true]' in text
