"""The analyst and the planner over real HTTP (langchain-openai against a fake OpenAI server on
loopback). The server checks what the agents send: the source's layer lists and evidence, the
tool results, the ranked options, the validation error quoted in a repair turn."""

import json

import pytest

from archlore.agents import analyst, planner
from archlore.agents.context import RunContext, RunSettings
from archlore.agents.llm import LLMSettings, LLMSpec, make_openai
from archlore.tools.evaluator import Evaluator
from archlore.tools.executors import TabularExecutor
from archlore.tools.ledger import Ledger
from archlore.tools.source_view import SourceView
from archlore.tools.tables import load_nb201

from .conftest import DATA, needs_data
from .scripted import FakeOpenAI, completion, expect, message_text

FAST = LLMSettings(retries=2, backoff_min=0.01, backoff_max=0.05, timeout=10)


@pytest.fixture(scope="module")
def table():
    return load_nb201(str(DATA))


def _ctx(table, server):
    s = RunSettings(run_id="f", target="cifar100", source="cifar10", budget=30, memory="off",
                    llm=f"openai:fake@{server.base_url}", tool_rounds=1, show_n=3)
    ev = Evaluator(TabularExecutor(table, "cifar100"), Ledger(None), "f", 30)
    llm = make_openai(LLMSpec("openai", "fake", server.base_url), FAST)
    return RunContext(s, table.space, ev, SourceView(table, ["cifar10"], target="cifar100"), "CIFAR-100", "CIFAR-10", llm=llm)


def _layer_list(space, arch):
    return json.dumps([p.choices[c] for p, c in zip(space.positions, arch)])


@needs_data
def test_analyst_prompt_carries_the_source_and_its_tool_results(table):
    view = SourceView(table, ["cifar10"])
    best3 = [_layer_list(table.space, a) for a, _ in view.top_cells("cifar10", 3)]
    fourth = _layer_list(table.space, view.top_cells("cifar10", 4)[3][0])
    allowed = {"edge3<-0": ["skip_connect"]}
    reply = {"principles": [
        {"text": "Node 3 should take a skip from the input.", "position": "edge3<-0", "choice": "skip_connect",
         "direction": "prefer", "confidence": 0.9},
        {"text": "Use pooling on edge1<-0.", "position": "edge1<-0", "choice": "nor_conv_3x3",  # says the wrong op
         "direction": "avoid", "confidence": 0.4},
    ]}
    script = [
        # the first call: the source's best layer lists (show_n=3, not a 4th) and its ranked evidence
        (200, completion("subspace_size", json.dumps({"allowed": allowed})),
         expect(*best3, "Statistics over the source task's top-50 cells versus all 15625 cells",
                "edge3<-0: skip_connect (top share 100%, share 20%, lift 5.00)", role="user", absent=(fourth,))),
        # the second: the tool's answer, computed over the source's cells
        (200, completion("AnalystReply", json.dumps(reply)), expect('"size": 3125', '"cells_known_inside": 3125', role="tool")),
    ]
    with FakeOpenAI(script) as server:
        ctx = _ctx(table, server)
        res = analyst.analyze(ctx, "initial", [], [], analyst.source_evidence(ctx), [])
    assert not server.script
    # the tool went to the model with the args it asked for; "avoid nor_conv_3x3 at edge1<-0" has lift 4.1
    assert [e["args"] for e in res.events if e["event"] == "tool_call"] == [{"allowed": allowed}]
    assert res.principles[0].text == "Node 3 should take a skip from the input."
    assert any("contradicted by source cifar10: lift 4.10 for nor_conv_3x3" in r["reason"] for r in res.rejected)


@needs_data
def test_update_prompt_carries_the_runs_best_cells_and_the_current_statements(table):
    with FakeOpenAI([]) as server:
        ctx = _ctx(table, server)
    for arch in [(3, 3, 3, 1, 3, 3), (0, 0, 0, 0, 0, 0), (3, 2, 3, 1, 2, 3), (4, 4, 4, 4, 4, 4), (2, 3, 2, 1, 2, 3), (1, 1, 1, 1, 1, 1)]:
        ctx.evaluator.evaluate(arch)
    ev = analyst.run_evidence(ctx)
    ctx.llm = None  # the current principles: the statistical analyst's
    current = analyst.analyze(ctx, "initial", [], [], analyst.source_evidence(ctx), []).principles
    best = max(ctx.evaluator.pairs(), key=lambda c: c[1])[0]
    statement = current[0].text
    reply = {"principles": [{"text": "Keep the skip into node 3.", "position": "edge3<-0", "choice": "skip_connect",
                             "direction": "prefer", "confidence": 0.8}]}
    script = [
        (200, completion(None, content="enough"),
         expect("has improved", "out of 6 evaluated", _layer_list(table.space, best), statement, role="user")),
        (200, completion("AnalystReply", json.dumps(reply))),
    ]
    with FakeOpenAI(script) as server:
        ctx.llm = make_openai(LLMSpec("openai", "fake", server.base_url), FAST)
        res = analyst.analyze(ctx, "update", current, current, ev, [])
    assert res.principles[0].text == "Keep the skip into node 3." and res.by.startswith("openai:fake@")
    # the model spoke about one choice; the other current principles carry on with decayed confidence
    carried = {(p.position, p.choice): p.confidence for p in res.principles[1:]}
    assert ("edge3<-0", "skip_connect") not in carried
    assert carried == {(p.position, p.choice): round(p.confidence * 0.7, 3) for p in current
                       if (p.position, p.choice) != ("edge3<-0", "skip_connect")}


@needs_data
def test_planner_prompt_ranks_options_and_repair_quotes_the_error(table):
    names = [p.name for p in table.space.positions]
    too_small = {n: ["nor_conv_3x3"] for n in names}
    good = {**{n: ["nor_conv_3x3", "nor_conv_1x1"] for n in names}, "edge3<-0": ["skip_connect", "nor_conv_3x3"]}
    script = [
        (200, completion("PlannerReply", json.dumps(too_small)),
         expect("Options per position, best first",
                # ranked by the principles, then the counts: "prefer skip_connect" leads edge3<-0
                "edge3<-0: skip_connect (top share 100%, share 20%, lift 5.00), ",
                "Node 3 takes skip_connect from node 0", "at least 20", role="user")),
        (200, completion("PlannerReply", json.dumps(good)),
         expect("the refined space holds 1 architectures; it needs at least 20", last=True)),
    ]
    with FakeOpenAI(script) as server:
        ctx = _ctx(table, server)
        ev = analyst.source_evidence(ctx)
        llm, ctx.llm = ctx.llm, None
        principles = analyst.analyze(ctx, "initial", [], [], ev, []).principles
        ctx.llm = llm
        res = planner.plan(ctx, principles, ev, 20)
    assert not server.script and res.how == "repaired"
    assert res.filter.names(table.space)["edge3<-0"] == ["skip_connect", "nor_conv_3x3"]
    # the planner's first request also offered the PlannerReply schema with the space's names
    tool = server.requests[0]["tools"][0]["function"]
    assert tool["name"] == "PlannerReply" and "edge3<-0" in tool["parameters"]["properties"]
    assert "Principles:" in message_text(server.requests[0], role="user")
