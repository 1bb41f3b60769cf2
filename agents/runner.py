"""Set up, run and resume agent runs; build the run record.

A persistent run lives in `RUNS_DIR/<run_id>/`: `settings.json`, `ledger.db` (every evaluation),
`checkpoints.db` (LangGraph's SQLite checkpointer) and `record.json`. `resume` reloads the settings
and continues the graph from its last checkpoint; no finished evaluation is run again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from archlore.tools.constraints import (
    ConstrainedExecutor,
    CostFunction,
    TableCost,
    check_names,
    constrain_table,
)
from archlore.tools.env import env
from archlore.tools.errors import ArchloreError, ConfigError, DataError
from archlore.tools.evaluator import Evaluator
from archlore.tools.executors import Executor, TabularExecutor
from archlore.tools.ledger import Ledger
from archlore.tools.pareto import Objectives, check_trained
from archlore.tools.source_view import SourceView
from archlore.tools.spaces import SearchSpace, get_space
from archlore.tools.tables import TASK_DESCRIPTIONS, Table, load_table, load_user_csv

from . import roles
from .context import RunContext, RunSettings
from .graph import builder, recursion_limit
from .roles import RoleLLMs

log = logging.getLogger(__name__)

RECORD_VERSION = 2  # 2: principles_history, filters and events come from the ledger's journal


class RunLocked(ArchloreError):
    """Another process is running or resuming this run."""


def runs_dir(path: str | Path | None = None) -> Path:
    return Path(path or env().archlore_runs or "runs")


# A run id names a folder under the runs directory: a plain name, never a path (no separators,
# no leading dot, so neither "." nor ".." nor an absolute path can reach outside it).
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
LOCK_NAME = "run.lock"
# every file a run writes in its folder: cleanup after a failed start removes only those of these
# that this call created, never the folder's other contents
RUN_FILES = ("settings.json", "ledger.db", "ledger.db-wal", "ledger.db-shm", "checkpoints.db",
             "checkpoints.db-wal", "checkpoints.db-shm", "checkpoints.db-journal", "record.json",
             "record.json.tmp", "record.prev.json", LOCK_NAME)


def check_run_id(run_id: str) -> str:
    """`run_id` if it is a safe folder name, else a ConfigError that says what is allowed."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise ConfigError(
            f"run id {run_id!r} is not allowed: use 1 to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (a run id names a folder, never a path)"
        )
    return run_id


def new_run_id(settings_like: dict[str, Any]) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = f"{settings_like.get('space', 'run')}-{settings_like.get('target', '')}-s{settings_like.get('seed', 0)}-{stamp}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).lstrip("._-")[:100]
    return check_run_id(slug or f"run-{stamp}")


def _table(settings: RunSettings, space: SearchSpace) -> Table | None:
    if settings.table:
        return load_user_csv(settings.table, space)
    if space.name in {"nb201", "tnb101"}:
        return load_table(space.name, settings.data)
    return None


def preflight(settings: RunSettings, table: Table | None = None) -> tuple[SearchSpace, Table | None]:
    """Check what a run needs before anything is created: the space, its table, the tasks, the budget.

    A budget above the number of architectures that can be evaluated is capped to it (and said).
    """
    space = get_space(settings.space)
    if table is None and (settings.executor == "tabular" or settings.source
                          or (settings.objectives and settings.executor == "tabular")
                          or (settings.limits and space.name in {"nb201", "tnb101"})):
        table = _table(settings, space)
    if settings.limits and table is not None and all(k in table.cost for k in settings.limits):
        table = constrain_table(table, settings.limits)  # over-limit cells have no result any more
    elif settings.limits and settings.executor == "tabular":
        check_names(settings.limits, list(table.cost) if table is not None else [], table.source if table else space.name)
    if settings.objectives and settings.executor == "train":
        check_trained(settings.objectives)  # accuracy as trained, costs counted on the built model
    elif settings.objectives:
        if table is None:
            raise DataError(f"--objective needs a results table for {space.name}: pass --data or --table")
        Objectives.of(table, settings.objectives)
    if settings.source is not None:
        if table is None:
            raise DataError(f"--source {settings.source} needs a results table for {space.name}: pass --data or --table")
        table.check_task(settings.source)
    if settings.executor == "tabular":
        if table is None:
            raise DataError(f"space {space.name!r} has no table: pass --table FILE.csv or --executor train")
        table.check_task(settings.target)
    if settings.executor == "train":
        check_training(settings, space)
    evaluable = evaluable_cells(settings, space, table)
    if settings.budget > evaluable:
        log.warning(
            "--budget %s is more than the %d architectures that can be evaluated for %s: capped at %d",
            settings.budget, evaluable, settings.target, evaluable,
        )
        settings.budget = evaluable
    return space, table


def dataset_name(spec: str) -> str:
    """The task name of a data set spec, without reading it (`npz:/data/x.npz` -> `npz:x`)."""
    kind, _, path = spec.partition(":")
    if kind in ("folder", "npz") and path:
        p = Path(path.rstrip("/\\")).expanduser()
        return f"{kind}:{p.stem if kind == 'npz' else p.name}"
    return spec.lower()


def builder_spec(settings: RunSettings, space: SearchSpace) -> tuple[str, dict[str, Any]]:
    """The builder a training run uses and its explicit options: `--model`, else the space
    file's `model:` entry (with its options), else "auto" (the space's default builder)."""
    entry = getattr(space, "model", None) or {}
    spec = settings.model or str(entry.get("builder") or "auto")
    options = dict(entry.get("options") or {}) if spec == entry.get("builder") else {}
    return spec, {**options, **settings.model_options}


def check_training(settings: RunSettings, space: SearchSpace) -> None:
    """Before anything is created: the data set loads, and the builder resolves, takes the
    options and builds one candidate of the space (builders.preflight): a ConfigError or
    DataError at the start instead of every candidate failing."""
    from archlore.tools.builders import default_builder, resolve_builder
    from archlore.tools.builders import preflight as check_builder
    from archlore.tools.data import load_dataset
    from archlore.tools.training import accepted_options

    data = load_dataset(settings.dataset, root=settings.data_root, split_seed=settings.split_seed)
    spec, options = builder_spec(settings, space)
    if spec == "auto":
        spec = default_builder(space, data.shape)
    recipe = settings.training_recipe()
    options = {**accepted_options(resolve_builder(spec), recipe.model), **options}
    check_builder(spec, space, data.shape, options)


def make_executor(settings: RunSettings, space: SearchSpace, table: Table | None) -> Executor:
    if settings.executor == "train":
        from archlore.tools.train_cache import TrainCache
        from archlore.tools.training import TrainingExecutor

        spec, options = builder_spec(settings, space)
        # one thread by default: on a busy 2-core machine torch's default was 5-20x slower
        threads = env().archlore_train_threads or None
        trainer = TrainingExecutor(
            space, _dataset(settings), builder=spec, recipe=settings.training_recipe(), model_options=options,
            # the cache holds a SQLite connection, which cannot travel to Ray workers: none on a cluster
            device=settings.device, seed=settings.seed, cache=None if settings.cluster else TrainCache.default(),
            threads=threads,
            concurrency=settings.concurrency,
        )
        if not settings.limits:
            return trainer
        return ConstrainedExecutor(trainer, cost_function(settings, trainer, table), settings.limits)
    assert table is not None, "preflight checks that a tabular run has a table"
    return TabularExecutor(table, settings.target)  # limits: preflight already cut the table


def _dataset(settings: RunSettings) -> Any:
    from archlore.tools.data import load_dataset

    return load_dataset(settings.dataset, root=settings.data_root, split_seed=settings.split_seed)


def trainer_of(executor: Any) -> Any:
    """The TrainingExecutor inside an executor's wrappers (cost limits, a cluster), or None."""
    for _ in range(4):
        if callable(getattr(executor, "record", None)) and hasattr(executor, "recipe"):
            return executor
        executor = getattr(executor, "inner", None)
    return None


def cost_function(settings: RunSettings, executor: Any, table: Table | None) -> CostFunction:
    """Where a run's costs come from: the executor's own `cost_of` (the training executor counts
    parameters and FLOPs of the built model: the hook another part wires), else the table's cost
    columns. A limit on a cost neither has is refused."""
    own = getattr(executor, "cost_of", None)
    if callable(own):
        return executor
    if table is not None and all(k in table.cost for k in settings.limits):
        return TableCost(table)
    raise ConfigError(
        f"--max {', '.join(settings.limits)}: the {settings.executor} executor cannot tell these costs "
        f"before evaluating (no cost_of) and the table has {', '.join(table.cost) if table else 'no costs'}"
    )


def space_name(space: str) -> str:
    """The one name of a space everywhere (run ids, records, the memory): a built-in's name, or the
    space file's `name:` (the file's stem when it has none)."""
    try:
        return get_space(space).name
    except ArchloreError:
        return Path(space).stem  # the preflight reports what is wrong with it


def default_tasks(space: str, table: str | None) -> list[str]:
    """The tasks (metric columns) of a user table, read from its header and the space's column roles:
    `run` uses the only one as the default target."""
    if not table:
        return []
    import csv

    try:
        from archlore.tools.tables import default_role

        given = get_space(space).columns
        with open(table, newline="", encoding="utf-8-sig") as fh:
            header = [h.strip() for h in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, ArchloreError, csv.Error):
        return []  # the preflight says what is wrong, with its own message
    return [h for h in header if h and h != "arch" and not h.endswith("_test")
            and given.get(h, default_role(h) or "max") in {"max", "min"}]


def on_cluster(executor: Executor, settings: RunSettings) -> Executor:
    """The executor run as Ray tasks on `settings.cluster` (a round's candidates in parallel)."""
    from archlore.tools.distributed import RayExecutor

    # unset: one GPU per training candidate when the cluster has GPUs (one CPU otherwise); a
    # table look-up never needs one
    gpus = settings.candidate_gpus if settings.candidate_gpus is not None or settings.executor == "train" else 0.0
    return RayExecutor(executor, cluster=settings.cluster or "local", num_gpus=gpus,
                       threads=env().archlore_train_threads or None)


def evaluable_cells(settings: RunSettings, space: SearchSpace, table: Table | None) -> int:
    """How many distinct architectures the run could evaluate: the budget's upper bound."""
    if settings.executor == "tabular" and table is not None and settings.target in table.valid:
        return int(np.count_nonzero(~np.isnan(table.valid[settings.target])))
    return space.size()


def make_llm(settings: RunSettings, stack: ExitStack) -> RoleLLMs | None:
    """Every role's backend chain (agents/roles.py); one local server for all roles; None: no LLM."""
    plans = roles.resolve(settings.llm, settings.llm_config, timeout=settings.llm_timeout, retries=settings.llm_retries)
    return roles.build(plans, stack)


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
    space, table = preflight(settings, table)
    executor = make_executor(settings, space, table)
    if settings.cluster:
        executor = on_cluster(executor, settings)
    if llm is None and use_llm_spec:
        llm = make_llm(settings, stack)
    if isinstance(llm, RoleLLMs):
        llm = llm.fresh()  # shared clients (a benchmark's), this run's own chains and accounting
    objectives = run_objectives(settings, executor, table)
    needs_cost = settings.limits or (objectives is not None and any(objectives.is_cost(o) for o in objectives.names))
    return RunContext(
        settings=settings,
        space=space,
        evaluator=Evaluator(executor, ledger, settings.run_id, settings.budget, count_failed=settings.count_failed),
        source=SourceView(table, [settings.source], target=settings.target) if settings.source else None,
        target_description=settings.task_description or TASK_DESCRIPTIONS.get(settings.target, settings.target),
        source_description=TASK_DESCRIPTIONS.get(settings.source or "", settings.source or ""),
        llm=llm,
        memory=memory,
        on_event=on_event,
        objectives=objectives,
        cost=(getattr(executor, "cost", None) or (objectives.cost if objectives is not None else None)
              or (TableCost(table) if table is not None and table.cost else None)) if needs_cost else None,
    )


def run_objectives(settings: RunSettings, executor: Any, table: Table | None) -> Objectives | None:
    """Pareto mode's objectives: a table's columns, or for trained candidates the validation
    accuracy and the costs counted on the built model (the training executor's `cost_of`)."""
    if not settings.objectives:
        return None
    if settings.executor == "train":
        trainer = trainer_of(executor)
        return Objectives.trained(settings.objectives, trainer if callable(getattr(trainer, "cost_of", None)) else None)
    assert table is not None, "preflight checks that a tabular Pareto run has a table"
    return Objectives.of(table, settings.objectives)


def initial_state(settings: RunSettings) -> dict:
    return {"round": 0, "mode": "initial", "next_check": settings.warmup, "best_at_check": None}


def build_record(ctx: RunContext, state: dict) -> dict:
    s = ctx.settings
    ledger = ctx.evaluator.ledger
    evs = ctx.evaluator.history
    best = ctx.evaluator.best()
    totals: dict[str, float] = {}
    for u in (state.get("tokens") or {}).values():
        for k, v in u.items():
            totals[k] = round(totals.get(k, 0) + v, 6)
    table = getattr(ctx.evaluator.executor, "table", None)
    flip = table is not None and s.target in table.lower_is_better  # show the user's own numbers
    evaluations = [_user_numbers(e.to_dict(), flip) for e in evs]
    if ctx.objectives is not None:  # the evaluated accuracy and, trained, the candidate's counted costs
        for e, ev in zip(evaluations, evs):
            if ev.valid is not None and math.isfinite(ev.valid):
                e["objectives"] = ctx.objectives.user(ctx.objectives.values(ctx.space.from_string(e["arch"]), ev.valid, ev.cost))
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
        "data_fed_to_analyst": {
            "source_task": s.source,
            "source": ctx.source.describe() if ctx.source is not None else None,
            "source_cells": (
                f"{ctx.source.n_known(s.source)} cells of {s.source} (validation only), top {s.top_n} "
                f"for statistics, top {s.show_n} as layer lists"
            ) if ctx.source is not None and s.source else None,
            "target_data": f"only this run's own evaluations ({len(ctx.evaluator.results())} cells, through the executor)",
            "memory": [r["run_id"] for r in state.get("recalled", [])],
        },
        "evaluations": evaluations,
        "used": ctx.evaluator.used,  # unique architectures (a candidate's rungs count once)
        "best": _user_numbers({"arch": best.arch, "valid": best.valid, "test": best.test}, flip) if best else None,
        "direction": "min" if flip else "max",
        "evaluable": int(table.n_known(s.target)) if table is not None else None,
        "limits": dict(s.limits),
        "objectives": list(s.objectives),
        "front": _front(ctx, evaluations),
        "defaults": dict(s.defaults),
        "principles_history": ledger.journal(s.run_id, "principles"),
        "principles": state.get("principles", []),
        "filters": ledger.journal(s.run_id, "filter"),
        "events": ledger.journal(s.run_id, "event"),
        "tokens": {"per_node": state.get("tokens", {}), "total": totals,
                   **roles.usage_summary(ledger.journal(s.run_id, "llm_usage"))},
        "llm_roles": _llm_roles(ctx),
        "llm_switches": [e for e in ledger.journal(s.run_id, "event") if e.get("event") == "llm_switch"],
        "recalled": state.get("recalled", []),
        "remembered": state.get("remembered", []),
        "remembered_data_tasks": state.get("remembered_data_tasks", []),
        "stopped": state.get("stopped") or ("budget" if ctx.evaluator.used >= s.budget else "unknown"),
        "failed": [{"seq": e.seq, "arch": e.arch, "reason": e.reason, "fidelity": e.fidelity}
                   for e in ctx.evaluator.failed()],
        "training": _training_record(ctx),
    }


def _training_record(ctx: RunContext) -> dict | None:
    """How candidates were trained (a training run only): the builder and its options, the recipe
    and its hash, the data set with its split and fingerprint, the fidelity schedule, and the
    best architecture's test accuracy (the search saw only validation accuracy)."""
    trainer = trainer_of(ctx.evaluator.executor)
    if trainer is None:
        return None
    s = ctx.settings
    best = ctx.evaluator.best()
    return {
        **trainer.record(),
        "dataset": s.dataset,
        "fidelity": {"successive_halving": s.fidelity, "rungs": s.rungs(), "eta": s.eta} if s.fidelity
        else {"successive_halving": False, "epochs": trainer.recipe.epochs},
        "count_failed": s.count_failed,
        "final": None if best is None else {"arch": best.arch, "valid": best.valid, "test": best.test,
                                            "epochs": best.fidelity},
    }


def _llm_roles(ctx: RunContext) -> dict[str, str]:
    """Each role's backend chain, as run."""
    if ctx.roles() is not None:
        return ctx.roles().describe()
    s = ctx.settings
    return {r: p.label for r, p in roles.resolve(s.llm, s.llm_config, timeout=s.llm_timeout, retries=s.llm_retries).items()}


def _user_numbers(entry: dict, flip: bool) -> dict:
    """An evaluation with a lower-is-better target's values un-negated (see Table.lower_is_better)."""
    if flip:
        entry = {**entry, "valid": None if entry.get("valid") is None else -entry["valid"],
                 "test": None if entry.get("test") is None else -entry["test"]}
    return entry


def _front(ctx: RunContext, evaluations: list[dict]) -> list[dict]:
    """Pareto mode: the evaluated cells no other evaluated cell dominates, best first objective first."""
    if ctx.objectives is None:
        return []
    from archlore.tools.pareto import front_of

    ok = list({e["arch"]: e for e in evaluations if e.get("objectives")}.values())  # a cell's last rung
    archs = [ctx.space.from_string(e["arch"]) for e in ok]
    # the front over the recorded vectors (user numbers, turned back into values to maximise)
    primary = [e["objectives"][ctx.objectives.names[0]] for e in ok]
    if ctx.objectives.direction(ctx.objectives.names[0]) == "min":
        primary = [-v for v in primary]
    costs = [{n: e["objectives"][n] for n in ctx.objectives.names[1:] if ctx.objectives.is_cost(n)} for e in ok]
    return [{"arch": ok[i]["arch"], "seq": ok[i]["seq"], **ok[i]["objectives"]}
            for i in front_of(ctx.objectives, archs, primary, costs)]


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
    prune: Callable[[], None] | None = None,
    answer: Any = None,
) -> dict:
    """Run (or, with `resume`, continue) the graph and return the run record.

    `prune` is called after every step (run_persistent passes `checkpoint_pruner`). A run that
    stops at its approval step (settings.approve) returns a record whose `waiting` holds what it
    asks; `resume` with `answer` continues it with that answer (nodes.approve reads it).
    """
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
        if resume and snapshot.values and not snapshot.next and not snapshot.tasks:
            state = snapshot.values  # already finished: rebuild the record
        else:
            # a kill between a node's saved writes and the next checkpoint leaves next=() with the
            # node's task (and its writes) pending: continuing from None applies them and goes on
            # durability="sync": each step's checkpoint is on disk before the next step starts,
            # so a kill -9 loses at most the step in flight (whose evaluations the ledger keeps)
            start: Any = None if resume and snapshot.values else initial_state(settings)
            if answer is not None and snapshot.interrupts:
                from langgraph.types import Command

                start = Command(resume=answer)
            for _ in graph.stream(
                start, config, context=ctx,
                durability="sync", stream_mode="updates",
            ):
                if prune is not None:
                    # the saver writes from LangGraph's threads on the same connection: prune under its lock
                    with getattr(checkpointer, "lock", None) or nullcontext():
                        prune()
            snapshot = graph.get_state(config)
            state = snapshot.values
        record = build_record(ctx, state)
        if snapshot.interrupts:
            record["waiting"] = snapshot.interrupts[0].value
        return record


KEEP_CHECKPOINTS = 4


def checkpoint_pruner(conn: sqlite3.Connection, thread_id: str, keep: int = KEEP_CHECKPOINTS) -> Callable[[], None]:
    """Drop all but the newest `keep` checkpoints of a run after each step.

    Resume needs only the newest checkpoint (and its pending writes); the run's history is in the
    ledger. So checkpoints.db stays a few hundred kB however long the run is. Checkpoint ids are
    time-ordered (uuid6), so "newest" is the largest id.
    """

    def prune() -> None:
        with conn:
            row = conn.execute(
                "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
                "ORDER BY checkpoint_id DESC LIMIT 1 OFFSET ?", (thread_id, keep - 1),
            ).fetchone()
            if row is None:
                return
            for table in ("writes", "checkpoints"):
                conn.execute(f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_id < ?", (thread_id, row[0]))

    return prune


@contextmanager
def run_lock(run_dir: Path, run_id: str) -> Iterator[None]:
    """Hold the run's lock for the block; a second process is refused at once, with a clear message.

    An OS file lock (flock): a process killed with -9 releases it, so no stale lock is left behind.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(run_dir / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunLocked(
            f"run {run_id!r} is in use by another archlore process (it holds {run_dir / LOCK_NAME}); "
            "wait for it to finish or stop it, then retry"
        ) from None
    try:
        yield
    finally:
        lock.release()


def load_settings(run_dir: Path) -> RunSettings:
    path = run_dir / "settings.json"
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        return RunSettings.from_json(raw)
    except ArchloreError as exc:
        raise ConfigError(f"{path} is damaged: {exc}") from None
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path} is damaged or unreadable ({type(exc).__name__}: {str(exc)[:120]}); "
            "restore it from record.json's 'settings' or start a new run"
        ) from None


def open_checkpoints(path: Path) -> sqlite3.Connection:
    """The checkpoint database, checked to be SQLite before LangGraph touches it."""
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise DataError(
            f"{path} is not a usable checkpoint database ({exc}); the run's evaluations are safe in "
            f"{path.parent / 'ledger.db'}: move {path.name} aside and --resume to continue from them "
            "(the adaptation rounds then restart)"
        ) from None
    return conn


def write_record(run_dir: Path, record: dict) -> Path:
    """Write record.json atomically; the previous one is kept as record.prev.json.

    A record is never replaced by one with fewer evaluations: that can only come from a damaged
    or replaced ledger, and the old record may be the only copy of those evaluations.
    """
    path = run_dir / "record.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            old_used = len(old.get("evaluations", [])) if isinstance(old, dict) else 0
        except (OSError, ValueError):
            old_used = 0
        if old_used > len(record["evaluations"]):
            raise DataError(
                f"{path} lists {old_used} evaluations but the run now has {len(record['evaluations'])}: "
                "kept the old record unchanged; ledger.db was damaged or replaced"
            )
        os.replace(path, run_dir / "record.prev.json")
    tmp = run_dir / "record.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)
    return path


def run_persistent(
    settings: RunSettings,
    *,
    root: str | Path | None = None,
    resume: bool = False,
    on_event: Callable[[dict], None] | None = None,
    answer: Any = None,
    cluster: str | None = None,
) -> tuple[dict, Path]:
    """A run with its settings, ledger, checkpoints and record under `root/<run_id>/`.

    Everything that can be checked is checked before the run's folder is made. If the run still
    fails before its first evaluation, exactly the files this call created are removed (and the
    folder, when this call made it and it is empty), so the same command works once the cause
    is fixed; nothing else is ever deleted.
    """
    from langgraph.checkpoint.sqlite import SqliteSaver

    check_run_id(settings.run_id)
    root_dir = runs_dir(root)
    run_dir = root_dir / settings.run_id
    made_dir = False
    table: Table | None = None
    if resume:
        if not (run_dir / "settings.json").is_file():
            raise ConfigError(f"no run {settings.run_id!r} under {root_dir}: check the id or pass --runs-dir")
    else:
        if (run_dir / "settings.json").exists():
            raise ConfigError(f"run {settings.run_id!r} already exists in {root_dir}; pass --resume {settings.run_id} to continue it")
        _, table = preflight(settings)  # bad data, tasks or budget: fail before anything is created
        if root_dir.exists() and not root_dir.is_dir():
            raise ConfigError(f"--runs-dir {root_dir} is a file, not a folder: pass a folder for the runs")
        try:
            root_dir.mkdir(parents=True, exist_ok=True)
            run_dir.mkdir()
            made_dir = True
        except FileExistsError:
            if not run_dir.is_dir():
                raise ConfigError(f"{run_dir} exists and is not a folder: pass another --run-id or --runs-dir") from None
        except OSError as exc:
            raise ConfigError(f"cannot create the run folder {run_dir}: {exc.strerror or exc}; pass another --runs-dir") from None
    before: set[str] | None = None  # the run files present when this call took the lock
    lock_existed = (run_dir / LOCK_NAME).exists()
    started = False
    try:
        with run_lock(run_dir, settings.run_id):
            # under the lock nobody else writes here: what appears from now on is this call's
            before = {f for f in RUN_FILES if (run_dir / f).exists()} - (set() if lock_existed else {LOCK_NAME})
            if resume:
                settings = load_settings(run_dir)
                settings.cluster = cluster or settings.cluster  # the cluster may change between machines
            elif (run_dir / "settings.json").exists():  # another process made it since the check
                raise ConfigError(f"run {settings.run_id!r} already exists in {root_dir}; pass --resume {settings.run_id} to continue it")
            else:
                settings.created = settings.created or time.strftime("%Y-%m-%dT%H:%M:%S")
                settings.save(run_dir / "settings.json")
            with ExitStack() as stack:
                if resume and not (run_dir / "ledger.db").is_file():
                    raise DataError(
                        f"{run_dir / 'ledger.db'} is missing: this run's evaluations are gone from its folder; "
                        "nothing was changed (restore ledger.db, or read the record with `archlore show`)"
                    )
                try:
                    ledger = Ledger(run_dir / "ledger.db")
                except ArchloreError as exc:
                    raise DataError(f"the run's ledger is damaged: {exc}".replace("; pass another path", "")) from None
                stack.callback(ledger.close)
                done = ledger.evaluations(settings.run_id)
                started = bool(done)
                if resume:
                    _check_ledger_against_record(run_dir, len(done))
                conn = open_checkpoints(run_dir / "checkpoints.db")
                stack.callback(conn.close)
                memory = open_memory(settings)
                if memory is not None:
                    stack.callback(memory.close)
                saver = SqliteSaver(conn)
                saver.setup()
                record = execute(
                    settings, ledger=ledger, checkpointer=saver, memory=memory, table=table,
                    on_event=on_event, resume=resume, prune=checkpoint_pruner(conn, settings.run_id), answer=answer,
                )
                started = True
                write_record(run_dir, record)
    except BaseException:  # a bug or Ctrl-C before the first evaluation leaves nothing behind either
        if not resume and not started and not _has_evaluations(run_dir / "ledger.db"):
            _remove_created(run_dir, before, made_dir)
        raise
    return record, run_dir


def _check_ledger_against_record(run_dir: Path, in_ledger: int) -> None:
    path = run_dir / "record.json"
    try:
        listed = len(json.loads(path.read_text()).get("evaluations", []))
    except (OSError, ValueError, AttributeError):
        return
    if listed > in_ledger:
        raise DataError(
            f"the ledger of this run holds {in_ledger} evaluations but {path} lists {listed}: ledger.db "
            "was damaged or replaced; nothing was changed (restore ledger.db, or read the record with "
            "`archlore show`)"
        )


def _has_evaluations(path: Path) -> bool:
    """Whether a ledger file holds any evaluation (True when it cannot be read: never delete then)."""
    if not path.exists():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] > 0
    except sqlite3.Error as exc:
        return "no such table" not in str(exc)


def _remove_created(run_dir: Path, before: set[str] | None, made_dir: bool) -> None:
    """Remove the run files this call created (never anything else), then the folder if it made it.

    `before=None` means the call never held the run's lock: then no file is known to be its own,
    and only an empty folder it made is removed.
    """
    for name in RUN_FILES if before is not None else ():
        if name not in before:
            try:
                (run_dir / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("could not remove %s: %s", run_dir / name, exc)
    if made_dir:
        try:
            run_dir.rmdir()  # only if empty: a file someone else put there stays, and so does the folder
        except OSError:
            pass
