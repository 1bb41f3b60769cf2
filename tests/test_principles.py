"""Principle sets: no contradictions, few readable statements over unchanged effects, one ranking,
tuning passed in, evidence that survives the graph state."""

import dataclasses
import json
import math

import pytest

from archlore.agents import analyst, planner
from archlore.agents.context import RunContext, RunSettings
from archlore.agents.llm import LLM, LLMSettings
from archlore.agents.principles import (
    PrincipleConflict,
    PrincipleSet,
    merge_principles,
    render_statements,
    text_direction,
)
from archlore.agents.tuning import TUNING, Tuning
from archlore.memory.record import Principle
from archlore.tools.evaluator import Evaluator
from archlore.tools.evidence import Evidence, choice_stats, frequency_filter, rank_choices
from archlore.tools.executors import TabularExecutor
from archlore.tools.ledger import Ledger
from archlore.tools.source_view import SourceView
from archlore.tools.spaces import NB201Space
from archlore.tools.tables import load_nb201

from .conftest import DATA, needs_data
from .scripted import ScriptedChatModel, tool_answer

FAST = LLMSettings(retries=0, backoff_min=0.01, backoff_max=0.05, timeout=10)


def P(position, choice, direction, confidence=0.5, text=None):  # noqa: N802
    return Principle(text=text or f"{direction} {choice} at {position}", position=position, choice=choice,
                     direction=direction, confidence=confidence)


@pytest.fixture(scope="module")
def table():
    return load_nb201(str(DATA))


def _ctx(table, llm=None, **kw):
    s = RunSettings(**{"run_id": "p", "target": "cifar100", "source": "cifar10", "budget": 30, "memory": "off", **kw})
    ev = Evaluator(TabularExecutor(table, "cifar100"), Ledger(None), "p", 30)
    return RunContext(s, table.space, ev, SourceView(table, ["cifar10"], target="cifar100"), "CIFAR-100", "CIFAR-10", llm=llm)


# ---------------------------------------------------------------------------------------------
# the set refuses contradictions
def test_a_set_that_prefers_and_avoids_one_choice_at_one_position_is_refused():
    with pytest.raises(PrincipleConflict, match="prefer and avoid none at edge1<-0"):
        PrincipleSet.of([P("edge1<-0", "none", "prefer"), P("edge2<-0", "none", "avoid"), P("edge1<-0", "none", "avoid")])
    with pytest.raises(PrincipleConflict, match="at edge3<-0"):  # "*" meets every position
        PrincipleSet.of([P("*", "avg_pool_3x3", "avoid"), P("edge3<-0", "avg_pool_3x3", "prefer")])
    ok = PrincipleSet.of([P("edge1<-0", "none", "avoid"), P("edge2<-0", "none", "prefer"), P("edge1<-0", "skip_connect", "prefer")])
    assert PrincipleSet.from_json(json.loads(json.dumps(ok.to_json()))) == ok


def test_show_never_prints_a_contradiction_silently():
    lines = render_statements([P("edge1<-0", "none", "avoid").model_dump(), P("edge1<-0", "none", "prefer").model_dump()])
    assert lines[0].startswith("warning:") and "edge1<-0" in lines[0]
    assert len(lines) == 2 and "avoid none" in lines[1]  # the first of the pair is shown, the other is not


def test_merging_lets_new_claims_win_and_restates_what_is_left():
    old_text = "Convolutions everywhere."
    old = [P(f"edge{p}", "nor_conv_3x3", "prefer", 0.8, old_text) for p in ("1<-0", "2<-0", "2<-1")]
    new = [P("edge1<-0", "nor_conv_3x3", "avoid", 0.6), P("*", "none", "avoid", 0.5)]
    merged = merge_principles(new, old + [P("edge3<-0", "none", "prefer", 0.9)], decay=0.5)
    PrincipleSet.of(merged)  # no contradiction: the new "avoid none at *" removed the old "prefer none"
    assert [(p.position, p.choice, p.direction, p.confidence) for p in merged] == [
        ("edge1<-0", "nor_conv_3x3", "avoid", 0.6), ("*", "none", "avoid", 0.5),
        ("edge2<-0", "nor_conv_3x3", "prefer", 0.4), ("edge2<-1", "nor_conv_3x3", "prefer", 0.4),
    ]
    # the old sentence spoke of three edges; the two kept effects get one that claims only them
    assert {p.text for p in merged[2:]} == {"Held from an earlier round: prefer nor_conv_3x3 at edge2<-0 and edge2<-1."}


# ---------------------------------------------------------------------------------------------
# statements a person reads; effects the search uses
@needs_data
def test_statistical_principles_read_as_a_few_statements(table):
    ctx = _ctx(table)
    ev = analyst.source_evidence(ctx)
    res = analyst.analyze(ctx, "initial", [], [], ev, [])
    statements = PrincipleSet.of(res.principles).statements
    assert len(res.principles) == 16 and len(statements) <= 6
    conv = next(st for st in statements if st.effects[0].choice == "nor_conv_3x3" and st.effects[0].direction == "prefer")
    assert {p.position for p in conv.effects} == {"edge1<-0", "edge2<-0", "edge2<-1", "edge3<-1", "edge3<-2"}
    assert conv.text.startswith("The top cells of source cifar10 favour nor_conv_3x3 at edge1<-0, edge2<-0, edge2<-1,")
    assert "40-82% of them use it there, against 20% of all cells" in conv.text
    skip = next(st for st in statements if st.effects[0].choice == "skip_connect" and st.effects[0].position == "edge3<-0")
    assert skip.text.startswith("Node 3 takes skip_connect from node 0: 100% of the top cells")
    # each effect keeps its own numbers underneath
    assert all(p.evidence.startswith("source cifar10: ") and p.position in p.evidence for p in res.principles)
    lines = render_statements(res.principles)
    assert len(lines) == len(statements) <= 6 and not any(line.startswith("warning") for line in lines)


@needs_data
def test_recalled_principles_that_contradict_each_other_keep_the_better_ranked(table):
    ctx = _ctx(table, source=None)
    recalled = [
        {"principle": P("edge2<-1", "avg_pool_3x3", "prefer", 0.7).model_dump(), "task": "a", "run_id": "r1", "similarity": 0.9},
        {"principle": P("edge2<-1", "avg_pool_3x3", "avoid", 0.8).model_dump(), "task": "b", "run_id": "r2", "similarity": 0.5},
    ]
    res = analyst.analyze(ctx, "initial", [], [], None, recalled)
    assert [(p.choice, p.direction, p.confidence) for p in res.principles] == [("avg_pool_3x3", "prefer", 0.63)]
    assert [e["event"] for e in res.events] == ["recalled_conflict"]


@needs_data
def test_llm_claims_that_contradict_each_other_or_their_own_text(table):
    reply = {"principles": [
        # lift of none at edge3<-1 is 0.9: neither claim is rejected by the statistics alone
        {"text": "Zero ops on edge3<-1 are fine.", "position": "edge3<-1", "choice": "none", "direction": "prefer", "confidence": 0.6},
        {"text": "Avoid zero ops on edge3<-1.", "position": "edge3<-1", "choice": "none", "direction": "avoid", "confidence": 0.5},
        # the sentence says the opposite of the effect (nor_conv_1x1 at edge2<-0: lift 1.1)
        {"text": "Avoid 1x1 convolutions on edge2<-0.", "position": "edge2<-0", "choice": "nor_conv_1x1", "direction": "prefer", "confidence": 0.4},
        {"text": "No pooling anywhere.", "position": "*", "choice": "avg_pool_3x3", "direction": "avoid", "confidence": 0.7},
    ]}
    model = ScriptedChatModel(script=[tool_answer("AnalystReply", reply)])
    ctx = _ctx(table, LLM(model, "scripted", FAST), tool_rounds=0)
    res = analyst.analyze(ctx, "initial", [], [], analyst.source_evidence(ctx), [])
    PrincipleSet.of(res.principles)
    mine = res.principles[:3]
    assert [(p.position, p.choice, p.direction) for p in mine] == [
        ("edge3<-1", "none", "avoid"), ("edge2<-0", "nor_conv_1x1", "prefer"), ("*", "avg_pool_3x3", "avoid")]
    assert any("contradicts the answer's own claim to avoid none" in r["reason"] for r in res.rejected)
    replaced = [e for e in res.events if e["event"] == "text_replaced"]
    assert len(replaced) == 1 and replaced[0]["was"] == "Avoid 1x1 convolutions on edge2<-0."
    assert mine[1].text == replaced[0]["now"] and mine[1].text.startswith("Prefer nor_conv_1x1 at edge2<-0: 22% of the top cells")
    assert mine[2].text == "No pooling anywhere."  # consistent with its effect: kept as written
    # the statistics fill what the model left unsaid, but nothing about pooling: "*" spoke for every edge
    assert not any(p.choice == "avg_pool_3x3" for p in res.principles[3:])


@pytest.mark.parametrize("text,choice,said", [
    ("Avoid pooling on the first edge.", "avg_pool_3x3", "avoid"),
    ("3x3 convolutions on the first edge carry the accuracy.", "nor_conv_3x3", "prefer"),
    ("3x3 convolutions on the first edge carry the accuracy.", "nor_conv_1x1", None),
    ("Prefer convolutions over pooling.", "avg_pool_3x3", "avoid"),
    ("Prefer convolutions over pooling.", "nor_conv_1x1", "prefer"),
    ("Do not use skip connections into node 1.", "skip_connect", "avoid"),
    ("A skip from the input to the output node helps.", "skip_connect", "prefer"),
    ("None of the top cells use pooling here.", "none", None),
    ("Edge 3 should be none.", "none", None),
])
def test_what_a_sentence_says_about_a_choice(text, choice, said):
    assert text_direction(text, choice, NB201Space().positions[0].choices) == said


# ---------------------------------------------------------------------------------------------
# one ranking, one settings object, evidence that travels
@needs_data
def test_one_ranking_serves_the_planner_and_the_frequency_prior(table):
    ctx = _ctx(table)
    ev = analyst.source_evidence(ctx)
    plain = rank_choices(table.space, ev.stats)
    assert [r[0] for r in plain] == [3, 3, 3, 1, 3, 3]  # most frequent among the top-50 of cifar10
    assert frequency_filter(table.space, ctx.source.all_cells("cifar10"), k=1, top_n=50).allowed == tuple((r[0],) for r in plain)
    avoid_conv = [P("edge1<-0", "nor_conv_3x3", "avoid", 0.9)]
    assert planner.rank_options(table.space, avoid_conv, ev.stats)[0][-1] == 3  # a principle outranks the counts
    assert planner.rank_options(table.space, avoid_conv, None)[0] == [0, 1, 2, 4, 3]  # no statistics: weight, then id


@needs_data
def test_evidence_round_trips_through_json_exactly(table):
    ctx = _ctx(table)
    for arch in [(3, 3, 3, 1, 3, 3), (0, 0, 0, 0, 0, 0), (1, 2, 3, 4, 0, 1), (4, 4, 4, 4, 4, 4), (2, 3, 2, 1, 2, 3)]:
        ctx.evaluator.evaluate(arch)
    for ev in (analyst.source_evidence(ctx), analyst.run_evidence(ctx)):
        raw = json.dumps(ev.to_json(), allow_nan=False)  # strict JSON: NaN means become null
        back = Evidence.from_json(json.loads(raw))
        assert back.to_json() == ev.to_json() and back.label == ev.label and back.shown == ev.shown
        assert all(a == b or (math.isnan(a.mean_metric) and math.isnan(b.mean_metric))
                   for ca, cb in zip(ev.stats, back.stats) for a, b in zip(ca, cb))
    run = analyst.run_evidence(ctx)
    assert run.n_cells == 5 and run.effects and any(math.isnan(s.mean_metric) for col in run.stats for s in col)
    # the planner plans from the deserialised evidence exactly as from the original
    assert planner.plan(ctx, [], Evidence.from_json(run.to_json()), 20).filter == planner.plan(ctx, [], run, 20).filter


@needs_data
def test_tuning_is_passed_in_not_hard_coded(table):
    with pytest.raises(dataclasses.FrozenInstanceError):
        TUNING.prefer_lift = 2.0  # type: ignore[misc]
    ctx = _ctx(table)
    ev = analyst.source_evidence(ctx)
    strict = Tuning(prefer_lift=4.5, prefer_lift_runner_up=99.0, avoid_max_lift=-1.0)
    res = analyst.analyze(ctx, "initial", [], [], ev, [], tuning=strict)
    assert [(p.position, p.choice, p.direction) for p in res.principles] == [("edge3<-0", "skip_connect", "prefer")]
    # the planner asks back when the evidence's favourite is dropped, unless the tuning says it is not clear enough
    names = [p.name for p in table.space.positions]
    drop_skip = {n: ["nor_conv_3x3", "nor_conv_1x1"] for n in names}
    for tuning, asked in ((TUNING, True), (Tuning(conflict_min_lift=6.0), False)):
        model = ScriptedChatModel(script=[tool_answer("PlannerReply", drop_skip)] * 2)
        ctx.llm = LLM(model, "scripted", FAST)
        res = planner.plan(ctx, [], ev, 20, tuning=tuning)
        assert (len(model.seen) == 2) == asked and res.how == ("repaired" if asked else "llm")


@needs_data
def test_run_lessons_are_statements_against_a_uniform_choice(table):
    cells = [(a, v) for a, v in SourceView(table, ["cifar100"]).top_cells("cifar100", 40)]
    lesson = analyst.summary_principles(table.space, cells, 5, "cifar100 (run r)")
    assert lesson and all("under a uniform choice" in p.text for p in lesson)
    assert len(PrincipleSet.of(lesson).statements) < len(lesson)
    stats = choice_stats(table.space, cells, 5)
    for p in lesson:  # the effects are the shares of the run's top cells, as before
        s = next(s for s in stats[[q.name for q in table.space.positions].index(p.position)] if s.choice == p.choice)
        assert p.evidence.startswith(f"cifar100 (run r): {s.top_count} of the top cells use {p.choice}")


def test_a_star_claim_is_checked_where_its_choice_exists():
    from archlore.agents.analyst import PrincipleDraft, verify
    from archlore.tools.spaces import Position, SearchSpace

    space = SearchSpace("uneven", [Position("a", ("1", "2", "3", "4")), Position("b", ("x",))])
    cells = [((c, 0), float(c == 3)) for c in range(4)] * 3  # "4" at a: every top cell
    ev = Evidence.compute(space, cells, label="source t", origin="source", task="t", n_top=3, shown=[])
    draft = lambda choice: PrincipleDraft(text="t", position="*", choice=choice, direction="prefer", confidence=0.5)  # noqa: E731
    kept, rejected = verify([draft("4"), draft("x"), draft("zz")], space, ev)
    assert [(p.position, p.choice) for p in kept] == [("*", "4"), ("*", "x")]
    assert len(rejected) == 1 and "unknown choice 'zz'" in rejected[0]["reason"]


def test_a_position_named_note_keeps_its_choices():
    from archlore.tools.spaces import Position, SearchSpace

    space = SearchSpace("n", [Position("note", ("a", "b")), Position("act", ("x", "y"))])
    schema = planner.planner_reply_model(space, 2)
    reply = schema.model_validate({"note": ["a"], "act": ["x", "y"], "planner_note": "why"})
    assert planner.validate_reply(reply, space, 2, 1).allowed == ((0,), (0, 1)) and reply.note == "why"


def test_model_texts_are_cleaned_deduplicated_and_kept_on_topic():
    """What the local model did in a real demo run: it pasted the prompt's effect tags into its
    sentences, stated one effect twice, and put a sentence about skip_connect on 'avoid none'."""
    space = NB201Space()
    P = lambda text, choice="none", d="avoid": Principle(  # noqa: E731
        text=text, position="edge1<-0", choice=choice, direction=d, confidence=0.9)
    out, events = analyst.check_texts([
        P("The top cells rarely use none at edge1<-0. [avoid none @ edge1<-0 (0.95)] [avoid none @ edge3<-0 (0.95)]"),
        P("Node 1 rarely takes none from node 0."),  # the same effect again
        P("Node 1 rarely takes skip_connect from node 0 in the top cells.", choice="nor_conv_1x1"),
        P("Pooling hurts here.", choice="avg_pool_3x3"),
        P("Skips help. [prefer skip_connect @ edge1<-0, edge2<-0 (0.40", choice="skip_connect", d="prefer"),  # a cut tag
    ], space, None)
    assert [p.choice for p in out] == ["none", "nor_conv_1x1", "avg_pool_3x3", "skip_connect"]
    assert out[3].text == "Skips help."
    assert out[0].text == "The top cells rarely use none at edge1<-0."
    assert "skip_connect" not in out[1].text and "nor_conv_1x1" in out[1].text  # replaced: it spoke of another op
    assert out[2].text == "Pooling hurts here."  # on topic (a family word) and in the effect's direction
    kinds = [e["event"] for e in events]
    assert kinds.count("duplicate_dropped") == 1 and kinds.count("text_replaced") == 1


def test_an_avoid_claim_about_a_choice_every_cell_has_is_untestable():
    space = NB201Space()
    cells = [((1, c % 5, 3, 3, 1, 3), 90.0 - c) for c in range(8)]  # every cell has skip_connect at edge1<-0
    ev = Evidence.compute(space, cells, label="target t (this run)", origin="run", task="t", n_top=3, shown=[])
    draft = analyst.PrincipleDraft(text="Avoid skip_connect at edge1<-0.", position="edge1<-0", choice="skip_connect",
                                   direction="avoid", confidence=0.9)
    kept, rejected = analyst.verify([draft], space, ev)
    assert not kept and "untestable" in rejected[0]["reason"]
