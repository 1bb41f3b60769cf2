"""The analyst and the planner in "choose" mode (`prompt: choose`, the local model's default).

Code states and ranks the options from the data; the model only names the ones it takes. The
analyst is shown the statistical analyst's principles of the round (each with its numbers), the
principles carried from earlier rounds or recalled, and a few runner-up choices the statistics did
not turn into principles, and answers with their numbers, most important first. The planner is
shown a few filters built from the round's ranking (top-1, top-2, ... choices per position, each
widened to the minimum size), with their sizes and how many of the evidence's top cells each
holds, and answers with one number. Prompts are a few hundred tokens and answers a few tokens
(the schemas enumerate the numbers, so llama.cpp's grammar cannot write anything else), which is
what makes a local run fast; every claim still comes from the data, so nothing needs checking but
the numbers. An invalid answer gets one repair turn; then the role falls to the next backend of
its chain or to the statistical answer, and the record says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from archlore.memory.record import Principle
from archlore.tools.evidence import Evidence
from archlore.tools.spaces import Arch, SearchSpace, SpaceFilter
from pydantic import BaseModel, Field, create_model

from . import prompts
from .llm import Usage, repair_messages
from .principles import (
    effect_statements,
    generated_text,
    restate_partial,
    share_statements,
    stat_text,
)
from .tuning import TUNING, Tuning

log = logging.getLogger(__name__)

MAX_SHOWN = 10  # candidate principles in one analyst prompt
MAX_ALTERNATIVES = 3  # of them, runner-up choices the statistics did not state
MAX_KEPT = 8  # principles the model may keep
MIN_KEPT = 3  # and must keep (measured: left free, the 1.5B once kept a single runner-up of 10)


def numbers_model(name: str, n: int, max_items: int, doc: str, min_items: int = 1) -> type[BaseModel]:
    """`{"choose": [numbers]}`: `min_items` to `max_items` numbers from 1..n (the schema enumerates them)."""
    return create_model(
        name, __doc__=doc,
        choose=(list[Any], Field(
            description="candidate numbers, most important first",
            json_schema_extra={"items": {"type": "integer", "enum": list(range(1, n + 1))},
                               "minItems": min_items, "maxItems": max_items},
        )),
    )


def number_model(name: str, n: int, doc: str) -> type[BaseModel]:
    """`{"option": number}` from 1..n."""
    return create_model(
        name, __doc__=doc,
        option=(Any, Field(description="option number",
                           json_schema_extra={"type": "integer", "enum": list(range(1, n + 1))})),
    )


def read_numbers(raw: Any, n: int, max_items: int, min_items: int = 1) -> tuple[list[int] | None, str]:
    """0-based indices of the numbers in an answer (repeats dropped, order kept), or an error."""
    values = raw if isinstance(raw, list) else [raw]
    out: list[int] = []
    for v in values:
        text = str(v).strip()
        if not text.lstrip("-").isdigit():
            return None, f"{text[:30]!r} is not a number: answer with numbers from 1 to {n}"
        k = int(text)
        if not 1 <= k <= n:
            return None, f"{k} is not a candidate: answer with numbers from 1 to {n}"
        if k - 1 not in out:
            out.append(k - 1)
    if len(out) < min_items:
        return None, f"{len(out)} numbers given: answer with {min_items} to {max_items} different numbers from 1 to {n}"
    if len(out) > max_items:
        return None, f"{len(out)} numbers given; at most {max_items}"
    return out, ""


def ask(llm: Any, schema: type[BaseModel], messages: list, usage: Usage, read, function: str,
        events: list[dict], node: str) -> tuple[Any, str | None]:
    """One question with one repair turn: `read(value) -> (answer | None, error)`; the error of the
    last invalid answer when both were invalid."""
    error: str | None = None
    for attempt in range(2):
        res = llm.choose(schema, messages, usage)
        error = res.error
        if res.value is not None:
            answer, error = read(res.value)
            if answer is not None:
                return answer, None
        events.append({"event": "repair" if attempt == 0 else "fallback", "node": node, "error": error})
        messages += repair_messages(res.raw, error or "", function)
    return None, error


# ---------------------------------------------------------------------------------------------
# the analyst
@dataclass(frozen=True)
class Candidate:
    principle: Principle
    kind: str  # "fresh" (the statistics' principle this round), "carried", "alternative"


def _numbers(p: Principle, ev: Evidence) -> str:
    s = ev.stat(p.position, p.choice) if p.position != "*" else None
    if s is None:
        return f"confidence {p.confidence:.2f}"
    return f"top {s.top_share:.0%}, all {s.base_share:.0%}"


def alternatives(ev: Evidence, taken: list[Principle], limit: int, *, tuning: Tuning = TUNING) -> list[Principle]:
    """Per position, the best-represented choice among the top cells that no principle speaks of
    (when it is over-represented at all), most over-represented first."""
    spoken = {(p.position, p.choice) for p in taken}
    star = {p.choice for p in taken if p.position == "*"}
    out = []
    for col in ev.stats:
        for s in sorted(col, key=lambda s: (-s.top_share, -s.lift)):
            if (s.position, s.choice) in spoken or s.choice in star:
                continue
            if s.top_count >= 1 and s.lift > 1.0:
                out.append(Principle(
                    text="", position=s.position, choice=s.choice, direction="prefer",
                    confidence=round(float(np.clip(s.top_share, *tuning.prefer_confidence_clip)), 3),
                    evidence=stat_text(s, ev.label),
                ))
            break
    out.sort(key=lambda p: -(ev.stat(p.position, p.choice).lift))
    return [p.model_copy(update={"text": generated_text(p, ev)}) for p in out[:limit]]


def analyst_candidates(principles: list[Principle], fresh: int, ev: Evidence, *,
                       tuning: Tuning = TUNING) -> tuple[list[Candidate], list[Principle]]:
    """What the analyst is shown (at most MAX_SHOWN) and the statistical principles left unshown."""
    own = [Candidate(p, "fresh") for p in principles[:fresh]]
    old = [Candidate(p, "carried") for p in principles[fresh:]]
    alts = [Candidate(p, "alternative") for p in alternatives(ev, principles, MAX_ALTERNATIVES, tuning=tuning)]
    room = MAX_SHOWN - len(alts)
    n_old = min(len(old), max(2, room - len(own)))
    n_own = min(len(own), room - n_old)
    n_old = min(len(old), room - n_own)
    shown = own[:n_own] + old[:n_old] + alts
    unshown = [c.principle for c in own[n_own:] + old[n_old:]]
    return shown, unshown


def render_candidates(shown: list[Candidate], ev: Evidence) -> str:
    lines = []
    for i, c in enumerate(shown):
        p = c.principle
        where = "every position" if p.position == "*" else p.position
        tag = {"carried": ", carried", "alternative": ", new"}.get(c.kind, "")
        lines.append(f"{i + 1}. {p.direction} {p.choice} at {where}: {_numbers(p, ev)}{tag}")
    return "\n".join(lines)


def answer_phrase(kind: str, function: str, example: str) -> str:
    """How to answer: JSON for a local model (its grammar holds it to the schema), else a call."""
    return f"with JSON only, e.g. {example}" if kind == "local" else f"by calling {function}"


def analyst_prompt(mode: str, shown: list[Candidate], ev: Evidence, source: str | None, target: str,
                   kind: str = "local") -> tuple[str, str]:
    situation = prompts.ANALYST_CHOOSE_SITUATION[mode].format(
        source=source or "-", target=target, n_top=ev.n_top, n_cells=ev.n_cells,
    )
    return (prompts.ANALYST_CHOOSE_SYSTEM.format(answer=answer_phrase(kind, "AnalystChoice", '{"choose": [2, 1, 4]}')),
            prompts.ANALYST_CHOOSE_USER.format(situation=situation, candidates=render_candidates(shown, ev), target=target))


def assemble(mode: str, shown: list[Candidate], chosen: list[int], unshown: list[Principle],
             carried_all: list[Principle], ev: Evidence) -> tuple[list[Principle], int]:
    """The chosen principles (fresh ones restated from the evidence, carried ones restated if their
    statement lost effects), then the unshown ones; and how many lead as this round's own."""
    picked = [shown[i] for i in chosen]
    fresh = [c.principle for c in picked if c.kind == "fresh"]
    fresh = share_statements(fresh, ev) if mode == "initial" else effect_statements(fresh, ev)
    alts = [c.principle for c in picked if c.kind == "alternative"]
    carried = restate_partial([c.principle for c in picked if c.kind == "carried"], carried_all)
    return fresh + alts + carried + unshown, len(fresh) + len(alts)


# ---------------------------------------------------------------------------------------------
# the planner
def coverage(flt: SpaceFilter, cells: list[tuple[Arch, float]], n_top: int) -> tuple[int, float | None]:
    """How many of the `n_top` best `cells` the filter holds, and the best metric inside it."""
    top = sorted(cells, key=lambda c: -c[1])[:n_top]
    inside = [m for a, m in cells if flt.contains(a)]
    return sum(flt.contains(a) for a, _ in top), (max(inside) if inside else None)


def brief_principles(principles: list[Principle], limit: int = 6) -> str:
    """The strongest effects, one short line each (the planner's prompt)."""
    top = sorted(principles, key=lambda p: -p.confidence)[:limit]
    more = f"\n(and {len(principles) - limit} weaker)" if len(principles) > limit else ""
    return "\n".join(
        f"- {p.direction} {p.choice} at {'every position' if p.position == '*' else p.position} ({p.confidence:.2f})"
        for p in top
    ) + more if top else "(none)"


def planner_prompt(principles: list[Principle], options: list[tuple[int, SpaceFilter]], space: SearchSpace,
                   cells: list[tuple[Arch, float]], n_top: int, label: str, kind: str = "local") -> tuple[str, str]:
    lines = []
    for i, (w, flt) in enumerate(options):
        line = f"{i + 1}. top {w} per position: {flt.size()} architectures"
        if cells:
            held, best = coverage(flt, cells, n_top)
            line += f", holds {held} of the top {min(n_top, len(cells))}" + (f", best {best:.2f}" if best is not None else "")
        lines.append(line)
    what = f"cells of {label}" if cells else "no cells known yet"
    return (prompts.PLANNER_CHOOSE_SYSTEM.format(answer=answer_phrase(kind, "FilterChoice", '{"option": 2}')),
            prompts.PLANNER_CHOOSE_USER.format(principles=brief_principles(principles), coverage=what, options="\n".join(lines)))
