"""Conflicting principles in the memory: resolved by evidence, shown, and filtered by query."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from archlore.agents.cli_memory import memory_app
from archlore.memory.conflicts import evidence_weight, find_conflicts
from archlore.memory.record import Outcome, Principle, TaskInfo
from archlore.memory.store import open_store
from typer.testing import CliRunner

TASK = TaskInfo(space="macro8", task="accuracy", description="CIFAR-10 image classification with a macro space")


def P(position: str, choice: str, direction: str, confidence: float = 0.7) -> Principle:
    return Principle(text=f"{direction} {choice} at {position}", position=position, choice=choice,
                     direction=direction, confidence=confidence)


@pytest.fixture
def mem(tmp_path: Path) -> Path:
    path = tmp_path / "memory"
    with open_store(path, embedding="hash") as s:
        # "prefer identity @ layer7": two runs; "avoid identity @ layer7": one run, more confident
        s.remember([P("layer7", "identity", "prefer", 0.6), P("layer0", "identity", "avoid", 0.9)], TASK,
                   Outcome(best_metric=92.0), "r1", data_tasks=["accuracy"])
        s.remember([P("layer7", "identity", "prefer", 0.5)], TASK, Outcome(best_metric=92.5), "r2", data_tasks=["accuracy"])
        s.remember([P("layer7", "identity", "avoid", 0.9), P("layer1", "identity", "avoid", 0.8)], TASK,
                   Outcome(best_metric=91.0), "r3", data_tasks=["accuracy"])
    return path


def test_conflict_goes_to_the_side_with_more_runs_then_confidence(mem):
    with open_store(mem, embedding="hash") as s:
        found = s.conflicts("macro8")
        assert len(found) == 1
        c = found[0]
        assert (c["stronger"]["direction"], c["weaker"]["direction"]) == ("prefer", "avoid")
        assert "2 run(s) against 1" in c["reason"]
        # recall, resolved: only the stronger side of the pair comes back; unresolved: both, flagged
        got = s.recall("macro8", "image classification", k=10, resolve_conflicts=True)
        at7 = [(r.principle.direction, r.weaker) for r in got if r.principle.position == "layer7"]
        assert at7 == [("prefer", False)]
        both = [r for r in s.recall("macro8", "image classification", k=10) if r.principle.position == "layer7"]
        assert len(both) == 2 and all(r.conflicts for r in both) and sum(r.weaker for r in both) == 1
    # equal runs: the mean confidence decides
    a = {"count": 1, "confidence": 0.6, "best_metric": 90.0, "updated": 1}
    b = {"count": 1, "confidence": 0.8, "best_metric": 80.0, "updated": 0}
    assert evidence_weight(b) > evidence_weight(a)
    recs = [{**a, "space": "s", "task": "t", "position": "p", "choice": "c", "direction": "prefer", "id": "1"},
            {**b, "space": "s", "task": "t", "position": "p", "choice": "c", "direction": "avoid", "id": "2"}]
    assert find_conflicts(recs)[0]["stronger"]["id"] == "2"


def test_query_filters_by_position_choice_and_direction_and_shows_conflicts(mem):
    with open_store(mem, embedding="hash") as s:
        got = s.query("avoid identity in early layers", space="macro8", direction="avoid", k=10)
        assert got and all(r["direction"] == "avoid" for r in got)
        got = s.query("avoid identity in early layers", space="macro8", position="layer0", k=10)
        assert [(r["position"], r["direction"]) for r in got] == [("layer0", "avoid")] and got[0]["conflict"] is None
        got = s.query("identity", space="macro8", position="layer7", choice="identity", k=10)
        assert {r["direction"] for r in got} == {"prefer", "avoid"}
        status = {r["direction"]: r["conflict"]["status"] for r in got}
        assert status == {"prefer": "stronger", "avoid": "weaker"}
        assert s.query("identity", space="macro8", choice="mb_k3_e3") == []


def test_cli_query_filters_list_shows_conflicts_and_forget_run_says_what_happened(mem):
    runner = CliRunner()
    base = ["--memory", str(mem), "--embedding", "hash"]
    res = runner.invoke(memory_app, ["query", "identity", "--position", "layer7", "--direction", "avoid", *base, "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [(r["position"], r["direction"]) for r in rows] == [("layer7", "avoid")]
    res = runner.invoke(memory_app, ["list", *base])
    assert res.exit_code == 0 and "conflict on macro8/accuracy: prefer identity @ layer7 outweighs avoid" in " ".join(res.output.split())
    res = runner.invoke(memory_app, ["forget", "--run", "r1", "-y", *base])
    assert res.exit_code == 0, res.output
    # r1 stated two principles: layer0 only by r1 (deleted), layer7-prefer also by r2 (kept)
    assert "1 deleted" in res.output and "1 kept with the other runs' evidence" in res.output
    assert "holds 3 (was 4)" in res.output
