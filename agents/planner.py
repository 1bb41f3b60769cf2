"""The planner: principles to a `SpaceFilter`, through a pydantic schema, validated in code.

Options are ranked in code (principle weights, then the round's evidence, by
`tools.evidence.rank_choices`); the LLM chooses among them and may overrule the ranking. An invalid answer gets one repair turn that quotes the validation error,
then a fallback filter from the ranking. A filter smaller than the remaining budget is widened
with the next-ranked options.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from archlore.memory.record import Principle
from archlore.tools.errors import FilterError
from archlore.tools.evidence import ChoiceStat, Evidence, rank_choices
from archlore.tools.spaces import SearchSpace, SpaceFilter
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, ConfigDict, Field, create_model

from . import choosing, prompts
from .context import RunContext
from .llm import Usage, repair_messages
from .principles import principle_weights, render_options, render_principles
from .tuning import TUNING, Tuning

log = logging.getLogger(__name__)


def planner_reply_model(space: SearchSpace, k: int) -> type[BaseModel]:
    """The planner's answer schema for one space: one required list of choices per position.

    The JSON schema the model sees lists the valid names and at most k items per position (servers
    that constrain decoding with a grammar, like llama.cpp's, then cannot produce anything else);
    validation here stays lenient so `validate_reply` can say exactly what is wrong.
    """
    fields: dict = {
        f"p{j}": (list[str], Field(
            alias=pos.name, min_length=1, description=f"1 to {k} allowed choices at {pos.name}",
            json_schema_extra={"items": {"type": "string", "enum": list(pos.choices)}, "maxItems": k},
        ))
        for j, pos in enumerate(space.positions)
    }
    # the comment's key is "note" unless a position has that name (it would shadow the position)
    names = {p.name for p in space.positions}
    note = next(n for n in ("note", "planner_note", "planner_comment", "_planner_note") if n not in names)
    fields["note"] = (str, Field(default="", alias=note, max_length=200, description="one sentence on the choice"))
    return create_model(
        "PlannerReply", __config__=ConfigDict(populate_by_name=False),
        __doc__="The refined search space: the allowed choices at every position.", **fields,
    )


@dataclass
class PlanResult:
    filter: SpaceFilter
    how: str  # "statistics", "llm", "repaired", "fallback"
    widened: bool = False
    events: list[dict] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    note: str = ""


def rank_options(
    space: SearchSpace, principles: list[Principle], stats: list[list[ChoiceStat]] | None
) -> list[list[int]]:
    """Per position, choice ids best first: principle weight, then top count, then mean metric."""
    return rank_choices(space, stats, principle_weights(space, principles))


def widen(flt: SpaceFilter, ranking: list[list[int]], min_size: int) -> SpaceFilter:
    """Add next-ranked choices, to the narrowest positions first, until the size is enough."""
    allowed = [list(a) for a in flt.allowed]
    while np.prod([len(a) for a in allowed], dtype=float) < min_size:
        open_pos = [j for j, a in enumerate(allowed) if len(a) < len(ranking[j])]
        if not open_pos:
            break
        j = min(open_pos, key=lambda j: (len(allowed[j]), j))
        allowed[j].append(next(c for c in ranking[j] if c not in allowed[j]))
    return SpaceFilter(tuple(tuple(a) for a in allowed))


def ranked_filter(
    ranking: list[list[int]], k: int, weights: list[list[float]] | None = None,
    has_stats: list[bool] | None = None,
) -> SpaceFilter:
    """The top-k ranked choices per position.

    Where no statistics rank a position, cutting at k would break ties among choices no principle
    mentions arbitrarily, so such a position only loses the choices its principles avoid.
    """
    allowed = []
    for j, r in enumerate(ranking):
        if has_stats is None or has_stats[j] or weights is None:
            allowed.append(tuple(r[:k]))
            continue
        allowed.append(tuple([c for c in r if weights[j][c] >= 0] or r))
    return SpaceFilter(tuple(allowed))


def validate_reply(reply: BaseModel, space: SearchSpace, k: int, min_size: int) -> SpaceFilter:
    """The filter an answer describes, or a FilterError that says exactly what is wrong."""
    given = {pos.name: [str(c).strip() for c in getattr(reply, f"p{j}")] for j, pos in enumerate(space.positions)}
    for name, choices in given.items():
        if not choices:
            raise FilterError(f"position {name!r} is empty: give it 1 to {k} choices")
        if len(set(choices)) > k:
            raise FilterError(f"position {name!r} has {len(set(choices))} choices; at most {k} are allowed")
    flt = SpaceFilter.from_choices(space, [given[p.name] for p in space.positions])
    if flt.size() < min_size:
        raise FilterError(f"the refined space holds {flt.size()} architectures; it needs at least {min_size}")
    return flt


def evidence_conflicts(
    space: SearchSpace, flt: SpaceFilter, ranking: list[list[int]], stats: list[list[ChoiceStat]] | None,
    weights: list[list[float]], *, tuning: Tuning = TUNING,
) -> list[str]:
    """Positions where the filter drops the evidence's clear favourite and no principle avoids it."""
    if not stats:
        return []
    out = []
    for j, (pos, r) in enumerate(zip(space.positions, ranking)):
        if not stats[j]:
            continue
        best = stats[j][r[0]]
        if (best.choice_id not in flt.allowed[j] and best.top_share >= tuning.conflict_min_top_share
                and best.lift >= tuning.conflict_min_lift and weights[j][best.choice_id] >= 0):
            out.append(f"{pos.name}: you dropped {best.choice}, which {best.top_share:.0%} of the top cells use "
                       f"(lift {best.lift:.1f})")
    return out


def filter_options(
    space: SearchSpace, ranking: list[list[int]], k: int, min_size: int, weights: list[list[float]], has_stats: list[bool],
) -> list[tuple[int, SpaceFilter]]:
    """(width, filter) for the top-w choices per position, w = k first (the statistics' own
    choice), then 1..k-1; each widened to `min_size`; identical filters once."""
    out: list[tuple[int, SpaceFilter]] = []
    for w in (k, *range(1, k)):
        flt = widen(ranked_filter(ranking, w, weights, has_stats), ranking, min_size)
        if all(flt.allowed != f.allowed for _, f in out):
            out.append((w, flt))
    return out


def choose_plan(
    ctx: RunContext, llm, principles: list[Principle], evidence: Evidence | None, ranking: list[list[int]],
    weights: list[list[float]], has_stats: list[bool], min_size: int, usage: Usage, events: list[dict],
) -> tuple[SpaceFilter, str, str | None]:
    """The planner in "choose" mode (agents/choosing.py): one of a few ranked filters, by number.
    Returns the filter, how it was chosen ("llm", "repaired" or "fallback") and the last error."""
    from .analyst import evidence_cells

    space, k = ctx.space, ctx.settings.max_choices
    options = filter_options(space, ranking, k, min(min_size, space.size()), weights, has_stats)
    cells = evidence_cells(ctx, evidence) if evidence is not None else []
    system, user = choosing.planner_prompt(principles, options, space, cells, evidence.n_top if evidence else 0,
                                           evidence.label if evidence else "", llm.kind)
    n = len(options)
    if n == 1:  # nothing to choose: no call
        return options[0][1], "statistics", None
    schema = choosing.number_model("FilterChoice", n, "The refined search space to search next.")
    messages: list = [SystemMessage(system), HumanMessage(user)]
    before = len(events)
    picked, error = choosing.ask(llm, schema, messages, usage, lambda v: choosing.read_numbers(v.option, n, 1),
                                 "FilterChoice", events, "plan")
    if picked is None:
        return options[0][1], "fallback", error
    width, flt = options[picked[0]]
    events.append({"event": "chosen", "node": "plan", "option": picked[0] + 1, "of": n, "width": width,
                   "size": flt.size(), "changed": picked[0] != 0})
    return flt, ("llm" if len(events) == before + 1 else "repaired"), None


def plan(
    ctx: RunContext, principles: list[Principle], evidence: Evidence | None, min_size: int, *,
    tuning: Tuning = TUNING,
) -> PlanResult:
    """A filter for this round from its principles and its evidence (computed once by the graph)."""
    space, k = ctx.space, ctx.settings.max_choices
    stats = evidence.stats if evidence is not None else None
    weights = principle_weights(space, principles)
    ranking = rank_choices(space, stats, weights)
    has_stats = [bool(stats and stats[j]) for j in range(len(space.positions))]
    fallback = ranked_filter(ranking, k, weights, has_stats)
    how, note = "statistics", ""
    events: list[dict] = []
    usage = Usage()
    flt = fallback
    llm = ctx.llm_for("planner")
    chosen = False  # a "choose" backend answered (or there was nothing to choose)
    while llm is not None and llm.prompt == "choose":  # a model that picks one of a few ranked filters
        how = "fallback"
        try:
            flt, how, error = choose_plan(ctx, llm, principles, evidence, ranking, weights, has_stats, min_size, usage, events)
        except Exception as exc:  # noqa: BLE001 - a run never dies because of the LLM
            log.warning("planner LLM failed: %s", exc)
            events.append({"event": "llm_error", "node": "plan", "error": f"{type(exc).__name__}: {exc}"[:400]})
            events.append({"event": "fallback", "node": "plan"})
            flt, llm = fallback, None
            break
        if how != "fallback":
            chosen = True
            break
        flt = fallback
        if not llm.fall(f"invalid output after a repair ({error})"[:400], node="plan"):
            llm = None
    while llm is not None and not chosen:  # once per backend of the planner's chain that answers invalid output after a repair
        min_llm = min(min_size, space.size())
        messages: list = [
            SystemMessage(prompts.PLANNER_SYSTEM.format(k=k, min_size=min_llm)),
            HumanMessage(prompts.PLANNER_USER.format(
                principles=render_principles(principles), options=render_options(space, ranking, stats),
                k=k, min_size=min_llm,
            )),
        ]
        how = "fallback"
        schema = planner_reply_model(space, k)
        error: str | None = None  # the last invalid answer's error, when both attempts were invalid
        try:
            for attempt in range(2):
                res = llm.structured(schema, messages, usage)
                error = res.error
                if res.value is not None:
                    try:
                        flt = validate_reply(res.value, space, k, min_llm)
                        conflicts = evidence_conflicts(space, flt, ranking, stats, weights, tuning=tuning)
                        if conflicts and attempt == 0:
                            # one chance to reconsider; a model that insists overrules the evidence
                            raise FilterError("; ".join(conflicts) + ". Keep these choices, or answer the same again if you are sure")
                        if conflicts:
                            events.append({"event": "overruled_evidence", "node": "plan", "positions": conflicts})
                        how, note = ("llm" if attempt == 0 else "repaired"), res.value.note
                        error = None
                        break
                    except FilterError as exc:
                        error = str(exc)
                events.append({"event": "repair" if attempt == 0 else "fallback", "node": "plan", "error": error})
                messages += repair_messages(res.raw, error, "PlannerReply")
        except Exception as exc:  # noqa: BLE001 - a run never dies because of the LLM
            log.warning("planner LLM failed: %s", exc)
            events.append({"event": "llm_error", "node": "plan", "error": f"{type(exc).__name__}: {exc}"[:400]})
            events.append({"event": "fallback", "node": "plan"})
            how, error = "fallback", None  # the chain already fell through every backend (recorded)
        if how == "fallback":
            flt = fallback
            if error is not None and llm.fall(f"invalid output after a repair ({error})"[:400], node="plan"):
                continue
        break
    widened = False
    if flt.size() < min_size:
        wider = widen(flt, ranking, min_size)
        widened = wider.size() > flt.size()
        if widened:
            events.append({"event": "widened", "node": "plan", "from": flt.size(), "to": wider.size()})
        flt = wider
    return PlanResult(flt.check(space), how, widened, events, usage, note)
