"""Intervals and the paired comparison, checked against scipy and against properties."""

import numpy as np
import pytest
from scipy.stats import binomtest

from archlore.benchmarks import stats
from archlore.benchmarks.protocols import EvalsToTop, HitTop, aggregate


@pytest.mark.parametrize("hits,n", [(0, 10), (3, 10), (10, 10), (30, 30), (17, 100), (999, 1000)])
def test_wilson_matches_scipy(hits, n):
    ci = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = stats.wilson(hits, n)
    assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)


def test_wilson_does_not_collapse_at_one():
    lo, hi = stats.wilson(30, 30)
    assert hi == 1.0 and 0.85 < lo < 0.9  # 30 of 30 is not "1.000 +/- 0.000"
    with pytest.raises(ValueError):
        stats.wilson(3, 2)


def test_bootstrap_is_seeded_and_covers_the_mean():
    rng = np.random.default_rng(1)
    v = rng.normal(5.0, 2.0, size=200).tolist()
    a, b = stats.bootstrap_mean(v), stats.bootstrap_mean(v)
    assert a == b  # the same seed: the same interval
    mean, lo, hi = a
    assert mean == pytest.approx(np.mean(v)) and lo < mean < hi
    # for a large sample the percentile bootstrap is close to the normal interval
    half = 1.96 * np.std(v, ddof=1) / np.sqrt(len(v))
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    # more data, a narrower interval
    _, lo2, hi2 = stats.bootstrap_mean(v[:20])
    assert hi2 - lo2 > hi - lo


def test_bootstrap_edge_cases():
    assert stats.bootstrap_mean([]) is None and stats.bootstrap_mean([None, None]) is None
    assert stats.bootstrap_mean([3.0, None, 3.0]) == (3.0, 3.0, 3.0)


def test_paired_difference_removes_what_seeds_share():
    rng = np.random.default_rng(2)
    shared = rng.normal(0, 10, size=50)  # large per-seed noise both strategies see
    a = (shared + 1.0).tolist()
    b = shared.tolist()
    d, lo, hi = stats.paired_bootstrap_diff(a, b)
    assert d == pytest.approx(1.0) and lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    with pytest.raises(ValueError):
        stats.paired_bootstrap_diff([1.0], [1.0, 2.0])


def test_aggregate_uses_wilson_for_proportions_and_bootstrap_for_means():
    ms = (EvalsToTop("e", "e", "mean", "lower"), HitTop("p", "p", "proportion", "higher"))
    out = aggregate(ms, {"e": [1.0, 2.0, 3.0, 20.0], "p": [True, True, True, False]})
    assert out["p"] == 0.75 and (out["p_lo"], out["p_hi"]) == pytest.approx(stats.wilson(3, 4), abs=1e-4)
    assert out["e"] == 6.5 and out["e_lo"] < 6.5 < out["e_hi"] and out["e_n"] == 4
