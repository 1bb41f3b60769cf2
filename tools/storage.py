"""Run storage by URL, as Optuna's storages: the ledger and each run's metadata in one database.

- ``sqlite:///runs.db`` (relative) or ``sqlite:////abs/runs.db``: one SQLite file for a team on one
  machine (or a shared disk that honours file locks);
- ``postgresql://user:pass@host:port/db``: a Postgres server that a team already runs; needs
  ``pip install 'archlore[postgres]'`` (psycopg 3).

A `RunStore` holds the `Ledger` (evaluations and journals of every run), a ``runs`` table (each
run's settings, record and status) and the run lock. The ledger's own SQL is the same on both
databases: on Postgres it runs through `_PgConnection`, a small adapter with the sqlite3 methods
the ledger uses (placeholders ``?`` -> ``%s``, ``REAL`` -> ``DOUBLE PRECISION``, one transaction
per ``with`` block). Two runs writing to one server never lose a write: every write is its own
transaction and rows are keyed by run id; a run is written by one process at a time (its lock).

The run lock: a file lock beside a SQLite file, a session advisory lock on Postgres. Both are
released by the operating system or the server when the holder dies, even by kill -9.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import ArchloreError, ConfigError, DataError
from .ledger import Ledger

log = logging.getLogger(__name__)

_RUNS_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    record TEXT,
    status TEXT NOT NULL,
    host TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
)
"""


class RunLocked(ArchloreError):
    """Another process is running or resuming this run."""


def redact(url: str) -> str:
    """`url` without its password, for messages and listings."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def parse_url(url: str) -> tuple[str, str]:
    """(kind, target): ("sqlite", path) or ("postgresql", url); a ConfigError names the forms."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path:
            raise ConfigError(f"storage {url!r} names no file: use sqlite:///runs.db or sqlite:////abs/path/runs.db")
        return "sqlite", path
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return "postgresql", re.sub(r"^postgres(ql)?(\+psycopg)?://", "postgresql://", url)
    raise ConfigError(
        f"unknown storage {redact(url)!r}: use sqlite:///PATH.db or postgresql://USER:PASS@HOST:PORT/DB"
    )


# ------------------------------------------------------------------------------- Postgres adapter


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            "a postgresql:// storage needs psycopg: pip install 'archlore[postgres]'"
        ) from None
    return psycopg


def _pg_sql(sql: str) -> str:
    """The ledger's SQLite dialect in Postgres's: placeholders, float width, serial keys."""
    sql = sql.replace("?", "%s")
    sql = re.sub(r"INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY", sql)
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)  # Postgres REAL is 4 bytes: metrics would round
    return sql


class _PgConnection:
    """The part of `sqlite3.Connection` the ledger uses, over one psycopg connection.

    Autocommit outside ``with``; inside it, one transaction (committed on exit, rolled back on an
    error), as sqlite3's connection context manager does.
    """

    def __init__(self, url: str) -> None:
        psycopg = _psycopg()
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"cannot reach the Postgres storage {redact(url)} ({first}); check the URL and that the server runs") from None
        self._tx: list[Any] = []
        self._lock = threading.RLock()

    def execute(self, sql: str, params: tuple | list = ()) -> Any:
        if sql.lstrip().upper().startswith("PRAGMA"):
            return _NoRows()
        return self._conn.execute(_pg_sql(sql), params)

    def executemany(self, sql: str, rows: list) -> None:
        if rows:
            with self._conn.cursor() as cur:
                cur.executemany(_pg_sql(sql), rows)

    def executescript(self, script: str) -> None:
        # concurrent CREATE TABLE IF NOT EXISTS can collide in Postgres's catalog: serialise them
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(7254105)")
            for stmt in script.split(";"):
                if stmt.strip() and not stmt.strip().upper().startswith("PRAGMA"):
                    self._conn.execute(_pg_sql(stmt))

    def __enter__(self) -> _PgConnection:
        self._lock.acquire()
        tx = self._conn.transaction()
        tx.__enter__()
        self._tx.append(tx)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._tx.pop().__exit__(*exc)
        finally:
            self._lock.release()

    def close(self) -> None:
        self._conn.close()

    @property
    def raw(self) -> Any:
        return self._conn


class _NoRows:
    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list:
        return []


def _ledger_on(conn: Any, label: str) -> Ledger:
    """A `Ledger` over an open connection (SQLite or the Postgres adapter)."""
    from . import ledger as ledger_mod

    on = getattr(Ledger, "on_connection", None)
    if on is not None:
        return on(conn, label)
    led = Ledger.__new__(Ledger)  # the ledger's own SQL and records, on another connection
    led.path = label
    led._lock = threading.Lock()
    led._db = conn
    conn.executescript(ledger_mod._SCHEMA)
    return led


# ------------------------------------------------------------------------------------- run store


@dataclass(frozen=True)
class RunInfo:
    """One run as `archlore runs` lists it."""

    run_id: str
    status: str  # running | finished | failed
    host: str
    created: float
    updated: float
    used: int
    budget: int | None
    best: float | None
    space: str
    target: str
    executor: str


class RunStore:
    """The ledger, run metadata and run locks of every run, in the database at `url`."""

    def __init__(self, url: str) -> None:
        self.kind, target = parse_url(url)
        self.url = url
        self.location = redact(url)
        self._lock = threading.Lock()
        if self.kind == "sqlite":
            path = Path(target)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the folder of {path}: {exc.strerror or exc}") from None
            self.path: Path | None = path
            try:
                self._db: Any = sqlite3.connect(path, check_same_thread=False, timeout=30)
                self._db.execute("PRAGMA journal_mode=WAL")
                self.ledger = _ledger_on(self._db, str(path))
                self._db.executescript(_RUNS_SCHEMA)
            except sqlite3.DatabaseError as exc:
                raise DataError(f"storage {path} is not a usable SQLite file ({exc}); pass another --storage") from None
        else:
            self.path = None
            self._db = _PgConnection(target)
            self.ledger = _ledger_on(self._db, self.location)
            self._db.executescript(_RUNS_SCHEMA)
        self._pg_locks: dict[str, Any] = {}

    def close(self) -> None:
        for conn in self._pg_locks.values():
            conn.close()
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ run metadata

    def create_run(self, run_id: str, settings: dict) -> None:
        """Add a run; a ConfigError if the id is taken (the message says to pass --resume)."""
        now = time.time()
        try:
            with self._lock, self._db:
                if self._db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                    raise ConfigError(f"run {run_id!r} already exists in {self.location}; pass --resume {run_id} to continue it")
                self._db.execute(
                    "INSERT INTO runs VALUES (?,?,?,?,?,?,?)",
                    (run_id, json.dumps(settings), None, "running", socket.gethostname(), now, now),
                )
        except ArchloreError:
            raise
        except Exception as exc:  # a concurrent create of the same id lost the race
            if "unique" in str(exc).lower() or "duplicate" in str(exc).lower():
                raise ConfigError(f"run {run_id!r} already exists in {self.location}; pass --resume {run_id} to continue it") from None
            raise

    def settings(self, run_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT settings FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_status(self, run_id: str, status: str) -> None:
        with self._lock, self._db:
            self._db.execute(
                "UPDATE runs SET status = ?, host = ?, updated = ? WHERE run_id = ?",
                (status, socket.gethostname(), time.time(), run_id),
            )

    def save_record(self, run_id: str, record: dict) -> None:
        """Store the run's record; never replaced by one with fewer evaluations (as write_record)."""
        with self._lock, self._db:
            row = self._db.execute("SELECT record FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise DataError(f"run {run_id!r} is not in {self.location}")
            old = len(json.loads(row[0]).get("evaluations", [])) if row[0] else 0
            if old > len(record.get("evaluations", [])):
                raise DataError(
                    f"the stored record of {run_id!r} lists {old} evaluations but the run now has "
                    f"{len(record['evaluations'])}: kept the old record; the ledger was damaged or replaced"
                )
            self._db.execute(
                "UPDATE runs SET record = ?, status = ?, updated = ? WHERE run_id = ?",
                (json.dumps(record), "finished", time.time(), run_id),
            )

    def record(self, run_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def delete_run(self, run_id: str) -> bool:
        """Remove a run that has no evaluation (a failed start); False, and nothing removed, otherwise."""
        with self._lock, self._db:
            if self._db.execute("SELECT 1 FROM evaluations WHERE run_id = ? LIMIT 1", (run_id,)).fetchone():
                return False
            self._db.execute("DELETE FROM journal WHERE run_id = ?", (run_id,))
            self._db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        return True

    def runs(self) -> list[RunInfo]:
        """Every run, newest first, with its evaluations counted in the ledger (not the record)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT r.run_id, r.settings, r.status, r.host, r.created, r.updated, "
                "(SELECT COUNT(*) FROM evaluations e WHERE e.run_id = r.run_id), "
                "(SELECT MAX(e.valid) FROM evaluations e WHERE e.run_id = r.run_id) "
                "FROM runs r ORDER BY r.created DESC"
            ).fetchall()
        out = []
        for run_id, settings, status, host, created, updated, used, best in rows:
            s = json.loads(settings)
            out.append(RunInfo(run_id, status, host, created, updated, int(used), s.get("budget"),
                               None if best is None else float(best), str(s.get("space", "")),
                               str(s.get("target", "")), str(s.get("executor", ""))))
        return out

    # ------------------------------------------------------------------ the run lock

    @contextmanager
    def lock(self, run_id: str) -> Iterator[None]:
        """Hold `run_id`'s lock for the block; a second holder is refused at once (RunLocked)."""
        busy = RunLocked(
            f"run {run_id!r} is in use by another archlore process (storage {self.location}); "
            "wait for it to finish or stop it, then retry"
        )
        if self.kind == "sqlite":
            from filelock import FileLock, Timeout

            assert self.path is not None
            folder = self.path.parent / f"{self.path.name}.locks"
            folder.mkdir(exist_ok=True)
            lock = FileLock(str(folder / f"{run_id}.lock"), timeout=0)
            try:
                lock.acquire()
            except Timeout:
                raise busy from None
            try:
                yield
            finally:
                lock.release()
            return
        # a session lock on a connection of its own: the server drops it when the holder dies
        conn = _PgConnection(parse_url(self.url)[1])
        try:
            (got,) = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(?, 0))",
                                  (f"archlore-run:{run_id}",)).fetchone()
            if not got:
                raise busy
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtextextended(?, 0))", (f"archlore-run:{run_id}",))
        finally:
            conn.close()


def open_store(url: str) -> RunStore:
    """The `RunStore` at `url` (see the module docstring for the forms)."""
    return RunStore(url)
