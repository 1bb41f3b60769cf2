"""Successive halving on epochs, the ledger's fidelities and the like-with-like rule, old ledgers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from archlore.tools.errors import BudgetExhausted, ConfigError
from archlore.tools.evaluator import Evaluator
from archlore.tools.executors import Metrics
from archlore.tools.fidelity import hyperband, hyperband_brackets, rung_epochs, successive_halving
from archlore.tools.ledger import Ledger
from archlore.tools.recipe import load_recipe
from archlore.tools.spaces import NB201Space, Position, SearchSpace
from archlore.tools.training import TrainingExecutor

torch.set_num_threads(1)
SPACE = SearchSpace("toy", [Position("a", tuple("012345678")), Position("b", ("x", "y"))])


class Known:
    """A fake executor whose score is known: base quality (a's digit) plus a gain with epochs.
    Choice b=y learns slowly: poor at 1 epoch, best at 9 (a rank reversal across fidelities)."""

    space = SPACE
    task = "toy"

    def __init__(self, fail: set[str] = frozenset()) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail = fail

    def score(self, arch: tuple[int, ...], epochs: int) -> float:
        a, b = arch
        return 10.0 * a + (epochs * 10.0 if b == 1 else 5.0)

    def evaluate(self, arch: tuple[int, ...], epochs: int | None = None) -> Metrics:
        e = epochs or 9
        key = SPACE.to_string(arch)
        self.calls.append((key, e))
        if key in self.fail:
            return Metrics.failed("loss became NaN in epoch 1 of 1", fidelity=e)
        return Metrics(self.score(arch, e), None, {}, 0.0, "ok", "", e)


ARCHS = [(a, 0) for a in range(9)]


def test_rungs_and_brackets() -> None:
    assert rung_epochs(1, 9, 3) == [1, 3, 9] and rung_epochs(1, 10, 3) == [1, 3, 9, 10] and rung_epochs(4, 4, 2) == [4]
    assert hyperband_brackets(1, 27, 3) == [(27, 1), (12, 3), (6, 9), (4, 27)]
    with pytest.raises(ConfigError, match="eta must be at least 2"):
        rung_epochs(1, 9, 1)
    with pytest.raises(ConfigError, match="min_epochs <= max_epochs"):
        rung_epochs(5, 2, 3)


def test_keeps_the_top_third_at_each_rung() -> None:
    ex = Known()
    ev = Evaluator(ex, Ledger(None), "r", budget=20)
    out = successive_halving(ev, ARCHS, min_epochs=1, max_epochs=9, eta=3, proposed_by="sh", round=2)
    assert [r.epochs for r in out.rungs] == [1, 3, 9]
    assert [len(r.evaluated) for r in out.rungs] == [9, 3, 1]
    assert out.rungs[0].kept == tuple(SPACE.to_string((a, 0)) for a in (8, 7, 6))
    assert out.rungs[1].kept == (SPACE.to_string((8, 0)),)
    assert out.best is not None and out.best.arch == SPACE.to_string((8, 0)) and out.best.fidelity == 9
    assert ev.used == 9 and len(ev.history) == 13  # one budget unit per architecture, every rung recorded
    assert sorted({e.fidelity for e in ev.history}) == [1, 3, 9]
    assert ev.history[0].proposed_by == "sh@1ep" and ev.history[0].round == 2
    # like with like: pairs() at the fidelity every candidate ran; best() at the highest rung
    assert ev.comparison_fidelity() == 1 and len(ev.pairs()) == 9 and dict(ev.pairs())[(8, 0)] == 85.0
    assert len(ev.pairs(fidelity=3)) == 3
    assert ev.best().fidelity == 9 and ev.best().arch == SPACE.to_string((8, 0))


def test_rank_reversal_is_judged_at_each_rung() -> None:
    archs = [(8, 0), (7, 1)] + [(a, 0) for a in range(7)]  # (7, y) learns slowly: 80 at 1 epoch, 100 at 3
    ev = Evaluator(Known(), Ledger(None), "r", budget=10)
    out = successive_halving(ev, archs, min_epochs=1, max_epochs=9, eta=3)
    assert out.rungs[0].kept == tuple(SPACE.to_string(a) for a in [(8, 0), (7, 1), (6, 0)])  # 85, 80, 65
    assert out.rungs[1].kept == (SPACE.to_string((7, 1)),)  # at 3 epochs: 100 > 85 > 65
    assert out.best.arch == SPACE.to_string((7, 1)) and out.best.valid == 160.0


def test_failed_candidates_are_never_promoted_and_budget_is_respected() -> None:
    best = SPACE.to_string((4, 0))  # the best of the five the budget allows, but it fails
    ex = Known(fail={best})
    ev = Evaluator(ex, Ledger(None), "r", budget=5)
    out = successive_halving(ev, ARCHS, min_epochs=1, max_epochs=3, eta=3)
    assert out.rungs[0].evaluated == tuple(SPACE.to_string(a) for a in ARCHS[:5])  # the budget's five
    assert best not in out.rungs[0].kept and out.rungs[0].kept == (SPACE.to_string((3, 0)),)
    assert ev.used == 5 and ev.best().arch == SPACE.to_string((3, 0)) and ev.is_failed((4, 0))
    with pytest.raises(BudgetExhausted):
        successive_halving(ev, ARCHS[5:], min_epochs=1, max_epochs=3)


def test_resume_trains_nothing_again(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    first = Known()
    successive_halving(Evaluator(first, ledger, "r", budget=9), ARCHS, min_epochs=1, max_epochs=9)
    again = Known()
    out = successive_halving(Evaluator(again, Ledger(tmp_path / "l.db"), "r", budget=9), ARCHS, min_epochs=1, max_epochs=9)
    assert again.calls == [] and out.best.arch == SPACE.to_string((8, 0)) and len(first.calls) == 13


def test_hyperband_runs_brackets_within_budget() -> None:
    ev = Evaluator(Known(), Ledger(None), "r", budget=12)
    pool = iter([(a, b) for a in range(9) for b in range(2)])
    outs = hyperband(ev, lambda n: [next(pool) for _ in range(n)], min_epochs=1, max_epochs=9, eta=3)
    assert [o.rungs[0].epochs for o in outs] == [1, 3][: len(outs)] and ev.used == 12


def test_old_ledgers_are_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE evaluations (run_id TEXT NOT NULL, seq INTEGER NOT NULL, arch TEXT NOT NULL, valid REAL NOT NULL,
            test REAL, cost TEXT NOT NULL, wall_time REAL NOT NULL, proposed_by TEXT NOT NULL, round INTEGER NOT NULL,
            created REAL NOT NULL, PRIMARY KEY (run_id, seq), UNIQUE (run_id, arch));
        INSERT INTO evaluations VALUES ('r', 0, '|a|', 91.0, 90.0, '{}', 1.0, 'rea', 0, 0.0);
    """)
    db.commit()
    db.close()
    ledger = Ledger(path)
    (old,) = ledger.evaluations("r")
    assert (old.valid, old.status, old.reason, old.fidelity) == (91.0, "ok", "", 0)
    ledger.record("r", "|a|", 93.0, None, fidelity=12)  # a second fidelity of the same arch fits now
    ledger.record("r", "|b|", 0.0, None, status="failed", reason="out of memory", fidelity=12)
    ledger.close()
    again = Ledger(path)
    evs = again.evaluations("r")
    assert [(e.arch, e.fidelity, e.status) for e in evs] == [("|a|", 0, "ok"), ("|a|", 12, "ok"), ("|b|", 12, "failed")]
    assert evs[2].reason == "out of memory" and evs[2].to_dict()["valid"] is None
    assert again.get("r", "|a|").fidelity == 12


def test_a_real_training_round_drops_the_dead_cell() -> None:
    nb = NB201Space()
    archs = [nb.from_string(s) for s in (
        "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",  # no path from input to output: chance
        "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
        "|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|skip_connect~1|nor_conv_3x3~2|",
    )]
    ex = TrainingExecutor(nb, "digits", recipe=load_recipe("proxy").with_(model={"channels": 4}), threads=1)
    ev = Evaluator(ex, Ledger(None), "r", budget=3)
    out = successive_halving(ev, archs, min_epochs=1, max_epochs=2, eta=3)
    assert [r.epochs for r in out.rungs] == [1, 2] and len(out.rungs[0].kept) == 1
    assert out.rungs[0].kept[0] != nb.to_string(archs[0]) and out.best.fidelity == 2 and ev.used == 3
