"""The LLM chooser of the `rank` strategy (LM-Searcher, zero-shot): given the best past trials as
`code|score` lines and a numbered pool of unseen candidates, a chat model names one candidate.

The prompt has a stated token budget (`token_budget`, counted as UTF-8 bytes: with byte-level BPE
tokenizers, Qwen's and GPT's, every token covers at least one byte, so bytes bound tokens from
above; the tool schema and a chat-template allowance are counted too). Over budget, the worst past
trials go first, then the code legend, then candidates from the end of the pool. The answer is a
`RankChoice` function call with the candidate's number (the schema enumerates 1..n, so llama.cpp's
grammar cannot produce anything else, and it stays the same from call to call so the prompt's
prefix can be reused); a candidate's code is accepted too. An invalid, out-of-pool or empty answer
is repaired once; then the chooser returns None, `RankSearch` takes the surrogate's candidate, and
the call's record says so.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from archlore.tools.errors import ConfigError
from archlore.tools.spaces import SearchSpace
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field, create_model

from . import prompts
from .llm import Usage, repair_messages

log = logging.getLogger(__name__)

TOKEN_BUDGET = 2000  # estimated prompt tokens per call (an upper bound, see the module docstring)
TEMPLATE_ALLOWANCE = 64  # chat-template tokens around the messages and the tool block
# the smallest budget: the instructions, the schema and one candidate of the largest space (200
# positions) take about 1,070 estimated tokens with no history and no legend
MIN_TOKEN_BUDGET = 1500


def estimate_tokens(*texts: str) -> int:
    """An upper bound on the tokens of `texts` for byte-level BPE tokenizers: their UTF-8 bytes."""
    return sum(len(t.encode("utf-8")) for t in texts)


def rank_choice_model(n: int) -> type[BaseModel]:
    """The answer schema for a pool of `n`: the candidate's number, 1..n."""
    return create_model(
        "RankChoice",
        __doc__="The candidate to evaluate next.",
        candidate=(Any, Field(
            description=f"the number (1 to {n}) of the chosen candidate",
            json_schema_extra={"type": "integer", "enum": list(range(1, n + 1))},
        )),
    )


def legend(space: SearchSpace) -> str:
    """What each code character means: one line when every position has the same choices."""
    def ids(choices: tuple[str, ...]) -> str:
        return ", ".join(f"{_DIGITS[i]}={c}" for i, c in enumerate(choices))

    names = [p.choices for p in space.positions]
    if all(c == names[0] for c in names):
        return f" ({len(space.positions)} positions: {', '.join(p.name for p in space.positions)}; choices {ids(names[0])})"
    return " (" + "; ".join(f"{p.name}: {ids(p.choices)}" for p in space.positions) + ")"


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass
class Prompt:
    system: str
    user: str
    shown_history: int
    shown_pool: int
    estimated_tokens: int


def build_prompt(space: SearchSpace, history: list[str], pool: list[str], budget: int = TOKEN_BUDGET) -> Prompt:
    """The messages for one choice, cut to `budget` estimated tokens (worst trials first, then the
    legend, then candidates from the end; at least one candidate always stays)."""
    hist = list(history)
    scores = [float(line.rsplit("|", 1)[1]) for line in hist]
    keep_legend = True
    n = len(pool)

    def render() -> tuple[str, str, int]:
        system = prompts.RANKER_SYSTEM.format(legend=legend(space) if keep_legend else "")
        user = prompts.RANKER_USER.format(
            history="\n".join(hist) or prompts.RANKER_NO_HISTORY,
            pool="\n".join(f"{i + 1}: {code}" for i, code in enumerate(pool[:n])),
        )
        schema = json.dumps(rank_choice_model(n).model_json_schema())
        return system, user, estimate_tokens(system, user, schema) + TEMPLATE_ALLOWANCE

    system, user, tokens = render()
    while tokens > budget and hist:
        worst = min(range(len(hist)), key=lambda i: (scores[i], -i))
        del hist[worst], scores[worst]
        system, user, tokens = render()
    if tokens > budget and keep_legend:
        keep_legend = False
        system, user, tokens = render()
    while tokens > budget and n > 1:
        n -= 1
        system, user, tokens = render()
    return Prompt(system, user, len(hist), n, tokens)


def read_choice(value: BaseModel, pool: list[str], n: int) -> tuple[int | None, str]:
    """The 0-based index an answer names (its number, or a code among the first `n`), or an error."""
    raw = value.candidate
    text = str(raw).strip()
    if isinstance(raw, int) or text.isdigit():
        k = int(text)
        if 1 <= k <= n:
            return k - 1, ""
        if text in pool[:n]:
            return pool.index(text), ""
        return None, f"candidate {k} is not in the pool: answer with a number from 1 to {n}"
    if text in pool[:n]:
        return pool.index(text), ""
    if not text:
        return None, f"the candidate is empty: answer with a number from 1 to {n}"
    return None, f"{text[:40]!r} is not a candidate: answer with a number from 1 to {n}"


@dataclass
class LLMChooser:
    """`choose(history_lines, pool_lines) -> index | None` for `tools.rank.RankSearch`, through an
    `agents.llm.LLM`. Every call is recorded in `calls` (tokens, seconds, answer, fallback)."""

    llm: Any
    space: SearchSpace
    token_budget: int = TOKEN_BUDGET
    usage: Usage = field(default_factory=Usage)
    calls: list[dict] = field(default_factory=list)
    skip_without_history: bool = True  # the first step: no call (no trials to rank candidates by)

    def __post_init__(self) -> None:
        if self.token_budget < MIN_TOKEN_BUDGET:
            raise ConfigError(f"the ranker's token budget must be at least {MIN_TOKEN_BUDGET}, got {self.token_budget}")

    def __call__(self, history: list[str], pool: list[str]) -> int | None:
        if not history and self.skip_without_history:
            # nothing to rank by: the model could only guess among random candidates
            self.calls.append({"event": "rank_choice", "node": "search", "how": "surrogate: no trials yet",
                               "prompt_tokens": 0, "output_tokens": 0, "seconds": 0.0, "answer": None})
            return None
        prompt = build_prompt(self.space, history, pool, self.token_budget)
        schema = rank_choice_model(prompt.shown_pool)
        messages: list = [SystemMessage(prompt.system), HumanMessage(prompt.user)]
        record: dict = {
            "event": "rank_choice", "node": "search", "history_shown": prompt.shown_history,
            "pool_shown": prompt.shown_pool, "estimated_tokens": prompt.estimated_tokens,
            "budget": self.token_budget, "attempts": 0,
        }
        before = (self.usage.input_tokens, self.usage.output_tokens)
        started = time.perf_counter()
        chosen: int | None = None
        errors: list[str] = []
        try:
            for _ in range(2):
                record["attempts"] += 1
                res = self.llm.structured(schema, messages, self.usage)
                error = res.error or ""
                if res.value is not None:
                    chosen, error = read_choice(res.value, pool, prompt.shown_pool)
                if chosen is not None:
                    break
                errors.append(error)
                messages += repair_messages(res.raw, error, "RankChoice")
        except Exception as exc:  # noqa: BLE001 - a run never dies because of the LLM
            log.warning("ranker LLM failed: %s", exc)
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
        record.update(
            prompt_tokens=self.usage.input_tokens - before[0], output_tokens=self.usage.output_tokens - before[1],
            seconds=round(time.perf_counter() - started, 3), answer=chosen,
            how="llm" if chosen is not None and not errors else ("repaired" if chosen is not None else "fallback: surrogate"),
        )
        if errors:
            record["errors"] = errors
        self.calls.append(record)
        return chosen
