"""The agents as harness strategy `agent` (`archlore bench --strategy agent --llm NAME`).

Each (target, source, seed) is one agent run on the tabular executor with an in-memory ledger and
checkpointer; with `--llm local` the llama.cpp server is started once for the whole benchmark.
No memory is used unless the options ask for one (`memory`: a store handle, or "fresh").
"""

from __future__ import annotations

import atexit
from contextlib import ExitStack
from typing import Any

from archlore.agents.context import RunSettings
from archlore.agents.runner import execute, make_llm
from archlore.tools.ledger import Evaluation, Ledger

from .harness import StrategyRequest, register_strategy

_LLMS: dict[str, Any] = {}
_STACK = ExitStack()
atexit.register(_STACK.close)


def _llm(spec: str) -> Any:
    if spec not in _LLMS:
        _LLMS[spec] = make_llm(RunSettings(run_id="bench", llm=spec), _STACK)
    return _LLMS[spec]


def agent_strategy(req: StrategyRequest) -> list[Evaluation]:
    spec = str(req.options.get("llm") or "none")
    settings = RunSettings(
        run_id=req.run_id, space=req.space_name, target=req.target, source=req.source, budget=req.budget,
        llm=spec, seed=req.seed, population=req.population, tournament=req.tournament,
        max_choices=req.k, top_n=req.top_n, memory="off",
        strategy=str(req.options.get("agent_strategy") or "guided-rea"),
    )
    ledger = Ledger(None)
    memory = req.options.get("memory_store")
    execute(settings, ledger=ledger, table=req.table, llm=_llm(spec), memory=memory, use_llm_spec=False)
    return ledger.evaluations(req.run_id)


register_strategy("agent", agent_strategy, needs_source=True)
