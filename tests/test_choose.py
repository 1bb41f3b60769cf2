"""The analyst and the planner in "choose" mode (agents/choosing.py), through a scripted
OpenAI-compatible server standing in for the local llama.cpp one: the prompts it receives (numbered
candidates, no function definition, a JSON schema as the response format), the choices taken into
the run, and malformed answers repaired once and then replaced by the statistics' answer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from archlore.agents import choosing, local_llm
from archlore.agents.context import RunSettings
from archlore.agents.runner import run_persistent
from archlore.tools.ledger import Ledger

from .conftest import DATA, needs_data
from .scripted import ByFunction, FakeOpenAI, completion, message_text


class _StandIn:
    """Stands in for LocalLLMServer: its `base_url` is the fake server."""

    def __init__(self, url: str) -> None:
        self.base_url, self.model = url, "stand-in"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _json(content: dict | str) -> tuple:
    return 200, completion(None, content=content if isinstance(content, str) else json.dumps(content))


def _run(tmp_path, monkeypatch, server: FakeOpenAI, llm: str = "local", **kw: Any) -> dict:
    monkeypatch.setattr(local_llm, "LocalLLMServer", lambda: _StandIn(server.base_url))
    settings = RunSettings(run_id="ch", target="cifar100", source="cifar10", budget=15, memory="off", data=str(DATA),
                           llm=llm, **kw)
    record, run_dir = run_persistent(settings, root=tmp_path)
    ledger = Ledger(run_dir / "ledger.db")
    try:
        assert len(ledger.evaluations("ch")) == 15  # the budget is exact whatever the model said
    finally:
        ledger.close()
    return record


def _candidates(request: dict) -> list[str]:
    return [line for line in message_text(request, role="user").splitlines() if line[:1].isdigit() and ". " in line]


@needs_data
def test_a_local_model_chooses_by_number_and_the_run_takes_its_choice(tmp_path, monkeypatch):
    with FakeOpenAI([]) as server:
        seen: list[dict] = []

        def analyst(request: dict) -> tuple:
            seen.append(request)
            return _json({"choose": [3, 1, 2]})

        server.script = ByFunction(server, {"AnalystChoice": analyst, "FilterChoice": _json({"option": 2})})
        record = _run(tmp_path, monkeypatch, server)
    # every request: JSON constrained by a schema, no function definition in the prompt
    assert server.requests and all("tools" not in r and r["response_format"]["type"] == "json_object" for r in server.requests)
    assert all(r["response_format"]["schema"]["title"] in ("AnalystChoice", "FilterChoice") for r in server.requests)
    first = seen[0]
    lines = _candidates(first)
    assert 3 <= len(lines) <= choosing.MAX_SHOWN and lines[0].startswith("1. prefer ")
    assert "top " in lines[0] and "all " in lines[0] and "cifar10" in message_text(first, role="user")
    schema = first["response_format"]["schema"]["properties"]["choose"]
    assert schema["items"]["enum"] == list(range(1, len(lines) + 1)) and schema["minItems"] == choosing.MIN_KEPT
    # round 0: the three chosen candidates lead, in the model's order
    effect = lambda line: line.split(". ", 1)[1].split(":")[0]  # "prefer X at P"
    first_round = next(h for h in record["principles_history"] if h["round"] == 0)
    led = [f"{p['direction']} {p['choice']} at {p['position']}" for p in first_round["principles"][:3]]
    assert led == [effect(lines[2]), effect(lines[0]), effect(lines[1])]
    assert first_round["by"].startswith("local (chose 3 of ")
    chosen = [e for e in record["events"] if e["event"] == "chosen" and e["node"] == "analyze"]
    assert chosen and chosen[0]["kept"] == [3, 1, 2] and len(chosen[0]["dropped"]) == len(lines) - 3
    assert all(isinstance(e["filter_changed"], bool) for e in chosen)
    # the planner's option 2 is the top-1 filter (widened): narrower than the statistics' top-2
    plans = [e for e in record["events"] if e["event"] == "chosen" and e["node"] == "plan"]
    assert plans and all(e["option"] == 2 and e["width"] == 1 and e["changed"] for e in plans)
    assert {f["how"] for f in record["filters"]} == {"llm"}
    per_role = record["tokens"]["per_role"]
    assert per_role["analyst"]["total"]["calls"] == len(seen) and per_role["planner"]["total"]["calls"] == len(plans)


@needs_data
def test_malformed_choices_are_repaired_once_then_the_statistics_answer(tmp_path, monkeypatch):
    analyst = iter([_json({"choose": [99]}), _json({"choose": [1, 2, 3]})] + [_json("not json at all")] * 20)
    planner = iter([_json({"option": "two"}), _json({"option": 7})] + [_json({"option": 1})] * 20)
    with FakeOpenAI([]) as server:
        server.script = ByFunction(server, {"AnalystChoice": lambda r: next(analyst), "FilterChoice": lambda r: next(planner)})
        record = _run(tmp_path, monkeypatch, server)
    repair = next(r for r in server.requests[1:] if r["response_format"]["schema"]["title"] == "AnalystChoice")
    assert "Your previous answer was rejected: 99 is not a candidate" in message_text(repair, role="user")
    history = {h["round"]: h for h in record["principles_history"]}
    assert history[0]["by"].startswith("local (chose 3 of ")  # repaired in round 0
    assert all(history[r]["by"] == "statistics" for r in history if r > 0)  # invalid twice: the statistics
    # the planner: 'two' and 7 are refused, round 0 falls back to the statistics' filter, later rounds choose 1
    assert record["filters"][0]["how"] == "fallback"
    assert {f["how"] for f in record["filters"][1:]} == {"llm"}
    switches = [s for s in record["llm_switches"] if s["role"] == "planner"]
    assert len(switches) == 1 and switches[0]["to"] == "none" and "7 is not a candidate" in switches[0]["reason"]


@needs_data
def test_prompt_write_in_the_config_makes_a_local_model_write(tmp_path, monkeypatch):
    good = {n: ["nor_conv_3x3", "nor_conv_1x1"] for n in ["edge1<-0", "edge2<-0", "edge2<-1", "edge3<-0", "edge3<-1", "edge3<-2"]}
    with FakeOpenAI([]) as server:
        server.script = ByFunction(server, {"PlannerReply": (200, completion("PlannerReply", json.dumps(good)))})
        record = _run(tmp_path, monkeypatch, server, llm="planner=local,default=none",
                      llm_config={"planner": {"prompt": "write"}})
    assert set(server.script.asked) == {"PlannerReply"}
    assert all("tools" in r and "response_format" not in r for r in server.requests)
    assert {f["how"] for f in record["filters"]} <= {"llm", "repaired"}  # "repaired": asked to reconsider a dropped favourite


@needs_data
def test_a_hosted_model_told_to_choose_is_asked_by_function_calling(tmp_path, monkeypatch):
    with FakeOpenAI([]) as server:
        server.script = ByFunction(server, {"FilterChoice": (200, completion("FilterChoice", json.dumps({"option": 1})))})
        monkeypatch.setattr(local_llm, "LocalLLMServer", lambda: _StandIn(server.base_url))
        settings = RunSettings(run_id="ch", target="cifar100", source="cifar10", budget=10, memory="off", data=str(DATA),
                               llm=f"planner=openai:m@{server.base_url},default=none", llm_config={"planner": {"prompt": "choose"}})
        record, _ = run_persistent(settings, root=tmp_path)
    assert server.requests and all(r["tool_choice"]["function"]["name"] == "FilterChoice" and "response_format" not in r
                                   for r in server.requests)
    assert "Answer by calling FilterChoice" in message_text(server.requests[0], role="system")
    assert {f["how"] for f in record["filters"]} == {"llm"}


@needs_data
def test_no_call_when_there_is_nothing_to_choose(tmp_path, monkeypatch):
    with FakeOpenAI([]) as server:
        server.script = ByFunction(server, {"AnalystChoice": _json({"choose": [1, 2, 3]})})
        record = _run(tmp_path, monkeypatch, server, max_choices=1)  # one filter: the top-1 choices
    assert set(server.script.asked) == {"AnalystChoice"}  # the planner was never asked
    assert {f["how"] for f in record["filters"]} == {"statistics"}


def test_read_numbers():
    assert choosing.read_numbers([3, "1", 3, 2], 5, 4) == ([2, 0, 1], "")
    assert choosing.read_numbers([6], 5, 4)[0] is None
    assert choosing.read_numbers(["x"], 5, 4)[0] is None
    assert choosing.read_numbers([], 5, 4)[0] is None
    assert choosing.read_numbers([1, 2], 5, 4, min_items=3) == (None, "2 numbers given: answer with 3 to 4 different numbers from 1 to 5")
    assert choosing.read_numbers([1, 2, 3, 4, 5], 5, 4)[0] is None
    assert choosing.read_numbers(2, 5, 1) == ([1], "")


def test_the_config_refuses_an_unknown_prompt_style():
    from archlore.agents.roles import check_config
    from archlore.tools.errors import ConfigError

    assert check_config({"planner": {"prompt": "choose"}}) == {"planner": {"prompt": "choose"}}
    with pytest.raises(ConfigError, match="planner.prompt"):
        check_config({"planner": {"prompt": "guess"}})


@needs_data
def test_a_chooser_that_keeps_failing_hands_the_round_to_a_writer_behind_it(tmp_path, monkeypatch):
    draft = {"principles": [{"text": "Prefer nor_conv_3x3 everywhere.", "position": "*", "choice": "nor_conv_3x3",
                             "direction": "prefer", "confidence": 0.8}]}
    with FakeOpenAI([]) as local, FakeOpenAI([]) as hosted:
        local.script = ByFunction(local, {"AnalystChoice": _json("[[[")})
        hosted.script = ByFunction(hosted, {"AnalystReply": (200, completion("AnalystReply", json.dumps(draft)))})
        record = _run(tmp_path, monkeypatch, local, llm=f"analyst=local>openai:m@{hosted.base_url},default=none",
                      tool_rounds=0)
    # every round: the local model is asked to choose (answer + repair), then the hosted one writes
    assert local.script.asked == ["AnalystChoice", "AnalystChoice"] * 3
    assert set(hosted.script.asked) == {"AnalystReply"} and len(hosted.requests) == 3
    switches = [(s["role"], s["from"], s["to"]) for s in record["llm_switches"]]
    assert switches == [("analyst", "local", f"openai:m@{hosted.base_url}")] * 3
    assert all(h["by"].startswith(f"openai:m@{hosted.base_url}") for h in record["principles_history"])
