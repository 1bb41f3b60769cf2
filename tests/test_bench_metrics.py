"""Metrics on hand-made columns with known answers, seeds splits, protocol objects."""

import numpy as np
import pytest

from archlore.benchmarks import protocols as P
from archlore.tools.errors import ConfigError
from archlore.tools.spaces import Position, SearchSpace
from archlore.tools.tables import Table


def _facts(valid, test=None):
    return P.TargetFacts("t", np.sort(np.asarray(valid, float)), None if test is None else np.sort(np.asarray(test, float)))


def test_hitting_and_regret_on_a_known_column():
    facts = _facts(range(1, 101), np.arange(1, 101) + 0.5)  # 100 cells valued 1..100, test = valid + 0.5
    trace = P.Trace.of([10, 50, 97, 40, 99], [10.5, 50.5, 97.5, 40.5, 99.5])
    top5 = P.EvalsToTop("e5", "e5", "mean", "lower", top=5)  # the top-5 start at 96
    assert top5.score(trace, facts, 20) == 3.0
    assert P.HitTop("h5", "h5", "proportion", "higher", top=5).score(trace, facts, 20) is True
    best = P.EvalsToTop("e1", "e1", "mean", "lower", top=1)  # only 100 counts: a miss costs the budget
    assert best.score(trace, facts, 20) == 20.0
    assert P.HitTop("h1", "h1", "proportion", "higher", top=1).score(trace, facts, 20) is False
    # top as a fraction: 0.03 of 100 cells = the top-3 (98 and up): reached at the 5th evaluation
    assert P.EvalsToTop("f", "f", "mean", "lower", top=0.03).score(trace, facts, 20) == 5.0
    assert P.Regret("r", "r", "mean", "lower", at=2, which="valid").score(trace, facts, 20) == 50.0
    assert P.Regret("r", "r", "mean", "lower", at=4, which="test").score(trace, facts, 20) == pytest.approx(3.0)
    # a run that stopped early keeps its last best
    assert P.Regret("r", "r", "mean", "lower", at=50, which="valid").score(trace, facts, 20) == 1.0
    assert P.PercentileAt("p", "p", "mean", "higher", at=5).score(trace, facts, 20) == 99.0
    assert P.PercentileAtLeast("q", "q", "proportion", "higher", cut=99.0).score(trace, facts, 20) is True


def test_the_best_by_validation_cell_is_scored_on_test_not_the_best_test():
    facts = _facts([1, 2, 3], [1, 9, 3])
    trace = P.Trace.of([2, 3], [9, 3])  # the second has the better validation, the worse test
    assert P.Regret("r", "r", "mean", "lower", at=2, which="test").score(trace, facts, 2) == 6.0


def test_ties_at_the_threshold_count():
    facts = _facts([5, 5, 5, 1, 2])
    assert facts.threshold(2) == 5.0 and facts.top_count(0.001) == 1
    assert P.EvalsToTop("e", "e", "mean", "lower", top=1).score(P.Trace.of([2, 5]), facts, 10) == 2.0


def test_missing_test_values_give_none():
    facts = _facts([1, 2, 3])  # no test column
    assert P.Regret("r", "r", "mean", "lower", at=2, which="test").score(P.Trace.of([1, 2]), facts, 2) is None


def test_facts_match_the_table_percentile():
    space = SearchSpace("s", [Position("a", ("x", "y", "z")), Position("b", ("x", "y"))])
    rng = np.random.default_rng(0)
    v = rng.normal(size=6)
    t = Table(space, "toy", {"t": v})
    f = P.TargetFacts.of(t, "t")
    for x in v:
        assert f.percentile(x) == pytest.approx(t.percentile("t", x))
    assert f.threshold(2) == np.sort(v)[-2]


def test_nb201_protocol_declares_its_metrics_and_a_heldout_pair():
    nb = P.get_protocol("lapt-nb201")
    keys = {m.key for m in nb.metrics}
    assert {"evals_to_top01", "p_top01", "evals_to_top5", "p_top5"} <= keys
    assert {f"{w}_regret@{a}" for w in ("valid", "test") for a in (5, 10, 20)} <= keys
    assert nb.is_heldout("imagenet16-120", "cifar100") and not nb.is_heldout("cifar100", "cifar10")
    tnb = P.get_protocol("lapt-tnb101")
    assert {m.key for m in tnb.metrics} == {"percentile", "p_top1"} and tnb.heldout_pairs
    # every metric named in a table, a comparison or a plot exists
    for proto in (nb, tnb, P.get_protocol("custom", space="x.yaml", budget=12), P.get_protocol("curves", space="tnb101")):
        for key in (*proto.compare, *proto.plot_metrics, *(k for _, ks in proto.tables for k in ks)):
            proto.metric(key)


def test_protocol_errors():
    with pytest.raises(ConfigError, match="unknown protocol 'nope'.*lapt-nb201"):
        P.get_protocol("nope")
    with pytest.raises(ConfigError, match="curves"):
        P.get_protocol("lapt-nb201", budgets=[10])
    with pytest.raises(ConfigError, match="positive"):
        P.get_protocol("curves", budgets=[0, 10])
    with pytest.raises(ConfigError, match="needs a space"):
        P.get_protocol("custom")
    with pytest.raises(ConfigError, match="fixed budget"):
        P.get_protocol("lapt-tnb101", budget=10)


def test_seed_splits():
    dev = P.seed_range(30)
    assert list(dev.values) == list(range(30)) and "dev" in dev.describe()
    held = P.seed_range(30, split="heldout")
    assert held.first == 1000 and "held-out" in held.describe() and "never used for tuning" in held.describe()
    assert list(P.seed_range(5, split="heldout", start=2000).values) == [2000, 2001, 2002, 2003, 2004]
    with pytest.raises(ConfigError, match="leave the dev split"):
        P.seed_range(101)
    with pytest.raises(ConfigError, match="leave the heldout split"):
        P.seed_range(3, split="heldout", start=5)
    with pytest.raises(ConfigError, match="unknown seed split"):
        P.seed_range(3, split="test")
    # the splits do not overlap
    spans = sorted((lo, hi if hi is not None else 10**9) for lo, hi in P.SEED_SPLITS.values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def _row(strategy, source, values, baseline, key="evals_to_top5"):
    return {"strategy": strategy, "target": "t", "source": source, key: float(np.mean(values)),
            "per_seed": {key: values}}


def test_comparison_picks_the_strongest_baseline_per_metric_and_pairs_seeds():
    proto = P.get_protocol("custom", space="x.yaml", budget=20)
    rows = [
        _row("rea", None, [10.0, 12.0, 14.0, 16.0], True),
        _row("copy-top", "s", [3.0, 3.0, 3.0, 3.0], True),
        _row("copy-top", "other", [1.0, 1.0, 1.0, 1.0], True),  # another source: not this pair's
        _row("agent", "s", [2.0, 2.0, 2.0, 2.0], False),
        _row("worse", "s", [5.0, 6.0, 5.0, 6.0], False),
        _row("same", "s", [2.0, 4.0, 3.0, 3.0], False),
    ]
    comps = {c["strategy"]: c for c in P.baseline_comparisons(proto, rows, {"rea", "copy-top"})
             if c["metric"] == "evals_to_top5"}
    assert comps["agent"]["baseline"] == "copy-top" and comps["agent"]["baseline_source"] == "s"
    assert comps["agent"]["diff"] == -1.0 and comps["agent"]["verdict"] == "better"  # lower is better here
    assert comps["worse"]["verdict"] == "worse" and comps["worse"]["diff"] == 2.5
    assert comps["same"]["verdict"] == "no clear difference"


def test_tally_counts_pairs_against_each_baseline():
    proto = P.get_protocol("custom", space="x.yaml", budget=20)
    rows = []
    for src, agent, copy in (("s1", [2.0] * 4, [3.0] * 4), ("s2", [4.0] * 4, [3.0] * 4), ("s3", [1, 5, 1, 5], [3.0] * 4)):
        rows += [{**_row("copy-top", src, copy, True), "target": "t"}, {**_row("agent", src, agent, False), "target": "t"}]
    tally = [t for t in P.baseline_tally(proto, rows, ["copy-top"]) if t["metric"] == "evals_to_top5"]
    assert tally == [{"strategy": "agent", "baseline": "copy-top", "metric": "evals_to_top5",
                      "better": 1, "no clear difference": 1, "worse": 1}]
