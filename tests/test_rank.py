"""The rank strategy's pieces in tools/: NCode round trips on every space, the pool's properties,
the surrogate, and RankSearch with an injected chooser."""

import numpy as np
import pytest
from archlore.tools.darts import DartsSpace
from archlore.tools.errors import SpaceError, SpaceExhausted
from archlore.tools.evaluator import Evaluator
from archlore.tools.executors import Metrics
from archlore.tools.ledger import Ledger
from archlore.tools.rank import (
    RankSearch,
    Surrogate,
    decode,
    encode,
    history_lines,
    normalized,
    pruned_subspace,
    sample_pool,
    top_trials,
)
from archlore.tools.spaces import (
    MAX_CHOICES,
    MAX_POSITIONS,
    NB201Space,
    Position,
    SearchSpace,
    SpaceFilter,
    TNB101Space,
    load_space_file,
)
from archlore.tools.strategies import run_search
from hypothesis import given, settings
from hypothesis import strategies as st


def _largest_space() -> SearchSpace:
    return SearchSpace("largest", [Position(f"p{j}", tuple(f"c{i}" for i in range(MAX_CHOICES))) for j in range(MAX_POSITIONS)])


def _spaces(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("name: mine\npositions:\n  depth: [2, 4, 8]\n  act: [relu, gelu]\n  width: [a, b, c, d, e, f, g, h, i, j, k, l]\n")
    return [NB201Space(), TNB101Space(), DartsSpace(), load_space_file(f), _largest_space()]


def test_ncode_round_trips_on_every_space(tmp_path):
    for space in _spaces(tmp_path):
        rng = np.random.default_rng(0)
        archs = list(space.all_archs()) if space.size() <= 20_000 else [space.sample(rng) for _ in range(300)]
        codes = set()
        for a in archs:
            code = encode(space, a)
            assert len(code) == len(space.positions) and decode(space, code) == a
            codes.add(code)
        assert len(codes) == len(set(archs))  # one code per architecture


def test_ncode_digits_are_the_choice_ids():
    nb = NB201Space()
    # |nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|
    assert encode(nb, (3, 3, 0, 1, 3, 3)) == "330133"
    big = _largest_space()
    assert encode(big, (35,) + (10,) * (MAX_POSITIONS - 1)) == "z" + "a" * (MAX_POSITIONS - 1)
    with pytest.raises(SpaceError, match="invalid character"):
        decode(nb, "33013!")
    with pytest.raises(SpaceError, match="out of range"):
        decode(nb, "330135")  # 5 choices at an NB201 edge: ids 0..4
    with pytest.raises(SpaceError, match="needs 6"):
        decode(nb, "3301")


def test_history_lines_are_the_best_trials_oldest_first_normalised():
    nb = NB201Space()
    hist = [(nb.from_index(i), float(v)) for i, v in enumerate([5, 1, 9, 3, 7])]
    assert [v for _, v in top_trials(hist, 3)] == [5.0, 9.0, 7.0]
    lines = history_lines(nb, hist, 3)
    assert lines == [f"{encode(nb, nb.from_index(0))}|0.000", f"{encode(nb, nb.from_index(2))}|1.000",
                     f"{encode(nb, nb.from_index(4))}|0.500"]
    assert normalized([2.0, 2.0]) == [1.0, 1.0]
    assert history_lines(nb, []) == []


@settings(max_examples=60, deadline=None)
@given(
    allowed=st.lists(st.sets(st.integers(0, 4), min_size=1), min_size=6, max_size=6),
    n_seen=st.integers(0, 80),
    seed=st.integers(0, 2**31),
    size=st.integers(1, 12),
)
def test_pool_is_unseen_distinct_and_inside_the_filter(allowed, n_seen, seed, size):
    nb = NB201Space()
    flt = SpaceFilter(tuple(tuple(a) for a in allowed))
    rng = np.random.default_rng(seed)
    members = list(flt.members())
    seen_idx = rng.choice(len(members), size=min(n_seen, len(members)), replace=False)
    history = [(members[i], float(rng.random())) for i in seen_idx]
    seen = {a for a, _ in history}
    unseen = len(members) - len(seen)
    if unseen == 0:
        with pytest.raises(SpaceExhausted):
            sample_pool(nb, history, flt, rng, size)
        return
    pool = sample_pool(nb, history, flt, rng, size)
    assert len(pool) == len(set(pool)) == min(size, unseen)
    assert all(flt.contains(a) and a not in seen for a in pool)


def test_pruned_subspace_shrinks_toward_the_best_trials_and_stays_in_the_filter():
    nb = NB201Space()
    flt = nb.full_filter()
    rng = np.random.default_rng(1)
    best = (3, 3, 0, 1, 3, 3)
    history = [(best, 1.0)] + [(nb.sample(rng), 0.0) for _ in range(4)]
    sub = pruned_subspace(history, flt, rng, top=1, share=1.0)
    assert sub.allowed == tuple((c,) for c in best)
    assert pruned_subspace(history, flt, rng, top=1, share=0.0) == flt
    narrow = SpaceFilter(((0, 1),) * 6)  # the best trial's choices outside the filter are never used
    sub = pruned_subspace(history, narrow, rng, top=1, share=1.0)
    assert all(set(s) <= set(a) for s, a in zip(sub.allowed, narrow.allowed))
    # later in the search more positions are pruned: the pools' cells sit closer to the best
    def mean_distance(n_history):
        hist = [(best, 1.0)] * 1 + [(nb.from_index(i), 0.0) for i in range(1, n_history)]
        pool = [a for s in range(20) for a in sample_pool(nb, hist, flt, np.random.default_rng(s), 10)]
        return np.mean([sum(x != y for x, y in zip(a, best)) for a in pool])
    assert mean_distance(200) < mean_distance(2)


def test_surrogate_prefers_the_choices_of_good_trials_and_uses_weights():
    nb = NB201Space()
    hist = [((3, 3, 3, 3, 3, 3), 90.0), ((0, 0, 0, 0, 0, 0), 10.0), ((3, 3, 0, 0, 3, 3), 70.0)]
    cands = [(0, 0, 0, 0, 0, 1), (3, 3, 3, 3, 3, 1), (1, 1, 1, 1, 1, 1)]
    assert Surrogate().best(nb, hist, cands) == 1
    w = tuple(tuple(1.0 if c == 1 else 0.0 for c in range(5)) for _ in range(6))
    assert Surrogate(weights=w).best(nb, [], cands) == 2  # no history: the principles' weights decide


def test_rank_search_takes_the_choosers_pick_and_falls_back_to_the_surrogate():
    nb = NB201Space()
    rng = np.random.default_rng(3)
    hist = [(nb.sample(rng), float(v)) for v in range(8)]
    seen_calls, picks = [], []

    def chooser(history, pool):
        seen_calls.append((history, pool))
        return {0: 3, 1: None, 2: 99}.get(len(seen_calls) - 1, 3)

    rs = RankSearch(chooser, on_pick=picks.append)
    for _ in range(3):
        rs.propose(nb, hist, nb.full_filter(), np.random.default_rng(7))
    assert seen_calls[0][0] == history_lines(nb, hist) and len(seen_calls[0][1]) == 10
    assert [p["by"] for p in picks] == ["chooser", "surrogate", "surrogate"]
    assert picks[0]["chosen"] == 3 and picks[1]["chosen"] == picks[1]["surrogate"]
    assert rs.propose(nb, hist, nb.full_filter(), np.random.default_rng(7)) == decode(nb, seen_calls[0][1][3])


def test_rank_search_runs_to_exhaustion_without_repeats():
    nb = NB201Space()

    class Sum:
        space, task = nb, "sum"

        def evaluate(self, arch):
            return Metrics(valid=float(sum(arch)))

    flt = SpaceFilter(((3,), (3,), (0, 1), (0, 1), (3,), (2, 3)))
    ev = Evaluator(Sum(), Ledger(None), "r", 50)
    out = run_search(RankSearch(), ev, flt, 50, seed=0)
    archs = [a for a, _ in ev.pairs()]
    assert out.stopped == "exhausted" and len(archs) == len(set(archs)) == flt.size()
