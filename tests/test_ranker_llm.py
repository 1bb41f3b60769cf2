"""The rank strategy's LLM chooser over real HTTP (langchain-openai against a scripted OpenAI-compatible
server on loopback): the server checks the prompt it receives; malformed, out-of-pool and empty
answers are repaired once, then the surrogate's candidate is taken and the record says so; the
prompt's token budget holds on the largest space."""

import json

import numpy as np
from archlore.agents.context import RunSettings
from archlore.agents.llm import LLMSettings, LLMSpec, make_openai
from archlore.agents.ranker import (
    MIN_TOKEN_BUDGET,
    TEMPLATE_ALLOWANCE,
    LLMChooser,
    build_prompt,
    estimate_tokens,
)
from archlore.agents.runner import execute
from archlore.tools.evaluator import Evaluator
from archlore.tools.executors import Metrics
from archlore.tools.ledger import Ledger
from archlore.tools.rank import RankSearch, encode, history_lines, sample_pool
from archlore.tools.spaces import (
    MAX_CHOICES,
    MAX_POSITIONS,
    NB201Space,
    Position,
    SearchSpace,
)
from archlore.tools.strategies import run_search

from .conftest import needs_data
from .scripted import FakeOpenAI, completion, expect, message_text

FAST = LLMSettings(retries=0, timeout=10)
NB = NB201Space()


def _llm(server):
    return make_openai(LLMSpec("openai", "fake", server.base_url), FAST)


def _setup(seed=0, n_hist=6):
    rng = np.random.default_rng(seed)
    hist = [(NB.sample(rng), float(v)) for v in rng.random(n_hist)]
    pool = [encode(NB, a) for a in sample_pool(NB, hist, NB.full_filter(), rng, 10)]
    return history_lines(NB, hist), pool


def _answer(candidate):
    return completion("RankChoice", json.dumps({"candidate": candidate}))


def test_a_valid_answer_names_a_numbered_candidate_and_the_prompt_carries_history_and_pool():
    history, pool = _setup()
    best = next(line for line in history if line.endswith("|1.000"))

    def schema_is_numbers(request):
        params = request["tools"][0]["function"]["parameters"]["properties"]["candidate"]
        assert params["enum"] == list(range(1, 11)), params
        assert request["tool_choice"]["function"]["name"] == "RankChoice"

    script = [(200, _answer(4), lambda r: (expect(best, *history, "1: " + pool[0], "10: " + pool[9], role="user")(r),
                                          expect("0=none", "4=avg_pool_3x3", role="system")(r), schema_is_numbers(r)))]
    with FakeOpenAI(script) as server:
        chooser = LLMChooser(_llm(server), NB)
        assert chooser(history, pool) == 3
    call = chooser.calls[0]
    assert call["how"] == "llm" and call["answer"] == 3 and call["attempts"] == 1
    assert call["prompt_tokens"] == 100 and call["output_tokens"] == 20  # the server's usage


def test_a_code_from_the_pool_is_accepted_as_an_answer():
    history, pool = _setup(1)
    with FakeOpenAI([(200, _answer(pool[6]))]) as server:
        assert LLMChooser(_llm(server), NB)(history, pool) == 6


def test_out_of_pool_answer_is_repaired_once_with_the_error_quoted():
    history, pool = _setup(2)
    script = [
        (200, _answer(42)),
        (200, _answer(2), expect("candidate 42 is not in the pool: answer with a number from 1 to 10", last=True)),
    ]
    with FakeOpenAI(script) as server:
        chooser = LLMChooser(_llm(server), NB)
        assert chooser(history, pool) == 1
    assert chooser.calls[0]["how"] == "repaired" and chooser.calls[0]["attempts"] == 2
    assert "candidate 42" in chooser.calls[0]["errors"][0]


def test_malformed_then_empty_answers_fall_back_to_the_surrogate_and_say_so():
    history, pool = _setup(3)
    script = [
        (200, completion("RankChoice", '{"candidate": 3')),  # cut-off JSON
        (200, completion(None, content=""), expect("not valid JSON", last=True)),  # nothing at all
    ]
    with FakeOpenAI(script) as server:
        chooser = LLMChooser(_llm(server), NB)
        assert chooser(history, pool) is None
    call = chooser.calls[0]
    assert call["how"] == "fallback: surrogate" and call["answer"] is None and len(call["errors"]) == 2
    assert "no RankChoice function call" in call["errors"][1]


def test_a_server_error_falls_back_without_ending_the_search():
    history, pool = _setup(4)
    with FakeOpenAI([(400, {"error": {"message": "bad request"}})]) as server:
        chooser = LLMChooser(_llm(server), NB)
        assert chooser(history, pool) is None
    assert chooser.calls[0]["how"] == "fallback: surrogate" and "400" in chooser.calls[0]["errors"][0]


def test_rank_search_through_the_server_records_each_step():
    class Sum:
        space, task = NB, "sum"

        def evaluate(self, arch):
            return Metrics(valid=float(sum(arch)))

    script = [(200, _answer(1)), (200, _answer(0)), (200, _answer(2), expect("4: ", role="user")), (200, _answer(1))]
    picks = []
    with FakeOpenAI(script) as server:
        chooser = LLMChooser(_llm(server), NB)
        ev = Evaluator(Sum(), Ledger(None), "r", 4)
        run_search(RankSearch(chooser, on_pick=picks.append), ev, None, 4, seed=0)
    # no call at the first step (no trials yet); the second answer (0) was out of the pool and
    # repaired by the third
    assert [c["how"] for c in chooser.calls] == ["surrogate: no trials yet", "llm", "repaired", "llm"]
    assert [p["by"] for p in picks] == ["surrogate"] + ["chooser"] * 3
    assert [encode(NB, a) for a, _ in ev.pairs()] == [p["pool"][p["chosen"]] for p in picks]


def test_the_prompt_budget_holds_on_the_largest_space():
    big = SearchSpace("largest", [Position(f"position{j:03d}", tuple(f"choice{i:02d}" for i in range(MAX_CHOICES)))
                                  for j in range(MAX_POSITIONS)])
    rng = np.random.default_rng(0)
    hist = [(big.sample(rng), float(v)) for v in rng.random(250)]
    pool = [encode(big, a) for a in sample_pool(big, hist, big.full_filter(), rng, 10)]
    lines = history_lines(big, hist)
    assert len(lines) == 200  # the history is capped at 200 trials before any budget
    for budget in (MIN_TOKEN_BUDGET, 2000, 8000):
        p = build_prompt(big, lines, pool, budget)
        assert p.estimated_tokens <= budget and p.shown_pool >= 1
        assert 0 < p.shown_pool < 10 or p.shown_history < 200  # something had to go
    # what really goes over the wire stays within the stated budget
    with FakeOpenAI([(200, _answer(1))]) as server:
        chooser = LLMChooser(_llm(server), big, token_budget=8000)
        assert chooser(lines, pool) == 0
    req = server.requests[0]
    sent = estimate_tokens(message_text(req), json.dumps(req["tools"][0]["function"]["parameters"]))
    assert sent + TEMPLATE_ALLOWANCE <= 8000
    # the best trials are the ones kept
    kept = [line for line in lines if line in message_text(req)]
    assert kept and min(float(k.split("|")[1]) for k in kept) >= sorted(float(x.split("|")[1]) for x in lines)[-len(kept)]


@needs_data
def test_rank_alone_and_inside_the_filters_with_llm_none(data_dir):
    for strategy in ("rank", "guided-rank"):
        s = RunSettings(run_id=f"r-{strategy}", budget=12, memory="off", strategy=strategy, data=str(data_dir))
        rec = execute(s)
        picks = [e for e in rec["events"] if e["event"] == "rank_choice"]
        assert rec["used"] == 12 and len(picks) == 12
        assert all(p["how"] == "surrogate" and not p["changed"] for p in picks)
        assert all(p["pool"][p["chosen"]] in {encode(NB, NB.parse(e["arch"])) for e in rec["evaluations"]} for p in picks)
        filters = rec["filters"]
        if strategy == "rank":
            assert filters[0]["size"] == 15625 and rec["principles"] == []
        else:
            assert filters[0]["size"] < 15625


@needs_data
def test_bench_strategy_rank_asks_the_ranker_role_through_one_server(data_dir):
    from archlore.benchmarks import protocols as P
    from archlore.benchmarks.harness import make_request, run_strategy
    from archlore.tools.tables import load_nb201

    table = load_nb201(str(data_dir))
    proto = P.get_protocol("lapt-nb201")
    n = proto.budget - 1  # no call at the first step
    script = [(200, _answer(2), expect("Candidates (unseen), ranked best first", role="user"))] * n
    with FakeOpenAI(script) as server:
        req = make_request(table, proto, "cifar100", None, 1000, options={"llm": f"openai:fake@{server.base_url}"})
        cells = run_strategy("rank", req)
    assert len(cells) == proto.budget == len(set(cells)) and len(server.requests) == n and not server.script


def test_the_local_model_is_chosen_by_the_environment(monkeypatch):
    import pytest
    from archlore.agents.local_llm import (
        QWEN25_CODER_0_5B,
        QWEN25_CODER_1_5B,
        LocalLLMError,
        LocalLLMServer,
        default_spec,
    )

    monkeypatch.delenv("ARCHLORE_LLM_MODEL", raising=False)
    assert default_spec() is QWEN25_CODER_1_5B
    monkeypatch.setenv("ARCHLORE_LLM_MODEL", "0.5B")
    assert default_spec() is QWEN25_CODER_0_5B and LocalLLMServer().model == QWEN25_CODER_0_5B.name
    monkeypatch.setenv("ARCHLORE_LLM_MODEL", "7b")
    with pytest.raises(LocalLLMError, match="ARCHLORE_LLM_MODEL='7b' is unknown: use 1.5b, 0.5b"):
        default_spec()
