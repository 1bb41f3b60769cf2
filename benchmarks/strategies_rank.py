"""LM-Searcher's ranking alone as harness strategy `rank` (`archlore bench --strategy rank --llm NAME`).

Each (target, seed) is one `tools.rank.RankSearch` over the whole space through the target's
executor: the pool of unseen candidates is drawn by pruning-based subspace sampling, and the chooser
is the LLM given by `--llm` (`agents.ranker.LLMChooser`), or with `--llm none` the additive
surrogate (the non-LLM control). It uses no source task. Inside the agents' filters the same step is
`--strategy agent --agent-strategy guided-rank`. The chooser's token use per benchmark process is
kept in `USAGE` (per LLM name) and logged.
"""

from __future__ import annotations

import logging

from archlore.agents.llm import Usage
from archlore.agents.ranker import LLMChooser
from archlore.tools.rank import RankSearch

from .baselines import search
from .harness import StrategyRequest, register_strategy
from .strategies_agent import _llm

log = logging.getLogger(__name__)

USAGE: dict[str, dict] = {}  # llm name -> {"evaluations": n, "calls": [...], "usage": Usage}


def rank_strategy(req: StrategyRequest) -> dict:
    spec = str(req.options.get("llm") or "none")
    roles = _llm(spec)  # agents.roles.RoleLLMs (one server for the whole benchmark) or None
    llm = roles.get("ranker") if roles is not None else None
    chooser = LLMChooser(llm, req.space) if llm is not None else None
    picks: list[dict] = []
    search(req, RankSearch(chooser, on_pick=picks.append))
    if chooser is None:
        return {}  # the surrogate chose: no LLM use to report
    acc = USAGE.setdefault(spec, {"evaluations": 0, "calls": [], "usage": Usage()})
    acc["evaluations"] += req.budget
    acc["calls"] += chooser.calls
    for k in ("calls", "input_tokens", "output_tokens", "seconds", "errors"):
        setattr(acc["usage"], k, getattr(acc["usage"], k) + getattr(chooser.usage, k))
    u = acc["usage"]
    log.info("rank --llm %s: %d calls, %.0f prompt and %.1f output tokens per evaluation, %.1f s per call",
             spec, u.calls, u.input_tokens / acc["evaluations"], u.output_tokens / acc["evaluations"],
             u.seconds / max(1, u.calls))
    return {"usage": rank_usage(chooser, picks, req.budget)}


def rank_usage(chooser: LLMChooser, picks: list[dict], budget: int) -> dict:
    """One run's chooser use for the benchmark row: the usage totals, plus the steps whose pool the
    model was asked about, those where its answer differs from the surrogate's (`--llm none`), and
    those where the surrogate's pick was taken after an invalid answer."""
    asked = [p for p in picks if len(p["pool"]) > 1]
    calls = [c for c in chooser.calls if c.get("attempts")]
    total = {
        **chooser.usage.to_dict(), "evaluations": budget,
        "input_tokens_per_evaluation": round(chooser.usage.input_tokens / budget, 3),
        "output_tokens_per_evaluation": round(chooser.usage.output_tokens / budget, 3),
        "steps_asked": len(calls), "changed": sum(p["chosen"] != p["surrogate"] for p in asked),
        "fallbacks": sum(c.get("how") == "fallback: surrogate" for c in calls),
    }
    return {"total": total, "per_role": {"ranker": dict(total)}}


register_strategy("rank", rank_strategy, needs_source=False)
