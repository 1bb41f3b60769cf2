"""The typed state of the agent graph: only what the next step needs, so every checkpoint has the
same small size. Evaluations and the journal (principles per round, filters, events) live in the
ledger."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from .llm import merge_usage


class State(TypedDict, total=False):
    round: int  # adaptation round; 0 = before the first check
    mode: str  # what the analyst does next: initial | update | branch
    principles: list[dict[str, Any]]  # current principles (memory.record.Principle dumps)
    original_principles: list[dict[str, Any]]  # those of round 0, for branching
    filter: list[list[int]]  # current SpaceFilter, choice ids per position
    next_check: int  # evaluations used at which the next check happens
    best_at_check: float | None  # best validation value at the last check
    recalled: list[dict[str, Any]]  # memories used, with their run ids and data provenance
    evidence: dict[str, Any] | None  # this round's statistics (tools.evidence.Evidence.to_json), computed once
    tokens: Annotated[dict[str, dict[str, float]], merge_usage]  # per node
    stopped: str | None  # why the search stopped early ("exhausted"), if it did
    done: bool
    remembered: list[str]  # ids written to the memory
    remembered_data_tasks: list[str]  # their provenance: the tasks whose data produced them
