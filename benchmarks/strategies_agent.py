"""The agents as harness strategy `agent` (`archlore bench --strategy agent --llm NAME`).

Each (target, source, seed) is one agent run on the tabular executor with an in-memory ledger and
checkpointer; with `--llm local` the llama.cpp server is started once for the whole benchmark.
No memory is used unless asked: `--memory PATH` copies that store into a fresh temporary one for
this experiment, and the runs only recall from it (they never write, so nothing one seed learns
reaches another seed, and recall excludes the target task).
"""

from __future__ import annotations

import atexit
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from archlore.agents.context import RunSettings
from archlore.agents.runner import execute, make_llm
from archlore.tools.ledger import Evaluation, Ledger

from .harness import StrategyRequest, register_strategy

_LLMS: dict[str, Any] = {}
_MEMORIES: dict[str, Any] = {}
_STACK = ExitStack()
atexit.register(_STACK.close)


def _llm(spec: str) -> Any:
    if spec not in _LLMS:
        _LLMS[spec] = make_llm(RunSettings(run_id="bench", llm=spec), _STACK)
    return _LLMS[spec]


def _memory(location: str | None) -> Any:
    """A read-only copy of the store at `location`, made once per benchmark process."""
    if not location:
        return None
    if location not in _MEMORIES:
        from archlore.memory.store import open_store

        tmp = Path(_STACK.enter_context(tempfile.TemporaryDirectory(prefix="archlore-bench-memory-")))
        with open_store(location, embedding="auto") as src:
            src.export(tmp / "memory.json")
            embedding = src.embedding
        copy = _STACK.enter_context(open_store(tmp / "store", embedding=embedding))
        copy.import_(tmp / "memory.json")
        _MEMORIES[location] = copy
    return _MEMORIES[location]


def agent_strategy(req: StrategyRequest) -> list[Evaluation]:
    spec = str(req.options.get("llm") or "none")
    settings = RunSettings(
        run_id=req.run_id, space=req.space_name, target=req.target, source=req.source, budget=req.budget,
        llm=spec, seed=req.seed, population=req.population, tournament=req.tournament,
        max_choices=req.k, top_n=req.top_n, memory="off", remember=False,
        strategy=str(req.options.get("agent_strategy") or "guided-rea"),
    )
    ledger = Ledger(None)
    memory = _memory(req.options.get("memory"))
    execute(settings, ledger=ledger, table=req.table, llm=_llm(spec), memory=memory, use_llm_spec=False)
    return ledger.evaluations(req.run_id)


register_strategy("agent", agent_strategy, needs_source=True)
