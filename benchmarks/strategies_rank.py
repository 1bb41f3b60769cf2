"""LM-Searcher's ranking alone as harness strategy `rank` (`archlore bench --strategy rank --llm NAME`).

Each (target, seed) is one `tools.rank.RankSearch` over the whole space through the target's
executor: the pool of unseen candidates is drawn by pruning-based subspace sampling, and the chooser
is the LLM given by `--llm` (`agents.ranker.LLMChooser`), or with `--llm none` the additive
surrogate (the non-LLM control). It uses no source task. Inside the agents' filters the same step is
`--strategy agent --agent-strategy guided-rank`. The chooser's token use per run goes into the
row's `llm_usage` (`rank_usage`).
"""

from __future__ import annotations

from archlore.agents.ranker import LLMChooser
from archlore.tools.rank import RankSearch

from .baselines import search
from .harness import StrategyRequest, register_strategy
from .strategies_agent import _llm

def rank_strategy(req: StrategyRequest) -> dict:
    spec = str(req.options.get("llm") or "none")
    roles = _llm(spec)  # agents.roles.RoleLLMs (one server for the whole benchmark) or None
    llm = roles.get("ranker") if roles is not None else None
    chooser = LLMChooser(llm, req.space) if llm is not None else None
    picks: list[dict] = []
    search(req, RankSearch(chooser, on_pick=picks.append))
    if chooser is None:
        return {}  # the surrogate chose: no LLM use to report
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
