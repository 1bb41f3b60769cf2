"""Chat sessions persisted in SQLite, beside the runs they start.

The conversation of a session is one LangGraph checkpointer thread (thread id = session id) in
`RUNS_DIR/.sessions.db`; a small table in the same file lists the sessions, their defaults and
the runs each started, with the run's last known status. Runs themselves are ordinary runs in
`RUNS_DIR/<run_id>/` (the same record, so `archlore show` works on them). A killed chat process
leaves a run marked `running`: reopening the session resumes it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archlore.tools.errors import ConfigError, DataError

from .runner import check_run_id, runs_dir

SESSIONS_DB = ".sessions.db"  # a leading dot: never a run id, so never a run's folder

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chat_sessions (
    id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL, title TEXT NOT NULL DEFAULT '',
    defaults TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS chat_runs (
    session_id TEXT NOT NULL, run_id TEXT NOT NULL, started REAL NOT NULL, status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '', PRIMARY KEY (session_id, run_id)
);
"""

STATUSES = ("running", "waiting", "paused", "done", "failed")


@dataclass(frozen=True)
class SessionRun:
    run_id: str
    started: float
    status: str  # running | waiting (for approval) | paused | done | failed
    detail: str = ""


@dataclass(frozen=True)
class Session:
    id: str
    created: float
    updated: float
    title: str
    defaults: dict[str, Any]
    runs: tuple[SessionRun, ...] = ()


def new_session_id() -> str:
    return time.strftime("chat-%Y%m%d-%H%M%S")


class SessionStore:
    """The sessions of one runs folder, and the LangGraph checkpointer that holds their conversations."""

    def __init__(self, root: str | Path | None = None) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        self.root = runs_dir(root)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"--runs-dir {self.root} is a file, not a folder: pass a folder for the runs")
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / SESSIONS_DB
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            # the checkpointer gets its own connection: it serialises its own use of it
            self._ckpt = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self.checkpointer = SqliteSaver(self._ckpt)
            self.checkpointer.setup()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path} is not a usable sessions database ({exc}); move it aside to start afresh") from None

    def close(self) -> None:
        self._db.close()
        self._ckpt.close()

    def __enter__(self) -> SessionStore:  # noqa: PYI034 - a plain class, never subclassed
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, session_id: str | None = None, *, defaults: dict[str, Any] | None = None, create: bool = True) -> Session:
        """The session `session_id` (made when it does not exist and `create`), or a new one."""
        try:
            sid = check_run_id(session_id) if session_id else new_session_id()
        except ConfigError:
            raise ConfigError(f"session id {session_id!r} is not allowed: use 1 to 100 letters, digits, '.', '_' "
                              "or '-', starting with a letter or digit") from None
        found = self.get(sid)
        if found is not None:
            return found
        if not create:
            raise ConfigError(f"no chat session {sid!r} in {self.path}; `archlore sessions` lists them")
        now = time.time()
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO chat_sessions (id, created, updated, title, defaults) VALUES (?,?,?,?,?)",
                (sid, now, now, "", json.dumps(defaults or {})),
            )
        found = self.get(sid)
        assert found is not None
        return found

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, created, updated, title, defaults FROM chat_sessions WHERE id = ?", (session_id,)
            ).fetchone()
        if row is None:
            return None
        return Session(row[0], row[1], row[2], row[3], json.loads(row[4] or "{}"), tuple(self.runs(session_id)))

    def list(self) -> list[Session]:
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM chat_sessions ORDER BY updated DESC")]
        return [s for s in (self.get(i) for i in ids) if s is not None]

    def touch(self, session_id: str, title: str | None = None) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE chat_sessions SET updated = ? WHERE id = ?", (time.time(), session_id))
            if title:
                self._db.execute("UPDATE chat_sessions SET title = ? WHERE id = ? AND title = ''", (title[:80], session_id))

    def add_run(self, session_id: str, run_id: str, status: str = "running") -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO chat_runs (session_id, run_id, started, status, detail) VALUES (?,?,?,?,'')",
                (session_id, run_id, time.time(), status),
            )

    def set_status(self, session_id: str, run_id: str, status: str, detail: str = "") -> None:
        assert status in STATUSES, status
        with self._lock, self._db:
            self._db.execute(
                "UPDATE chat_runs SET status = ?, detail = ? WHERE session_id = ? AND run_id = ?",
                (status, detail[:500], session_id, run_id),
            )

    def runs(self, session_id: str) -> list[SessionRun]:
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, started, status, detail FROM chat_runs WHERE session_id = ? ORDER BY started",
                (session_id,),
            ).fetchall()
        return [SessionRun(*r) for r in rows]

    def messages(self, session_id: str) -> list[Any]:
        """The session's conversation (LangChain messages), from its newest checkpoint."""
        got = self.checkpointer.get_tuple({"configurable": {"thread_id": session_id}})
        if got is None:
            return []
        return list(got.checkpoint.get("channel_values", {}).get("messages", []))
