"""The agents as harness strategy `agent` (`archlore bench --strategy agent --llm NAME`).

Each (target, source, seed) is one agent run on the tabular executor with an in-memory ledger and
checkpointer. The runner gets the request's sealed table (the source's validation copy and the
metered target column), builds its `SourceView` from the source and its executor from the target,
so the agents read target metrics only of the cells they evaluate. With `--llm local` the llama.cpp
server is started once for the whole benchmark.

No memory is used unless asked: `--memory PATH` copies that store into a fresh temporary one for
this experiment, and the runs only recall from it (they never write, so nothing one seed learns
reaches another seed, and recall excludes the target task). A memory whose provenance names a
target (or is of unknown origin) is refused before anything runs, unless the option
`allow_target_in_memory` is true.
"""

from __future__ import annotations

import atexit
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from archlore.agents.context import RunSettings
from archlore.agents.runner import execute, make_llm
from archlore.tools.errors import ConfigError
from archlore.tools.ledger import Ledger

from .harness import StrategyRequest, register_strategy

_LLMS: dict[str, Any] = {}
_MEMORIES: dict[str, Any] = {}
_STACK = ExitStack()
atexit.register(_STACK.close)
UNKNOWN = "unknown"  # memory.record.UNKNOWN: provenance of principles stored before it was recorded


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


def memory_data_tasks(store: Any, space: str) -> set[str]:
    """Every task whose data went into the store's principles of `space` (provenance)."""
    return set(store.data_tasks(space))


def check_memory(store: Any, space: str, targets: Sequence[str], *, allow: bool = False, what: str = "--memory") -> None:
    """Refuse a memory that saw a target's data (or whose provenance is unknown), unless allowed."""
    if allow:
        return
    seen = memory_data_tasks(store, space)
    bad = sorted(set(targets) & seen)
    if bad:
        raise ConfigError(
            f"the memory {what} holds principles learned from the data of target(s) {', '.join(bad)}: a "
            "benchmark with it would score knowledge of the answer; use a memory without them, or pass "
            "--allow-target-in-memory to run anyway (the results then say so)"
        )
    if UNKNOWN in seen:
        raise ConfigError(
            f"the memory {what} holds principles of unknown provenance (stored before provenance was "
            "recorded), which may come from a target's data; use a memory without them, or pass "
            "--allow-target-in-memory to run anyway"
        )


def _space_key(space_name: str) -> str:
    from archlore.tools.spaces import get_space

    return get_space(space_name).name


def preflight(space_name: str, pairs: Sequence[tuple[str, str | None]], options: Mapping[str, Any]) -> None:
    location = options.get("memory")
    if location:
        check_memory(_memory(str(location)), _space_key(space_name), [t for t, _ in pairs],
                     allow=bool(options.get("allow_target_in_memory")), what=str(location))


def agent_strategy(req: StrategyRequest) -> dict:
    spec = str(req.options.get("llm") or "none")
    settings = RunSettings(
        run_id=req.run_id, space=req.space_name, target=req.target, source=req.source, budget=req.budget,
        llm=spec, seed=req.seed, population=req.population, tournament=req.tournament,
        max_choices=req.k, top_n=req.top_n, memory="off", remember=False,
        strategy=str(req.options.get("agent_strategy") or "guided-rea"),
    )
    memory = _memory(req.options.get("memory"))
    if memory is not None:  # the preflight checked every target; a direct call is checked here
        check_memory(memory, req.space.name, [req.target], allow=bool(req.options.get("allow_target_in_memory")))
    ledger = Ledger(None)
    try:
        record = execute(settings, ledger=ledger, table=req.sealed_table(), llm=_llm(spec), memory=memory, use_llm_spec=False)
    finally:
        ledger.close()
    return {"usage": run_usage(record)}


def run_usage(record: dict) -> dict:
    """One run's LLM use for the benchmark row: totals, each role's totals, backend switches."""
    tokens = record.get("tokens") or {}
    return {
        "total": dict(tokens.get("total") or {}),
        "per_role": {role: dict(u.get("total") or {}) for role, u in (tokens.get("per_role") or {}).items()},
        "switches": len(record.get("llm_switches") or []),
    }


register_strategy("agent", agent_strategy, needs_source=True, preflight=preflight)
