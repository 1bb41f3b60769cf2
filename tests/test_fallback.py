"""Fallback chains through real HTTP: two scripted OpenAI-compatible servers on loopback, one of
which fails for the analyst only. The run completes with exactly its budget in the ledger, the
record says when and why each role switched backend (and the chain starts at its head again every
round), and the tokens per role and per backend add up to the run's total."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from archlore.agents.context import RunSettings
from archlore.agents.runner import run_persistent
from archlore.tools.ledger import Ledger

from .conftest import DATA, needs_data
from .scripted import ByFunction, FakeOpenAI, completion

NB201_POSITIONS = ["edge1<-0", "edge2<-0", "edge2<-1", "edge3<-0", "edge3<-1", "edge3<-2"]
GOOD_FILTER = {**{n: ["nor_conv_3x3", "nor_conv_1x1"] for n in NB201_POSITIONS}, "edge3<-0": ["skip_connect", "nor_conv_3x3"]}


def _servers() -> tuple[FakeOpenAI, FakeOpenAI]:
    """`down` answers 429 to everything; `up` answers the planner well and the analyst with text
    that is no function call (so the analyst's repair fails too)."""
    down, up = FakeOpenAI([]), FakeOpenAI([])
    down.script = ByFunction(down, {n: (lambda r: (429, {"error": {"message": "rate limited", "type": "rate_limit"}}))
                                    for n in ("AnalystReply", "PlannerReply", None)})
    up.script = ByFunction(up, {
        "PlannerReply": lambda r: (200, completion("PlannerReply", json.dumps(GOOD_FILTER))),
        "AnalystReply": lambda r: (200, completion(None, content="I think convolutions are good.")),
        None: lambda r: (200, completion(None, content="No tools needed.")),  # the analyst's tool round
    })
    return down, up


def _run(tmp_path, llm: str, **kw: Any) -> tuple[dict, Any]:
    settings = RunSettings(run_id="fb", target="cifar100", source="cifar10", budget=15, memory="off", data=str(DATA),
                           llm=llm, tool_rounds=0, llm_config={"default": {"retries": 0}}, **kw)
    return run_persistent(settings, root=tmp_path)


@needs_data
def test_the_analysts_provider_is_down_the_run_completes_and_says_so(tmp_path):
    down, up = _servers()
    with down, up:
        llm = (f"analyst=openai:a@{down.base_url}>openai:b@{up.base_url}>none,"
               f"planner=openai:b@{up.base_url},default=none")
        record, run_dir = _run(tmp_path, llm)
    # the budget is exact: every evaluation in the ledger, no more, no fewer
    ledger = Ledger(run_dir / "ledger.db")
    try:
        assert len(ledger.evaluations("fb")) == 15
    finally:
        ledger.close()
    assert record["used"] == 15 and record["stopped"] == "budget"
    rounds = sorted({h["round"] for h in record["principles_history"]})
    assert rounds == [0, 1, 2]
    # every round the analyst starts at the head of its chain again: rate-limited -> b, b's
    # answer stays invalid after a repair -> none (the statistical analyst answers)
    switches = [(s["round"], s["role"], s["from"], s["to"]) for s in record["llm_switches"]]
    a, b = f"openai:a@{down.base_url}", f"openai:b@{up.base_url}"
    assert switches == [(r, "analyst", x, y) for r in rounds for x, y in ((a, b), (b, "none"))]
    reasons = [s["reason"] for s in record["llm_switches"]]
    assert all(r.startswith("rate-limited past its retries (") and "RateLimitError" in r for r in reasons[0::2])
    assert all(r.startswith("invalid output after a repair (no AnalystReply function call") for r in reasons[1::2])
    assert all(s["node"] == "analyze" and s["evaluations"] == 5 * s["round"] for s in record["llm_switches"])
    # the switches are events of the journal too, and the analyst fell back to statistics
    assert sum(e["event"] == "llm_switch" for e in record["events"]) == 6
    assert {h["by"] for h in record["principles_history"]} == {"statistics"}
    # the planner's provider was never down: its filters are the model's, with no switch
    assert {f["how"] for f in record["filters"]} <= {"llm", "repaired"}
    assert record["llm_roles"] == {"analyst": f"{a}>{b}>none", "planner": b, "ranker": "none", "coordinator": "none"}
    assert set(down.script.asked) == {"AnalystReply"} and len(down.requests) == 3  # never asked for the planner
    _check_accounting(record)
    assert record["tokens"]["per_role"]["analyst"]["backends"][a]["calls"] == 0  # failed calls are no calls
    assert record["tokens"]["per_role"]["analyst"]["backends"][a]["seconds"] > 0
    assert record["tokens"]["per_role"]["analyst"]["backends"][b]["calls"] == 6  # answer + repair, 3 rounds


def _check_accounting(record: dict) -> None:
    """Per-role totals, per-backend totals and per-node totals all equal the run's total."""
    total = record["tokens"]["total"]
    per_role = record["tokens"]["per_role"]
    per_backend = record["tokens"]["per_backend"]
    for key in ("calls", "input_tokens", "output_tokens", "errors"):
        assert sum(r["total"].get(key, 0) for r in per_role.values()) == total[key]
        assert sum(b.get(key, 0) for b in per_backend.values()) == total[key]
        for r in per_role.values():
            assert sum(b.get(key, 0) for b in r["backends"].values()) == r["total"].get(key, 0)
    for key in ("seconds", "cost_usd"):
        assert sum(r["total"].get(key, 0) for r in per_role.values()) == pytest.approx(total[key], abs=1e-4)
    assert total["calls"] > 0 and total["input_tokens"] == 100 * total["calls"]


@needs_data
def test_show_prints_tokens_seconds_and_cost_per_role_and_the_switches(tmp_path):
    down, up = _servers()
    with down, up:
        llm = f"analyst=openai:a@{down.base_url}>none,planner=openai:b@{up.base_url}"
        record, run_dir = _run(tmp_path, llm)
    _check_accounting(record)
    assert [(s["round"], s["to"]) for s in record["llm_switches"]] == [(0, "none"), (1, "none"), (2, "none")]
    p = subprocess.run([sys.executable, "-m", "archlore.agents.cli", "show", str(run_dir / "record.json")],
                       check=False, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = " ".join(p.stdout.split())
    assert "LLM per role" in out and "planner" in out and "switch: round 1, analyst" in out
    assert "rate-limited past its retries" in out


@needs_data
def test_resume_keeps_the_roles(tmp_path):
    down, up = _servers()
    with down, up:
        llm = f"analyst=openai:a@{down.base_url}>none,planner=openai:b@{up.base_url}"
        _run(tmp_path, llm)
        saved = json.loads((tmp_path / "fb" / "settings.json").read_text())
        assert saved["llm"] == llm and saved["llm_config"] == {"default": {"retries": 0}}
        record, _ = run_persistent(RunSettings(run_id="fb", source=None), root=tmp_path, resume=True)
    assert record["llm_roles"]["planner"] == f"openai:b@{up.base_url}" and record["used"] == 15


@needs_data
def test_benchmark_rows_carry_llm_use_per_role(tmp_path):
    from archlore.benchmarks.harness import run_bench

    _, up = _servers()
    with up:  # the analyst's backend answers invalid output: it falls to none every round
        llm = f"analyst=openai:b@{up.base_url}>none,planner=openai:b@{up.base_url}"
        payload = run_bench("lapt-nb201", ["agent"], targets=["cifar100"], sources=["cifar10"], seeds=2,
                            out=tmp_path / "b.json", data=DATA, options={"llm": llm})
    (row,) = payload["rows"]
    usage = row["llm_usage"]
    assert usage["runs"] == 2 and row["llm"] == llm
    assert usage["switches"] == 2 * 4  # budget 20, warm-up 5, a check every 5: four rounds per seed, 2 seeds
    # per seed and round: the tool round, the answer and its repair (the mean of 2 seeds)
    assert usage["per_role"]["analyst"]["calls"] == 3 * 4
    for key in ("calls", "input_tokens", "output_tokens"):
        assert sum(r[key] for r in usage["per_role"].values()) == pytest.approx(usage["mean"][key])
    assert json.loads((tmp_path / "b.json").read_text())["rows"][0]["llm_usage"] == usage
    # the markdown beside it: one line for the run's total and one per role that called a model
    md = (tmp_path / "b.md").read_text()
    table = md.split("LLM use, mean per run", 1)[1].split("\n\n")[1].splitlines()[2:]
    mean, per_role = usage["mean"], usage["per_role"]
    assert [line.split(" | ")[4] for line in table] == ["all", "analyst", "planner"]
    assert f"| {mean['calls']:.1f} | {mean['input_tokens']:,.0f} |" in table[0]
    assert f"| {per_role['analyst']['calls']:.1f} |" in table[1] and f"| {per_role['planner']['calls']:.1f} |" in table[2]


def test_a_models_star_claim_against_a_carried_one_does_not_end_the_run(monkeypatch):
    """Seen in a real local run (lapt-tnb101, seed 1000): the model said 'avoid none at every
    position' while a carried principle preferred none at edge3<-1; the run died on the conflict."""
    from types import SimpleNamespace

    from archlore.agents import analyst
    from archlore.agents.principles import PrincipleSet
    from archlore.memory.record import Principle

    star = Principle(text="Avoid none at every position.", position="*", choice="none", direction="avoid", confidence=0.8)
    carried = Principle(text="Prefer none at edge3<-1.", position="edge3<-1", choice="none", direction="prefer", confidence=0.5)
    other = Principle(text="Prefer skip at edge3<-0.", position="edge3<-0", choice="skip_connect", direction="prefer", confidence=0.5)
    monkeypatch.setattr(analyst, "llm_analysis", lambda *a, **k: analyst.AnalysisResult([star, carried, other], by="local"))
    ctx = SimpleNamespace(llm_for=lambda role: object())  # any LLM: the model's path
    res = analyst.analyze(ctx, "update", [], [], None, [])
    assert res.principles == [star, other]
    assert res.events == [{"event": "conflict_dropped", "node": "analyze", "dropped": ["Prefer none at edge3<-1."]}]
    PrincipleSet(tuple(res.principles))
