"""Set up, run and resume agent runs; build the run record.

A persistent run lives in `RUNS_DIR/<run_id>/`: `settings.json`, `ledger.db` (every evaluation),
`checkpoints.db` (LangGraph's SQLite checkpointer) and `record.json`. `resume` reloads the settings
and continues the graph from its last checkpoint; no finished evaluation is run again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from archlore.tools.errors import ArchloreError, ConfigError, DataError
from archlore.tools.evaluator import Evaluator
from archlore.tools.executors import Executor, TabularExecutor
from archlore.tools.ledger import Ledger
from archlore.tools.source_view import SourceView
from archlore.tools.spaces import SearchSpace, get_space
from archlore.tools.tables import TASK_DESCRIPTIONS, Table, load_table, load_user_csv

from .context import RunContext, RunSettings
from .graph import builder, recursion_limit
from .llm import LLMSettings, LLMSpec, make_openai, parse_llm

log = logging.getLogger(__name__)

RECORD_VERSION = 1


def runs_dir(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("ARCHLORE_RUNS") or "runs")


def new_run_id(settings_like: dict[str, Any]) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{settings_like.get('space', 'run')}-{settings_like.get('target', '')}-s{settings_like.get('seed', 0)}-{stamp}"


def _table(settings: RunSettings, space: SearchSpace) -> Table | None:
    if settings.table:
        return load_user_csv(settings.table, space)
    if space.name in {"nb201", "tnb101"}:
        return load_table(space.name, settings.data)
    return None


def make_executor(settings: RunSettings, space: SearchSpace, table: Table | None) -> Executor:
    if settings.executor == "train":
        from archlore.tools.training import TrainingExecutor

        kwargs = {"epochs": settings.train_epochs} if settings.train_epochs else {}
        # one thread by default: on a busy 2-core machine torch's default was 5-20x slower
        threads = int(os.environ.get("ARCHLORE_TRAIN_THREADS", "1")) or None
        return TrainingExecutor(space, settings.target, seed=settings.seed, threads=threads, **kwargs)
    if table is None:
        raise DataError(f"space {space.name!r} has no table: pass --table FILE.csv or --executor train")
    return TabularExecutor(table, settings.target)


def make_llm(settings: RunSettings, stack: ExitStack) -> Any:
    spec = parse_llm(settings.llm)
    # a 1.5B model on one CPU thread needs minutes for a long prompt on a busy machine
    timeout = settings.llm_timeout or (600.0 if spec.provider == "local" else 120.0)
    # a stuck local server rarely recovers by waiting: retry it once, hosted APIs more often
    retries = settings.llm_retries if settings.llm_retries is not None else (1 if spec.provider == "local" else 4)
    llm_settings = LLMSettings(timeout=timeout, retries=retries)
    if spec.provider == "none":
        return None
    if spec.provider == "local":
        from . import local_llm

        server = stack.enter_context(local_llm.LocalLLMServer())
        llm = make_openai(LLMSpec("openai", server.model, server.base_url), llm_settings, api_key="local")
        llm.name = "local"
        return llm
    return make_openai(spec, llm_settings)


def open_memory(settings: RunSettings) -> Any:
    if settings.memory == "off":
        return None
    from archlore.memory.store import open_store

    return open_store(settings.memory, embedding=settings.embedding)


def build_context(
    settings: RunSettings,
    ledger: Ledger,
    stack: ExitStack,
    *,
    llm: Any = None,
    memory: Any = None,
    on_event: Callable[[dict], None] | None = None,
    table: Table | None = None,
    use_llm_spec: bool = True,
) -> RunContext:
    space = get_space(settings.space)
    if table is None and (settings.executor == "tabular" or settings.source):
        table = _table(settings, space)
    if settings.source is not None:
        if table is None:
            raise DataError(f"--source {settings.source} needs a results table for {space.name}: pass --data or --table")
        table.check_task(settings.source)
    executor = make_executor(settings, space, table)
    if llm is None and use_llm_spec:
        llm = make_llm(settings, stack)
    return RunContext(
        settings=settings,
        space=space,
        evaluator=Evaluator(executor, ledger, settings.run_id, settings.budget),
        source=SourceView(table, [settings.source], target=settings.target) if settings.source else None,
        target_description=settings.task_description or TASK_DESCRIPTIONS.get(settings.target, settings.target),
        source_description=TASK_DESCRIPTIONS.get(settings.source or "", settings.source or ""),
        llm=llm,
        memory=memory,
        on_event=on_event,
    )


def initial_state(settings: RunSettings) -> dict:
    return {"round": 0, "mode": "initial", "next_check": settings.warmup, "best_at_check": None}


def build_record(ctx: RunContext, state: dict, *, data_fed: dict | None = None) -> dict:
    s = ctx.settings
    evs = ctx.evaluator.history
    best = ctx.evaluator.best()
    totals: dict[str, float] = {}
    for u in (state.get("tokens") or {}).values():
        for k, v in u.items():
            totals[k] = round(totals.get(k, 0) + v, 6)
    return {
        "record_version": RECORD_VERSION,
        "run_id": s.run_id,
        "space": ctx.space.name,
        "target": s.target,
        "source": s.source,
        "llm": s.llm,
        "seed": s.seed,
        "budget": s.budget,
        "executor": s.executor,
        "strategy": s.strategy,
        "settings": s.to_json(),
        "data_fed_to_analyst": data_fed or {
            "source_task": s.source,
            "source_table": ctx.source.describe() if ctx.source is not None else None,
            "source_cells": f"all cells of {s.source}, top {s.top_n} for statistics, top {s.show_n} as layer lists" if s.source else None,
            "target_data": "only this run's own evaluations (adaptation rounds)",
            "memory": [r["run_id"] for r in state.get("recalled", [])],
        },
        "evaluations": [e.to_dict() for e in evs],
        "used": len(evs),
        "best": {"arch": best.arch, "valid": best.valid, "test": best.test} if best else None,
        "principles_history": state.get("principles_history", []),
        "principles": state.get("principles", []),
        "filters": state.get("filters", []),
        "events": state.get("events", []),
        "tokens": {"per_node": state.get("tokens", {}), "total": totals},
        "recalled": state.get("recalled", []),
        "remembered": state.get("remembered", []),
        "stopped": state.get("stopped") or ("budget" if len(evs) >= s.budget else "unknown"),
    }


def execute(
    settings: RunSettings,
    *,
    ledger: Ledger | None = None,
    checkpointer: Any = None,
    llm: Any = None,
    memory: Any = None,
    on_event: Callable[[dict], None] | None = None,
    table: Table | None = None,
    resume: bool = False,
    use_llm_spec: bool = True,
) -> dict:
    """Run (or, with `resume`, continue) the graph and return the run record."""
    with ExitStack() as stack:
        ctx = build_context(
            settings, ledger or Ledger(None), stack, llm=llm, memory=memory, on_event=on_event,
            table=table, use_llm_spec=use_llm_spec,
        )
        if checkpointer is None:
            from langgraph.checkpoint.memory import InMemorySaver

            checkpointer = InMemorySaver()
        graph = builder.compile(checkpointer=checkpointer)
        config = {
            "configurable": {"thread_id": settings.run_id},
            "recursion_limit": recursion_limit(settings.budget, settings.check_every, settings.warmup),
        }
        snapshot = graph.get_state(config)
        if resume and snapshot.values and not snapshot.next:
            state = snapshot.values  # already finished: rebuild the record
        else:
            # durability="sync": each step's checkpoint is on disk before the next step starts,
            # so a kill -9 loses at most the step in flight (whose evaluations the ledger keeps)
            state = graph.invoke(
                None if resume and snapshot.values else initial_state(settings), config, context=ctx,
                durability="sync",
            )
        return build_record(ctx, state)


def run_persistent(
    settings: RunSettings,
    *,
    root: str | Path | None = None,
    resume: bool = False,
    on_event: Callable[[dict], None] | None = None,
) -> tuple[dict, Path]:
    """A run with its settings, ledger, checkpoints and record under `root/<run_id>/`."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    run_dir = runs_dir(root) / settings.run_id
    if resume:
        cfg = run_dir / "settings.json"
        if not cfg.exists():
            raise ConfigError(f"no run {settings.run_id!r} under {run_dir.parent}: check the id or pass --runs-dir")
        settings = RunSettings.from_json(json.loads(cfg.read_text()))
    else:
        if (run_dir / "settings.json").exists():
            raise ConfigError(f"run {settings.run_id!r} already exists in {run_dir.parent}; pass --resume {settings.run_id} to continue it")
        run_dir.mkdir(parents=True, exist_ok=True)
        settings.created = settings.created or time.strftime("%Y-%m-%dT%H:%M:%S")
        settings.save(run_dir / "settings.json")
    ledger = Ledger(run_dir / "ledger.db")
    conn = sqlite3.connect(run_dir / "checkpoints.db", check_same_thread=False)
    memory = None
    try:
        memory = open_memory(settings)
        record = execute(
            settings, ledger=ledger, checkpointer=SqliteSaver(conn), memory=memory,
            on_event=on_event, resume=resume,
        )
    except ArchloreError:
        if not resume and not ledger.evaluations(settings.run_id):
            # a run that failed before evaluating anything (bad data path, no API key...) leaves
            # nothing behind, so the same command works once the cause is fixed
            conn.close()
            ledger.close()
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        if memory is not None:
            memory.close()
        conn.close()
        ledger.close()
    tmp = run_dir / "record.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(run_dir / "record.json")
    return record, run_dir
