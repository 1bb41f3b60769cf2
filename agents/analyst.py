"""The analyst: states design principles from top architectures and computed evidence.

Two implementations with one interface (`analyze(ctx, mode, current, original, evidence, recalled)
-> AnalysisResult`): the LLM analyst (prompted with LAPT-style layer lists, pre-ranked evidence,
and evidence tools it may call) and the statistical analyst (`--llm none`), whose principles come
from the evidence alone. The round's `Evidence` is computed once by the graph (`source_evidence`,
`run_evidence`) and passed in. Every principle an LLM writes is checked against the data: unknown
names, claims the statistics contradict and claims its own answer contradicts are discarded and
recorded; a sentence that says the opposite of its own effect is replaced by a generated one
(recorded). The result is a `PrincipleSet`'s effects: never a preference and an avoidance of one
choice at one position.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from archlore.memory.record import Principle
from archlore.tools.errors import SpaceError
from archlore.tools.evidence import (
    ChoiceStat,
    Evidence,
    choice_stats,
    filter_stats,
    rank_choices,
)
from archlore.tools.spaces import Arch, SearchSpace, SpaceFilter
from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field, create_model

from . import choosing, prompts
from .context import RunContext
from .llm import Usage, repair_messages
from .principles import (
    PrincipleSet,
    contradicts_text,
    effect_statements,
    generated_text,
    merge_principles,
    off_topic,
    principle_weights,
    render_evidence,
    render_principles,
    resolve_conflicts,
    restate_partial,
    share_statements,
    stat_text,
)
from .tuning import TUNING, Tuning

# the graph reads these through the analyst; their home is agents/principles.py
__all__ = ["analyze", "source_evidence", "run_evidence", "summary_principles", "principle_weights", "render_evidence"]

log = logging.getLogger(__name__)

Mode = Literal["initial", "update", "branch"]


class PrincipleDraft(BaseModel):
    """What the LLM writes; the evidence field is filled by code from the data."""

    text: str = Field(max_length=240)
    position: str = Field(max_length=40)
    choice: str = Field(max_length=40)
    direction: Literal["prefer", "avoid"]
    confidence: float = Field(ge=0.0, le=1.0)


class AnalystReply(BaseModel):
    """Design principles, each a sentence plus one structured effect."""

    principles: list[PrincipleDraft] = Field(min_length=1, max_length=10)


def analyst_reply_model(space: SearchSpace) -> type[BaseModel]:
    """`AnalystReply` whose JSON schema lists the space's position and choice names.

    A grammar-constrained server (llama.cpp) then writes only valid names; validation stays
    lenient (plain strings) so a hosted model's unknown name drops that principle, not the answer.
    """
    choices = sorted({c for p in space.positions for c in p.choices})
    draft = create_model(
        "PrincipleDraft", __base__=PrincipleDraft,
        position=(str, Field(max_length=40, json_schema_extra={"enum": [p.name for p in space.positions] + ["*"]})),
        choice=(str, Field(max_length=40, json_schema_extra={"enum": choices})),
    )
    return create_model(
        "AnalystReply", __base__=AnalystReply, principles=(list[draft], Field(min_length=1, max_length=10)),
    )


@dataclass
class AnalysisResult:
    principles: list[Principle]
    rejected: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    by: str = "statistics"
    evidence_source: str = ""
    fresh: int = 0  # how many leading principles come from this round's evidence (the rest are carried)


# ---------------------------------------------------------------------------------------------
# rendering (the analyst's prompts)
def describe_space(space: SearchSpace) -> str:
    lines = [f"# search space {space.name}: {space.description or 'categorical'}"]
    lines.append("# layer_list[i] is the choice at position i; positions and their choices:")
    for i, p in enumerate(space.positions):
        lines.append(f"#   {i}: {p.name}: {', '.join(p.choices)}")
    return "\n".join(lines)


def render_cells(space: SearchSpace, cells: list[tuple[Arch, float]]) -> str:
    return "\n".join(
        f"arch_{i + 1} = {json.dumps([p.choices[c] for p, c in zip(space.positions, a)])}  # {m:.3f}"
        for i, (a, m) in enumerate(cells)
    )


# ---------------------------------------------------------------------------------------------
# the evidence of a round: computed once (by the graph), passed to the analyst and the planner
def source_evidence(ctx: RunContext) -> Evidence | None:
    """The source task's statistics: its top `top_n` cells against all of its cells."""
    s = ctx.settings
    if ctx.source is None or s.source is None:
        return None
    return Evidence.compute(
        ctx.space, ctx.source.all_cells(s.source), label=f"source {s.source}", origin="source", task=s.source,
        n_top=s.top_n, shown=ctx.source.top_cells(s.source, s.show_n),
    )


def run_evidence(ctx: RunContext, *, tuning: Tuning = TUNING) -> Evidence:
    """This run's statistics so far (from the ledger): its top cells against all evaluated ones."""
    s = ctx.settings
    cells = ctx.evaluator.pairs()
    n_top = min(s.top_k, max(tuning.run_top_min, len(cells) // tuning.run_top_divisor))
    return Evidence.compute(
        ctx.space, cells, label=f"target {s.target} (this run)", origin="run", task=s.target, n_top=n_top,
        shown=sorted(cells, key=lambda c: -c[1])[: s.top_k], effects=True,
    )


def evidence_cells(ctx: RunContext, ev: Evidence) -> list[tuple[Arch, float]]:
    """The cells `ev` was computed over (for tools that ask new questions of them)."""
    if ev.origin == "source":
        return ctx.source.all_cells(ev.task) if ctx.source is not None else []
    return ctx.evaluator.pairs()[: ev.n_cells]


# ---------------------------------------------------------------------------------------------
# principles from evidence
def evidence_principles(ev: Evidence, *, uniform_base: bool = False, tuning: Tuning = TUNING) -> list[Principle]:
    """The statistical analyst: prefer over-represented choices, avoid absent ones.

    Per position, the most over-represented choice is preferred (and a runner-up with a clear
    lift too), with the top share as confidence; choices almost absent from the top cells are
    avoided. Preferences come first: they carry the ranking the search uses. The effects are then
    stated as a few general sentences (`share_statements`).
    """
    t = tuning
    base = "uniform" if uniform_base else "of all"
    prefer: list[Principle] = []
    avoid: list[Principle] = []
    for col in ev.stats:
        ranked = sorted(col, key=lambda s: (-s.top_share, -s.lift))
        for rank, s in enumerate(ranked[: t.prefer_top_choices]):
            if s.top_count >= t.prefer_min_count and s.lift >= (t.prefer_lift if rank == 0 else t.prefer_lift_runner_up):
                prefer.append(Principle(
                    text="", position=s.position, choice=s.choice, direction="prefer",
                    confidence=round(float(np.clip(s.top_share, *t.prefer_confidence_clip)), 3),
                    evidence=stat_text(s, ev.label, base),
                ))
        for s in col:
            if s.base_share >= t.avoid_min_base_share and s.lift <= t.avoid_max_lift:
                avoid.append(Principle(
                    text="", position=s.position, choice=s.choice, direction="avoid",
                    confidence=round(float(np.clip(1 - s.lift, *t.avoid_confidence_clip)), 3),
                    evidence=stat_text(s, ev.label, base),
                ))
    prefer.sort(key=lambda p: -p.confidence)
    avoid.sort(key=lambda p: -p.confidence)
    effects = (prefer + avoid)[: t.max_evidence_principles]
    return share_statements(effects, ev, base="under a uniform choice" if uniform_base else "of all cells")


def summary_principles(
    space: SearchSpace, cells: list[tuple[Arch, float]], n_top: int, label: str, *, tuning: Tuning = TUNING
) -> list[Principle]:
    """What a finished run taught: the choices its best cells share, against a uniform prior.

    A run's evaluations are not a uniform sample (the filter and the search chose them), so the
    top cells are compared with the uniform share of each choice rather than with the evaluated
    cells; this is what the memory keeps for later tasks.
    """
    if not cells:
        return []
    uniform = [
        [ChoiceStat(s.position, s.choice, s.choice_id, s.top_count, s.top_share, 1 / len(col),
                    s.top_share * len(col), s.mean_metric) for s in col]
        for col in choice_stats(space, cells, n_top)
    ]
    ev = Evidence(label, "run", label, len(cells), n_top, uniform, [])
    return evidence_principles(ev, uniform_base=True, tuning=tuning)


def effect_principles(ev: Evidence, *, tuning: Tuning = TUNING) -> list[Principle]:
    """Principles from this run's own evaluations: choices whose mean metric stands out."""
    t = tuning
    if ev.n_cells < t.effect_min_cells:
        return []
    out = []
    for e in ev.effects:
        if e.n_with < t.effect_min_with or abs(e.effect) < t.effect_threshold:
            continue
        out.append(Principle(
            text="", position=e.position, choice=e.choice, direction="prefer" if e.effect > 0 else "avoid",
            confidence=round(float(np.clip(abs(e.effect) / 2, *t.effect_confidence_clip)), 3),
            evidence=f"{ev.label}: mean {e.mean_with:.3f} with vs {e.mean_without:.3f} without (n={e.n_with})",
        ))
    out.sort(key=lambda p: -p.confidence)
    return effect_statements(out[: t.max_effect_principles], ev)


def _lift(ev: Evidence, ids: dict[int, int]) -> float:
    """Mean lift of the choice (`ids`: position -> choice id) over the positions with statistics."""
    lifts = [ev.stats[j][c].lift for j, c in ids.items() if ev.stats[j]]
    return float(np.mean(lifts)) if lifts else 1.0


def verify(
    drafts: list[PrincipleDraft], space: SearchSpace, ev: Evidence, *, tuning: Tuning = TUNING
) -> tuple[list[Principle], list[dict]]:
    """Keep principles whose names exist and whose claim the statistics do not contradict; of two
    claims of the answer that contradict each other, keep the one the statistics support more."""
    by_pos = {p.name: j for j, p in enumerate(space.positions)}
    kept: list[tuple[Principle, float]] = []  # with how well the statistics support it
    rejected: list[dict] = []
    for d in drafts:
        positions = list(range(len(space.positions))) if d.position.strip() == "*" else [by_pos.get(d.position.strip())]
        if positions == [None]:
            rejected.append({"principle": d.model_dump(), "reason": f"unknown position {d.position!r}"})
            continue
        ids: dict[int, int] = {}  # position -> choice id, where the position has the choice
        error = ""
        for j in positions:
            try:
                ids[j] = space.positions[j].id_of(d.choice.strip())
            except SpaceError as exc:
                error = error or str(exc)
        if not ids or (d.position.strip() != "*" and error):
            rejected.append({"principle": d.model_dump(), "reason": error})
            continue
        positions = list(ids)
        cid = ids[positions[0]]
        lift = _lift(ev, ids)
        if (d.direction == "prefer" and lift < tuning.verify_prefer_min_lift) or (
            d.direction == "avoid" and lift > tuning.verify_avoid_max_lift
        ):
            rejected.append({
                "principle": d.model_dump(),
                "reason": f"contradicted by {ev.label}: lift {lift:.2f} for {d.choice} at {d.position}",
            })
            continue
        if d.direction == "avoid" and all(ev.stats[j] and ev.stats[j][c].base_share >= 0.999 for j, c in ids.items()):
            # every cell of the evidence has it (the filter fixed it there): nothing to compare with
            rejected.append({
                "principle": d.model_dump(),
                "reason": f"untestable on {ev.label}: every cell has {d.choice} at {d.position}",
            })
            continue
        s = ev.stats[positions[0]][cid] if ev.stats[positions[0]] else None
        p = Principle(
            text=d.text, position=d.position.strip(), choice=space.positions[positions[0]].choices[cid],
            direction=d.direction, confidence=d.confidence,
            evidence=stat_text(s, ev.label)[:400] if s else "",
        )
        support = lift if d.direction == "prefer" else (1 / lift if lift > 0 else float("inf"))
        rival = next((i for i, (q, _) in enumerate(kept) if not PrincipleSet.compatible(q, p)), None)
        if rival is None:
            kept.append((p, support))
            continue
        q, q_support = kept[rival]
        loser, winner = (q, p) if support > q_support else (p, q)
        if winner is p:
            kept[rival] = (p, support)
        rejected.append({
            "principle": loser.model_dump(),
            "reason": f"contradicts the answer's own claim to {winner.direction} {winner.choice} at "
            f"{winner.position}, which {ev.label} supports more",
        })
    return [p for p, _ in kept], rejected


_EFFECT_TAG = re.compile(r"\s*\[(?:prefer|avoid)\b[^\]]*(?:\]|$)", re.IGNORECASE)  # cut ones too


def check_texts(principles: list[Principle], space: SearchSpace, ev: Evidence | None) -> tuple[list[Principle], list[dict]]:
    """Keep one principle per effect (the first), strip effect tags a model copied from its prompt
    into its sentence, and replace sentences that say the opposite of their own effect, or speak
    about another choice only, by generated ones (each replacement recorded)."""
    choices = sorted({c for p in space.positions for c in p.choices})
    out, events = [], []
    seen: set[tuple[str, str, str]] = set()
    for p in principles:
        key = (p.position, p.choice, p.direction)
        if key in seen:
            events.append({"event": "duplicate_dropped", "node": "analyze", "position": p.position,
                           "choice": p.choice, "direction": p.direction, "text": p.text})
            continue
        seen.add(key)
        clean = _EFFECT_TAG.sub("", p.text).strip()
        if clean != p.text:
            p = p.model_copy(update={"text": clean or generated_text(p, ev)})
        if contradicts_text(p, choices) or off_topic(p, choices) or not p.text:
            now = generated_text(p, ev)
            events.append({
                "event": "text_replaced", "node": "analyze", "position": p.position, "choice": p.choice,
                "direction": p.direction, "was": p.text, "now": now,
            })
            p = p.model_copy(update={"text": now})
        out.append(p)
    return out, events


# ---------------------------------------------------------------------------------------------
# the analyst
def _recalled_principles(recalled: list[dict]) -> tuple[list[Principle], list[dict]]:
    """Recalled principles, best first; of two that contradict each other the better-ranked stays."""
    kept, dropped = resolve_conflicts([Principle(**r["principle"]) for r in recalled])
    events = [
        {"event": "recalled_conflict", "node": "analyze", "dropped": f"{p.direction} {p.choice} at {p.position}",
         "reason": "a better-ranked recalled principle says the opposite"}
        for p in dropped
    ]
    return kept, events


def statistical_analysis(
    ctx: RunContext, mode: Mode, current: list[Principle], original: list[Principle],
    evidence: Evidence | None, recalled: list[dict], *, tuning: Tuning = TUNING,
) -> AnalysisResult:
    t = tuning
    if mode == "initial":
        principles = evidence_principles(evidence, tuning=t) if evidence else []
        fresh = len(principles)
        rec, events = _recalled_principles(recalled)
        if rec:
            principles = merge_principles(principles, rec, decay=t.recall_decay, tuning=t, carried="Recalled from a past task")
        return AnalysisResult(principles, events=events, fresh=fresh,
                              evidence_source=evidence.label if evidence else "recalled principles only")
    if evidence is None:
        raise ValueError("update and branch rounds need this run's evidence (run_evidence)")
    own = effect_principles(evidence, tuning=t)
    if mode == "update":
        return AnalysisResult(merge_principles(own, current, decay=t.update_decay, tuning=t),
                              evidence_source=evidence.label, fresh=len(own))
    # branch: keep the better-supported part of the original principles, then what this run shows
    ranked = sorted(original, key=lambda p: -p.confidence)
    keep = restate_partial(ranked[: max(1, int(len(original) * t.branch_keep_share))], original,
                           prefix="Kept from the original principles")
    return AnalysisResult(merge_principles(own, keep, decay=t.branch_decay, tuning=t),
                          evidence_source=evidence.label, fresh=len(own))


def _tools(ctx: RunContext, ev: Evidence, recalled: list[dict]) -> list[StructuredTool]:
    """Evidence tools for the LLM; infrastructure is bound here, never in their schemas."""
    space = ctx.space

    def choice_counts(position: str) -> str:
        """Counts of each choice at a position among the top cells versus all cells."""
        for col in ev.stats:
            if col and col[0].position == position:
                return json.dumps([{k: v for k, v in s.to_dict().items() if k != "mean_metric"} for s in col])
        return f"unknown position {position!r}; positions: {[p.name for p in space.positions]}"

    def mean_metric_per_choice(position: str) -> str:
        """Mean metric of all cells having each choice at a position."""
        for col in ev.stats:
            if col and col[0].position == position:
                return json.dumps({s.choice: round(s.mean_metric, 4) for s in col})
        return f"unknown position {position!r}"

    def subspace_size(allowed: dict[str, list[str]]) -> str:
        """Size of a candidate refined space (position -> allowed choices) and how good its known cells are."""
        try:
            flt = SpaceFilter.from_choices(space, [allowed.get(p.name, list(p.choices)) for p in space.positions])
        except Exception as exc:  # noqa: BLE001 - the message goes back to the model
            return f"invalid: {exc}"
        return json.dumps(filter_stats(space, flt, evidence_cells(ctx, ev)))

    def recalled_principles() -> str:
        """Principles recalled from similar past tasks, with their source runs."""
        return json.dumps(recalled)[:4000]

    return [StructuredTool.from_function(f) for f in (choice_counts, mean_metric_per_choice, subspace_size, recalled_principles)]


def _prompt(ctx: RunContext, mode: Mode, current: list[Principle], original: list[Principle],
            ev: Evidence, recalled: list[dict]) -> str:
    s, space = ctx.settings, ctx.space
    metric = "validation metric, higher is better"
    if mode == "initial":
        rec = prompts.RECALLED.format(items="\n".join(
            f"- ({r['task']}, run {r['run_id']}, similarity {r['similarity']:.2f}) {r['principle']['text']}"
            for r in recalled[:8]
        )) if recalled else ""
        return prompts.ANALYST_INITIAL.format(
            source=s.source, source_description=ctx.source_description, target=s.target,
            target_description=ctx.target_description, cell_description=describe_space(space),
            show_n=len(ev.shown), metric=metric, layer_lists=render_cells(space, ev.shown),
            top_n=ev.n_top, n_cells=ev.n_cells, evidence=render_evidence(ev.stats, ev.costs), recalled=rec,
        )
    if mode == "update":
        return prompts.ANALYST_UPDATE.format(
            target=s.target, principles=render_principles(current), top_k=len(ev.shown), metric=metric,
            n_evaluated=ev.n_cells, layer_lists=render_cells(space, ev.shown), evidence=render_evidence(ev.stats, ev.costs),
        )
    return prompts.ANALYST_BRANCH.format(
        target=s.target, check_every=s.check_every, principles=render_principles(original),
        n_evaluated=ev.n_cells, evidence=render_evidence(ev.stats, ev.costs),
    )


def llm_analysis(
    ctx: RunContext, mode: Mode, current: list[Principle], original: list[Principle],
    evidence: Evidence | None, recalled: list[dict], *, tuning: Tuning = TUNING,
) -> AnalysisResult:
    """The LLM analyst; falls back to the statistical one when the LLM fails or says nothing usable."""
    s = ctx.settings
    space = ctx.space
    ev = evidence
    fallback = statistical_analysis(ctx, mode, current, original, ev, recalled, tuning=tuning)
    if ev is None:  # nothing to reason about but recalled principles
        return fallback
    llm = ctx.llm_for("analyst")
    usage = Usage()
    events: list[dict] = list(fallback.events)
    if llm.prompt == "choose":
        chosen = choose_analysis(ctx, llm, mode, fallback, ev, usage, events, tuning=tuning)
        if chosen is not None:
            return chosen
    tools = {t.name: t for t in _tools(ctx, ev, recalled)}
    try:
        while True:  # once per backend of the analyst's chain that answers invalid output after a repair
            messages: list = [SystemMessage(prompts.ANALYST_SYSTEM), HumanMessage(_prompt(ctx, mode, current, original, ev, recalled))]
            rounds = s.tool_rounds if s.tool_rounds is not None else (0 if llm.kind == "local" else 1)
            for _ in range(rounds):
                msg = llm.invoke(messages, usage, tools=list(tools.values()))
                if not getattr(msg, "tool_calls", None):
                    break
                messages.append(msg)
                for call in msg.tool_calls:
                    tool = tools.get(call["name"])
                    out = tool.invoke(call["args"]) if tool else f"unknown tool {call['name']!r}"
                    messages.append(ToolMessage(str(out)[:4000], tool_call_id=call["id"]))
                    events.append({"event": "tool_call", "node": "analyze", "tool": call["name"], "args": call["args"]})
            schema = analyst_reply_model(space)
            res = llm.structured(schema, messages, usage)
            if res.value is None:
                events.append({"event": "repair", "node": "analyze", "error": res.error})
                messages += repair_messages(res.raw, res.error, "AnalystReply")
                res = llm.structured(schema, messages, usage)
            if res.value is not None or not llm.fall(f"invalid output after a repair ({res.error})"[:400], node="analyze"):
                break
    except Exception as exc:  # noqa: BLE001 - a run never dies because of the LLM
        log.warning("analyst LLM failed: %s", exc)
        events.append({"event": "llm_error", "node": "analyze", "error": f"{type(exc).__name__}: {exc}"[:400]})
        fallback.events, fallback.usage = events + [{"event": "fallback", "node": "analyze"}], usage
        return fallback
    if res.value is None:
        events.append({"event": "fallback", "node": "analyze", "error": res.error})
        fallback.events, fallback.usage = events, usage
        return fallback
    kept, rejected = verify(res.value.principles, space, ev, tuning=tuning)
    for r in rejected:
        events.append({"event": "rejected_claim", "node": "analyze", "reason": r["reason"]})
    if not kept:
        events.append({"event": "fallback", "node": "analyze", "error": "every principle was rejected"})
        fallback.events, fallback.usage, fallback.rejected = events, usage, rejected
        return fallback
    kept, replaced = check_texts(kept, space, ev)
    events += replaced
    n_model = len(kept)
    if mode != "initial":
        kept = merge_principles(kept, current, decay=tuning.update_decay, tuning=tuning)
    # what the model left unsaid, the evidence says: its principles win wherever it spoke, the
    # statistical ones fill the (position, choice) pairs it did not address, restated so that no
    # sentence claims a position the model spoke about
    def said(p: Principle) -> bool:
        return any(k.choice == p.choice and (k.position == p.position or "*" in (k.position, p.position)) for k in kept)

    fresh_all, carried_all = fallback.principles[: fallback.fresh], fallback.principles[fallback.fresh:]
    fresh = [p for p in fresh_all if not said(p)]
    if len(fresh) < len(fresh_all):
        fresh = share_statements(fresh, ev) if mode == "initial" else effect_statements(fresh, ev)
    carried = restate_partial([p for p in carried_all if not said(p)], carried_all)
    filled = fresh + carried
    by = llm.name + ("+statistics" if filled else "")
    return AnalysisResult(kept + filled, rejected, events, usage, by=by, evidence_source=ev.label, fresh=n_model + len(fresh))


def _top_filter(ctx: RunContext, principles: list[Principle], ev: Evidence) -> SpaceFilter:
    """The planner's statistical filter for these principles on this evidence."""
    from .planner import ranked_filter

    weights = principle_weights(ctx.space, principles)
    ranking = rank_choices(ctx.space, ev.stats, weights)
    return ranked_filter(ranking, ctx.settings.max_choices, weights, [bool(c) for c in ev.stats])


def choose_analysis(
    ctx: RunContext, llm: Any, mode: Mode, fallback: AnalysisResult, ev: Evidence, usage: Usage,
    events: list[dict], *, tuning: Tuning = TUNING,
) -> AnalysisResult | None:
    """The analyst in "choose" mode (agents/choosing.py): the model keeps some of the round's
    candidate principles, by number. None when the chain fell to a backend that writes instead."""
    shown, unshown = choosing.analyst_candidates(fallback.principles, fallback.fresh, ev, tuning=tuning)
    n, most = len(shown), min(len(shown), choosing.MAX_KEPT)
    least = min(n, choosing.MIN_KEPT)
    if n <= choosing.MIN_KEPT:
        return fallback  # every candidate would have to be kept: the statistics' answer, no call
    schema = choosing.numbers_model("AnalystChoice", n, most, "The principles to keep, by number.", least)
    try:
        while llm.active and llm.prompt == "choose":
            system, user = choosing.analyst_prompt(mode, shown, ev, ctx.settings.source, ctx.settings.target, llm.kind)
            messages: list = [SystemMessage(system), HumanMessage(user)]
            picked, error = choosing.ask(
                llm, schema, messages, usage, lambda v: choosing.read_numbers(v.choose, n, most, least),
                "AnalystChoice", events, "analyze",
            )
            if picked is not None:
                principles, fresh = choosing.assemble(mode, shown, picked, unshown, fallback.principles[fallback.fresh:], ev)
                events.append({
                    "event": "chosen", "node": "analyze", "shown": n, "kept": [i + 1 for i in picked],
                    "dropped": [f"{shown[i].principle.direction} {shown[i].principle.choice} at {shown[i].principle.position}"
                                for i in range(n) if i not in picked],
                    "alternatives_taken": sum(shown[i].kind == "alternative" for i in picked), "not_shown": len(unshown),
                    # would the statistics' filter of this round differ? (what `--llm none` searches)
                    "filter_changed": _top_filter(ctx, principles, ev) != _top_filter(ctx, fallback.principles, ev),
                })
                return AnalysisResult(principles, [], events, usage, by=f"{llm.name} (chose {len(picked)} of {n})",
                                      evidence_source=ev.label, fresh=fresh)
            if not llm.fall(f"invalid output after a repair ({error})"[:400], node="analyze"):
                break
    except Exception as exc:  # noqa: BLE001 - a run never dies because of the LLM
        log.warning("analyst LLM failed: %s", exc)
        events.append({"event": "llm_error", "node": "analyze", "error": f"{type(exc).__name__}: {exc}"[:400]})
    else:
        if llm.active:  # the chain fell to a backend that writes its principles
            return None
    fallback.events, fallback.usage = events + [{"event": "fallback", "node": "analyze"}], usage
    return fallback


def analyze(
    ctx: RunContext, mode: Mode, current: list[Principle], original: list[Principle],
    evidence: Evidence | None, recalled: list[dict], *, tuning: Tuning = TUNING,
) -> AnalysisResult:
    """This round's principles from this round's evidence (the source's before the first check,
    this run's after) and, at the start, the principles recalled from the memory."""
    if ctx.llm_for("analyst") is None:
        res = statistical_analysis(ctx, mode, current, original, evidence, recalled, tuning=tuning)
    else:
        res = llm_analysis(ctx, mode, current, original, evidence, recalled, tuning=tuning)
        # a model's "avoid X at every position" can meet a carried "prefer X at one position" that
        # merging did not catch (seen in a real local run): its own principles come first and win
        res.principles, dropped = resolve_conflicts(res.principles)
        if dropped:
            res.events.append({"event": "conflict_dropped", "node": "analyze", "dropped": [p.text for p in dropped]})
    PrincipleSet(tuple(res.principles))  # never hand on a contradiction (raises PrincipleConflict)
    return res
