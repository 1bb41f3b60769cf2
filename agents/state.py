"""The typed state of the agent graph. Evaluations live in the ledger, not here."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from .llm import merge_usage


class State(TypedDict, total=False):
    round: int  # adaptation round; 0 = before the first check
    mode: str  # what the analyst does next: initial | update | branch
    principles: list[dict[str, Any]]  # current principles (memory.record.Principle dumps)
    original_principles: list[dict[str, Any]]  # those of round 0, for branching
    principles_history: Annotated[list[dict[str, Any]], operator.add]
    filter: list[list[int]]  # current SpaceFilter, choice ids per position
    filters: Annotated[list[dict[str, Any]], operator.add]
    next_check: int  # evaluations used at which the next check happens
    best_at_check: float | None  # best validation value at the last check
    recalled: list[dict[str, Any]]  # memories used, with their run ids
    events: Annotated[list[dict[str, Any]], operator.add]  # repairs, fallbacks, widenings, LLM errors
    tokens: Annotated[dict[str, dict[str, float]], merge_usage]  # per node
    stopped: str | None  # why the search stopped early ("exhausted"), if it did
    done: bool
    remembered: list[str]  # ids written to the memory
