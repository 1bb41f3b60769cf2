"""The LangGraph state machine, wiring only (the nodes live in `agents.nodes`):

    recall -> analyze -> plan -> approve -> search -> assess -> (analyze | remember) -> END

`approve` waits for a person (a LangGraph interrupt) only when the run's settings ask for it.

`builder` is exported uncompiled; callers compile it with their checkpointer.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from .context import RunContext
from .nodes import analyze, approve, assess, plan, recall, remember, route_after_assess, search
from .state import State

builder = StateGraph(State, context_schema=RunContext)
builder.add_node("recall", recall)
builder.add_node("analyze", analyze)
builder.add_node("plan", plan)
builder.add_node("approve", approve)
builder.add_node("search", search)
builder.add_node("assess", assess)
builder.add_node("remember", remember)
builder.add_edge(START, "recall")
builder.add_edge("recall", "analyze")
builder.add_edge("analyze", "plan")
builder.add_edge("plan", "approve")
builder.add_edge("approve", "search")
builder.add_edge("search", "assess")
builder.add_conditional_edges("assess", route_after_assess)
builder.add_edge("remember", END)


def recursion_limit(budget: int, check_every: int, warmup: int) -> int:
    rounds = max(0, budget - warmup) // max(1, check_every) + 3
    return 10 + 5 * rounds  # analyze, plan, approve, search, assess per round
