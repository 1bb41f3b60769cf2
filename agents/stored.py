"""Runs in shared storage (`--storage sqlite:///team.db` or `postgresql://...`): one database holds
every run's settings, ledger, journal, LangGraph checkpoints and record, so a team shares them and
a run started on one machine is shown or resumed on another.

Without `--storage`, runs keep today's per-run folders (`runner.run_persistent`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from archlore.tools.errors import ArchloreError, ConfigError
from archlore.tools.storage import RunStore, parse_url

from .context import RunSettings
from .runner import (
    KEEP_CHECKPOINTS,
    check_run_id,
    checkpoint_pruner,
    execute,
    open_memory,
    preflight,
)

log = logging.getLogger(__name__)


def open_checkpointer(store: RunStore, run_id: str, stack: ExitStack) -> tuple[Any, Callable[[], None]]:
    """LangGraph's checkpointer on the store's database (SqliteSaver or PostgresSaver) and a pruner
    that keeps the run's newest few checkpoints (resume needs only the newest; history is in the ledger)."""
    if store.kind == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(store.path, check_same_thread=False, timeout=30)
        stack.callback(conn.close)
        saver = SqliteSaver(conn)
        saver.setup()
        return saver, checkpoint_pruner(conn, run_id)
    try:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
    except ImportError:
        raise ConfigError("a postgresql:// storage needs the postgres extra: pip install 'archlore[postgres]'") from None
    url = parse_url(store.url)[1]
    conn = psycopg.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
    stack.callback(conn.close)
    saver = PostgresSaver(conn)
    # two runs starting at once would both run LangGraph's migrations: one at a time. Polled, not
    # a blocking pg_advisory_lock: a migration's CREATE INDEX CONCURRENTLY waits for every open
    # transaction, a blocked lock call included, and Postgres then reports a deadlock
    deadline = time.monotonic() + 300
    while not conn.execute("SELECT pg_try_advisory_lock(7254106) AS ok").fetchone()["ok"]:
        if time.monotonic() > deadline:
            raise ArchloreError("another process has been setting up the checkpoint tables for 5 minutes: try again")
        time.sleep(0.2)
    try:
        saver.setup()
    finally:
        conn.execute("SELECT pg_advisory_unlock(7254106)")
    return saver, _pg_pruner(conn, run_id)


def _pg_pruner(conn: Any, thread_id: str, keep: int = KEEP_CHECKPOINTS) -> Callable[[], None]:
    def prune() -> None:
        row = conn.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = '' "
            "ORDER BY checkpoint_id DESC LIMIT 1 OFFSET %s", (thread_id, keep - 1),
        ).fetchone()
        if row is None:
            return
        with conn.transaction():
            for table in ("checkpoint_writes", "checkpoints"):
                conn.execute(f"DELETE FROM {table} WHERE thread_id = %s AND checkpoint_id < %s",
                             (thread_id, row["checkpoint_id"]))
            # channel values no kept checkpoint refers to
            conn.execute(
                "DELETE FROM checkpoint_blobs b WHERE b.thread_id = %s AND NOT EXISTS ("
                "SELECT 1 FROM checkpoints c WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns "
                "AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)", (thread_id,),
            )

    return prune


def run_stored(
    settings: RunSettings,
    *,
    storage: str,
    resume: bool = False,
    cluster: str | None = None,
    on_event: Callable[[dict], None] | None = None,
    answer: Any = None,
) -> dict:
    """Run (or continue) a run whose state lives in `storage`; returns the run record.

    A start that fails before its first evaluation removes the run again (so the same command
    works once the cause is fixed); a run with evaluations is kept, marked failed or interrupted
    (interrupted: Ctrl-C, or an error whose class sets `interrupts_run`, as the chat's pause).
    A run that stops at its approval step is stored with its record (`waiting` says what it
    asks) and the status ``waiting``; `resume` with `answer` continues it (as `run_persistent`).
    """
    check_run_id(settings.run_id)
    run_id = settings.run_id
    with RunStore(storage) as store:
        table = None
        if resume:
            raw = store.settings(run_id)
            if raw is None:
                raise ConfigError(f"no run {run_id!r} in {store.location}: check the id (archlore runs --storage ... lists them)")
            settings = RunSettings.from_json(raw)
            if cluster is not None:
                settings.cluster = cluster
        else:
            if cluster is not None:
                settings.cluster = cluster
            if store.settings(run_id) is not None:
                raise ConfigError(f"run {run_id!r} already exists in {store.location}; pass --resume {run_id} to continue it")
            _, table = preflight(settings)
        with store.lock(run_id):
            if resume:
                store.set_status(run_id, "running")
            else:
                settings.created = settings.created or time.strftime("%Y-%m-%dT%H:%M:%S")
                store.create_run(run_id, settings.to_json())
            saver = None
            try:
                with ExitStack() as stack:
                    saver, prune = open_checkpointer(store, run_id, stack)
                    memory = open_memory(settings)
                    if memory is not None:
                        stack.callback(memory.close)
                    record = execute(settings, ledger=store.ledger, checkpointer=saver, memory=memory, table=table,
                                     on_event=on_event, resume=resume, prune=prune, answer=answer)
                    store.save_record(run_id, record)
                    if record.get("waiting"):
                        store.set_status(run_id, "waiting")
            except BaseException as exc:
                _after_failure(store, run_id, resume, exc)
                raise
    return record


def _after_failure(store: RunStore, run_id: str, resume: bool, exc: BaseException) -> None:
    try:
        if not resume and store.delete_run(run_id):
            _delete_checkpoints(store, run_id)
            return
        stopped = isinstance(exc, KeyboardInterrupt) or getattr(exc, "interrupts_run", False)
        store.set_status(run_id, "interrupted" if stopped else "failed")
    except Exception as cleanup:  # noqa: BLE001 - never hide the first error behind the cleanup's
        log.warning("could not mark run %s after its failure: %s", run_id, cleanup)


def _delete_checkpoints(store: RunStore, run_id: str) -> None:
    with ExitStack() as stack:
        saver, _ = open_checkpointer(store, run_id, stack)
        saver.delete_thread(run_id)


def update_settings(store: RunStore, run_id: str, **changes: Any) -> bool:
    """Change some of a stored run's settings (what its next resume reads); False if no such run."""
    raw = store.settings(run_id)
    if raw is None:
        return False
    raw.update(changes)
    with store._lock, store._db:
        store._db.execute("UPDATE runs SET settings = ? WHERE run_id = ?", (json.dumps(raw), run_id))
    return True


def stored_record(store: RunStore, run_id: str) -> dict:
    """The run's record; for a run still going (or killed) a partial one built from the ledger."""
    rec = store.record(run_id)
    if rec is not None:
        return rec
    raw = store.settings(run_id)
    if raw is None:
        raise ArchloreError(f"no run {run_id!r} in {store.location}; `archlore runs --storage ...` lists them")
    evs = store.ledger.evaluations(run_id)
    best = max(evs, key=lambda e: e.valid, default=None)
    return {
        "run_id": run_id, "space": raw.get("space"), "target": raw.get("target"), "source": raw.get("source"),
        "llm": raw.get("llm"), "seed": raw.get("seed"), "budget": raw.get("budget"),
        "executor": raw.get("executor"), "strategy": raw.get("strategy"), "settings": raw,
        "evaluations": [e.to_dict() for e in evs], "used": len(evs),
        "best": {"arch": best.arch, "valid": best.valid, "test": best.test} if best else None,
        "principles_history": store.ledger.journal(run_id, "principles"),
        "filters": store.ledger.journal(run_id, "filter"), "events": store.ledger.journal(run_id, "event"),
        "stopped": "unfinished (no record yet: running, or killed; --resume continues it)",
    }
