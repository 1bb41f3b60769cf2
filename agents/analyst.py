"""The analyst: states design principles from top architectures and computed evidence.

Two implementations with one interface (`analyze(ctx, mode, state) -> AnalysisResult`):
the LLM analyst (prompted with LAPT-style layer lists, pre-ranked evidence, and evidence tools it
may call) and the statistical analyst (`--llm none`), whose principles come from the evidence
alone. Every principle an LLM writes is checked against the data: unknown names and claims the
statistics contradict are discarded and recorded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field, create_model

from archlore.memory.record import Principle
from archlore.tools.evidence import ChoiceStat, choice_stats, filter_stats
from archlore.tools.errors import SpaceError
from archlore.tools.spaces import Arch, SearchSpace, SpaceFilter

from . import prompts
from .context import RunContext
from .llm import Usage, repair_messages

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


# ---------------------------------------------------------------------------------------------
# rendering
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


def render_evidence(stats: list[list[ChoiceStat]]) -> str:
    lines = []
    for col in stats:
        ranked = sorted(col, key=lambda s: (-s.top_count, -np.nan_to_num(s.mean_metric, nan=-1e18)))
        opts = ", ".join(
            f"{s.choice} (top share {s.top_share:.0%}, share {s.base_share:.0%}, lift {s.lift:.2f})"
            for s in ranked
        )
        lines.append(f"{col[0].position}: {opts}")
    return "\n".join(lines)


def render_principles(principles: list[Principle]) -> str:
    if not principles:
        return "(none)"
    return "\n".join(
        f"- [{p.direction} {p.choice} at {p.position}, confidence {p.confidence:.2f}] {p.text}" for p in principles
    )


# ---------------------------------------------------------------------------------------------
# evidence and checks
def _stat_text(s: ChoiceStat, label: str, base: str = "of all") -> str:
    return (
        f"{label}: {s.top_count} of the top cells use {s.choice} at {s.position} "
        f"(top share {s.top_share:.0%} vs {s.base_share:.0%} {base}, lift {s.lift:.2f})"
    )


def evidence_principles(
    stats: list[list[ChoiceStat]], label: str, *, max_n: int = 16, uniform_base: bool = False
) -> list[Principle]:
    """The statistical analyst: prefer over-represented choices, avoid absent ones.

    Per position, the most over-represented choice is preferred (and a runner-up with a clear
    lift too), with the top share as confidence; choices almost absent from the top cells are
    avoided. Preferences come first: they carry the ranking the search uses.
    """
    if uniform_base:  # the shares are compared with a uniform choice, not with measured cells
        overall = of_all = "under a uniform choice"
        base = "uniform"
    else:
        overall, of_all, base = "overall", "of all cells", "of all"
    prefer: list[Principle] = []
    avoid: list[Principle] = []
    for col in stats:
        ranked = sorted(col, key=lambda s: (-s.top_share, -s.lift))
        for rank, s in enumerate(ranked[:2]):
            if s.top_count >= 2 and s.lift >= (1.25 if rank == 0 else 1.5):
                prefer.append(Principle(
                    text=f"At {s.position}, prefer {s.choice}: the top cells of {label} use it "
                    f"{s.top_share:.0%} of the time against {s.base_share:.0%} {overall}.",
                    position=s.position, choice=s.choice, direction="prefer",
                    confidence=round(float(np.clip(s.top_share, 0.2, 0.95)), 3),
                    evidence=_stat_text(s, label, base),
                ))
        for s in col:
            if s.base_share >= 0.1 and s.lift <= 0.34:
                avoid.append(Principle(
                    text=f"At {s.position}, avoid {s.choice}: it is rare among the top cells of {label} "
                    f"({s.top_share:.0%}) against {s.base_share:.0%} {of_all}.",
                    position=s.position, choice=s.choice, direction="avoid",
                    confidence=round(float(np.clip(1 - s.lift, 0.3, 0.95)), 3),
                    evidence=_stat_text(s, label, base),
                ))
    prefer.sort(key=lambda p: -p.confidence)
    avoid.sort(key=lambda p: -p.confidence)
    return (prefer + avoid)[:max_n]


def summary_principles(space: SearchSpace, cells: list[tuple[Arch, float]], n_top: int, label: str) -> list[Principle]:
    """What a finished run taught: the choices its best cells share, against a uniform prior.

    A run's evaluations are not a uniform sample (the filter and the search chose them), so the
    top cells are compared with the uniform share of each choice rather than with the evaluated
    cells; this is what the memory keeps for later tasks.
    """
    if not cells:
        return []
    stats = choice_stats(space, cells, n_top)
    uniform = [
        [ChoiceStat(s.position, s.choice, s.choice_id, s.top_count, s.top_share, 1 / len(col),
                    s.top_share * len(col), s.mean_metric) for s in col]
        for col in stats
    ]
    return evidence_principles(uniform, label, uniform_base=True)


def effect_principles(space: SearchSpace, cells: list[tuple[Arch, float]], label: str) -> list[Principle]:
    """Principles from this run's own evaluations: choices whose mean metric stands out."""
    if len(cells) < 4:
        return []
    archs = np.array([a for a, _ in cells])
    m = np.array([v for _, v in cells])
    sd = float(m.std()) or 1.0
    out = []
    for j, pos in enumerate(space.positions):
        for c, name in enumerate(pos.choices):
            mask = archs[:, j] == c
            n = int(mask.sum())
            if n < 2 or n == len(cells):
                continue
            effect = (float(m[mask].mean()) - float(m[~mask].mean())) / sd
            if abs(effect) < 0.3:
                continue
            direction = "prefer" if effect > 0 else "avoid"
            out.append(Principle(
                text=f"On {label}, cells with {name} at {pos.name} score {abs(effect):.2f} std "
                f"{'above' if effect > 0 else 'below'} the others ({n} of {len(cells)} evaluated).",
                position=pos.name, choice=name, direction=direction,
                confidence=round(float(np.clip(abs(effect) / 2, 0.2, 0.95)), 3),
                evidence=f"{label}: mean {m[mask].mean():.3f} with vs {m[~mask].mean():.3f} without (n={n})",
            ))
    out.sort(key=lambda p: -p.confidence)
    return out[:12]


def verify(
    drafts: list[PrincipleDraft], space: SearchSpace, stats: list[list[ChoiceStat]], label: str
) -> tuple[list[Principle], list[dict]]:
    """Keep principles whose names exist and whose claim the statistics do not contradict."""
    by_pos = {p.name: j for j, p in enumerate(space.positions)}
    kept, rejected = [], []
    for d in drafts:
        positions = list(range(len(space.positions))) if d.position.strip() == "*" else [by_pos.get(d.position.strip())]
        if positions == [None]:
            rejected.append({"principle": d.model_dump(), "reason": f"unknown position {d.position!r}"})
            continue
        try:
            cid = space.positions[positions[0]].id_of(d.choice.strip())
        except SpaceError as exc:
            rejected.append({"principle": d.model_dump(), "reason": str(exc)})
            continue
        lifts = [stats[j][cid].lift for j in positions if stats[j]]
        lift = float(np.mean(lifts)) if lifts else 1.0
        contradicted = (d.direction == "prefer" and lift < 0.8) or (d.direction == "avoid" and lift > 1.25)
        if contradicted:
            rejected.append({
                "principle": d.model_dump(),
                "reason": f"contradicted by {label}: lift {lift:.2f} for {d.choice} at {d.position}",
            })
            continue
        s = stats[positions[0]][cid] if stats[positions[0]] else None
        kept.append(Principle(
            text=d.text, position=d.position.strip(), choice=space.positions[positions[0]].choices[cid],
            direction=d.direction, confidence=d.confidence,
            evidence=_stat_text(s, label)[:400] if s else "",
        ))
    return kept, rejected


def principle_weights(space: SearchSpace, principles: list[Principle]) -> list[list[float]]:
    """Per position, per choice: the sum of +-confidence of the principles about it."""
    w = [[0.0] * len(p.choices) for p in space.positions]
    by_pos = {p.name: j for j, p in enumerate(space.positions)}
    for pr in principles:
        js = range(len(space.positions)) if pr.position == "*" else [by_pos.get(pr.position)]
        for j in js:
            if j is None or pr.choice not in space.positions[j].choices:
                continue
            c = space.positions[j].choices.index(pr.choice)
            w[j][c] += pr.confidence if pr.direction == "prefer" else -pr.confidence
    return w


def merge_principles(new: list[Principle], old: list[Principle], *, decay: float = 0.7) -> list[Principle]:
    """New principles win on the same (position, choice); old ones stay with decayed confidence."""
    keys = {(p.position, p.choice) for p in new}
    kept = [
        p.model_copy(update={"confidence": round(p.confidence * decay, 3)})
        for p in old if (p.position, p.choice) not in keys and p.confidence * decay >= 0.15
    ]
    return new + kept


# ---------------------------------------------------------------------------------------------
# the evidence each mode looks at
@dataclass
class Evidence:
    label: str
    cells: list[tuple[Arch, float]]  # all cells the statistics are over
    shown: list[tuple[Arch, float]]  # rendered as layer lists
    n_top: int
    stats: list[list[ChoiceStat]]


def source_evidence(ctx: RunContext) -> Evidence | None:
    s = ctx.settings
    if ctx.source is None or s.source is None:
        return None
    cells = ctx.source.all_cells(s.source)
    stats = choice_stats(ctx.space, cells, s.top_n)
    return Evidence(f"source {s.source}", cells, ctx.source.top_cells(s.source, s.show_n), s.top_n, stats)


def run_evidence(ctx: RunContext) -> Evidence:
    space = ctx.space
    cells = [(space.from_string(e.arch), e.valid) for e in ctx.evaluator.history]
    cells_sorted = sorted(cells, key=lambda c: -c[1])
    n_top = min(ctx.settings.top_k, max(2, len(cells) // 3))
    stats = choice_stats(space, cells, n_top)
    return Evidence(f"target {ctx.settings.target} (this run)", cells, cells_sorted[: ctx.settings.top_k], n_top, stats)


# ---------------------------------------------------------------------------------------------
# the analyst
def statistical_analysis(ctx: RunContext, mode: Mode, current: list[Principle], original: list[Principle]) -> AnalysisResult:
    if mode == "initial":
        ev = source_evidence(ctx)
        principles = evidence_principles(ev.stats, ev.label) if ev else []
        recalled = [Principle(**r["principle"]) for r in ctx.extra.get("recalled", [])]
        principles = merge_principles(principles, recalled, decay=0.9) if recalled else principles
        return AnalysisResult(principles, evidence_source=ev.label if ev else "recalled principles only")
    ev = run_evidence(ctx)
    own = effect_principles(ctx.space, ev.cells, ev.label)
    if mode == "update":
        return AnalysisResult(merge_principles(own, current), evidence_source=ev.label)
    # branch: keep the better-supported half of the original principles, then what this run shows
    keep = sorted(original, key=lambda p: -p.confidence)[: max(1, len(original) // 2)]
    return AnalysisResult(merge_principles(own, keep, decay=1.0), evidence_source=ev.label)


def _tools(ctx: RunContext, ev: Evidence) -> list[StructuredTool]:
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
        return json.dumps(filter_stats(space, flt, ev.cells))

    def recalled_principles() -> str:
        """Principles recalled from similar past tasks, with their source runs."""
        return json.dumps(ctx.extra.get("recalled", []))[:4000]

    return [StructuredTool.from_function(f) for f in (choice_counts, mean_metric_per_choice, subspace_size, recalled_principles)]


def llm_analysis(ctx: RunContext, mode: Mode, current: list[Principle], original: list[Principle]) -> AnalysisResult:
    """The LLM analyst; falls back to the statistical one when the LLM fails or says nothing usable."""
    s = ctx.settings
    space = ctx.space
    ev = source_evidence(ctx) if mode == "initial" else run_evidence(ctx)
    fallback = statistical_analysis(ctx, mode, current, original)
    if ev is None:  # nothing to reason about but recalled principles
        return fallback
    metric = "validation metric, higher is better"
    if mode == "initial":
        recalled = ctx.extra.get("recalled", [])
        rec = prompts.RECALLED.format(items="\n".join(
            f"- ({r['task']}, run {r['run_id']}, similarity {r['similarity']:.2f}) {r['principle']['text']}"
            for r in recalled[:8]
        )) if recalled else ""
        user = prompts.ANALYST_INITIAL.format(
            source=s.source, source_description=ctx.source_description, target=s.target,
            target_description=ctx.target_description, cell_description=describe_space(space),
            show_n=len(ev.shown), metric=metric, layer_lists=render_cells(space, ev.shown),
            top_n=ev.n_top, n_cells=len(ev.cells), evidence=render_evidence(ev.stats), recalled=rec,
        )
    elif mode == "update":
        user = prompts.ANALYST_UPDATE.format(
            target=s.target, principles=render_principles(current), top_k=len(ev.shown), metric=metric,
            n_evaluated=len(ev.cells), layer_lists=render_cells(space, ev.shown), evidence=render_evidence(ev.stats),
        )
    else:
        user = prompts.ANALYST_BRANCH.format(
            target=s.target, check_every=s.check_every, principles=render_principles(original),
            n_evaluated=len(ev.cells), evidence=render_evidence(ev.stats),
        )
    messages: list = [SystemMessage(prompts.ANALYST_SYSTEM), HumanMessage(user)]
    usage = Usage()
    events: list[dict] = []
    rounds = s.tool_rounds if s.tool_rounds is not None else (0 if s.llm == "local" else 1)
    tools = {t.name: t for t in _tools(ctx, ev)}
    try:
        for _ in range(rounds):
            msg = ctx.llm.invoke(messages, usage, tools=list(tools.values()))
            if not getattr(msg, "tool_calls", None):
                break
            messages.append(msg)
            for call in msg.tool_calls:
                tool = tools.get(call["name"])
                out = tool.invoke(call["args"]) if tool else f"unknown tool {call['name']!r}"
                messages.append(ToolMessage(str(out)[:4000], tool_call_id=call["id"]))
                events.append({"event": "tool_call", "node": "analyze", "tool": call["name"], "args": call["args"]})
        schema = analyst_reply_model(space)
        res = ctx.llm.structured(schema, messages, usage)
        if res.value is None:
            events.append({"event": "repair", "node": "analyze", "error": res.error})
            messages += repair_messages(res.raw, res.error, "AnalystReply")
            res = ctx.llm.structured(schema, messages, usage)
    except Exception as exc:  # noqa: BLE001 - a run never dies because of the LLM
        log.warning("analyst LLM failed: %s", exc)
        events.append({"event": "llm_error", "node": "analyze", "error": f"{type(exc).__name__}: {exc}"[:400]})
        fallback.events, fallback.usage = events + [{"event": "fallback", "node": "analyze"}], usage
        return fallback
    if res.value is None:
        events.append({"event": "fallback", "node": "analyze", "error": res.error})
        fallback.events, fallback.usage = events, usage
        return fallback
    kept, rejected = verify(res.value.principles, space, ev.stats, ev.label)
    for r in rejected:
        events.append({"event": "rejected_claim", "node": "analyze", "reason": r["reason"]})
    if not kept:
        events.append({"event": "fallback", "node": "analyze", "error": "every principle was rejected"})
        fallback.events, fallback.usage, fallback.rejected = events, usage, rejected
        return fallback
    if mode != "initial":
        kept = merge_principles(kept, current)
    # what the model left unsaid, the evidence says: its principles win wherever it spoke, the
    # statistical ones fill the (position, choice) pairs it did not address
    said = {(p.position, p.choice) for p in kept}
    filled = [p for p in fallback.principles if (p.position, p.choice) not in said]
    by = ctx.llm.name + ("+statistics" if filled else "")
    return AnalysisResult(kept + filled, rejected, events, usage, by=by, evidence_source=ev.label)


def analyze(ctx: RunContext, mode: Mode, current: list[Principle], original: list[Principle]) -> AnalysisResult:
    if ctx.llm is None:
        return statistical_analysis(ctx, mode, current, original)
    return llm_analysis(ctx, mode, current, original)
