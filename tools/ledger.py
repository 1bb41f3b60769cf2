"""The ledger: every evaluation of every run, as frozen records, in SQLite.

`Ledger(None)` keeps it in memory; `Ledger("runs.db")` (or `sqlite:///runs.db`) persists it.
All shared state of a search lives here, so a killed run resumes from it without evaluating
a finished candidate again.

Beside the evaluations, the ledger keeps a run's *journal*: what each node of a round decided
(principles, filters, events). It lives here rather than in the graph's state so that a LangGraph
checkpoint stays the same size however long the run is. A node writes its whole journal for a
round in one transaction that replaces what an earlier, killed attempt of the same node wrote, so
a node re-run after a kill never duplicates an entry.

Each evaluation has a `status` ("ok", or "failed" with a `reason`: out of memory, NaN loss, a
builder error ...) and a `fidelity` (the epochs a trained candidate had; 0 when it does not
apply, as for table look-ups). One architecture may have several evaluations at different
fidelities (successive halving), so a row is keyed by (run, arch, fidelity). A failed
evaluation's `valid` is NaN in memory (stored as 0.0, since the column is NOT NULL).

Ledgers written before status and fidelity existed are migrated in place when opened: the three
columns are added (ALTER TABLE ADD COLUMN, defaults "ok", "", 0), and the old one-row-per-arch
key is widened to (run, arch, fidelity) by copying the table in one transaction; old runs resume
as before.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ArchloreError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    arch TEXT NOT NULL,
    valid REAL NOT NULL,
    test REAL,
    cost TEXT NOT NULL,
    wall_time REAL NOT NULL,
    proposed_by TEXT NOT NULL,
    round INTEGER NOT NULL,
    created REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'ok',
    reason TEXT NOT NULL DEFAULT '',
    fidelity INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, seq),
    UNIQUE (run_id, arch, fidelity)
);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_run ON journal (run_id, round, node);
"""
_COLUMNS = ("run_id", "seq", "arch", "valid", "test", "cost", "wall_time", "proposed_by", "round", "created",
            "status", "reason", "fidelity")
_ADDED = {"status": "TEXT NOT NULL DEFAULT 'ok'", "reason": "TEXT NOT NULL DEFAULT ''",
          "fidelity": "INTEGER NOT NULL DEFAULT 0"}
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM evaluations"


def migrate(db: object) -> None:
    """Bring an older evaluations table up to date in place (see the module docstring).

    Column checks use portable SQL (any DB-API connection); the key rebuild only ever applies
    to SQLite files, the only place older ledgers exist.
    """
    cur = db.execute("SELECT * FROM evaluations LIMIT 0")  # type: ignore[attr-defined]
    have = {d[0] for d in cur.description}
    for name, decl in _ADDED.items():
        if name not in have:
            try:
                with db:  # type: ignore[attr-defined]
                    db.execute(f"ALTER TABLE evaluations ADD COLUMN {name} {decl}")  # type: ignore[attr-defined]
            except Exception as exc:  # another process migrated it first
                if "duplicate column" not in str(exc).lower() and "already exists" not in str(exc).lower():
                    raise
    if not isinstance(db, sqlite3.Connection):
        return
    (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='evaluations'").fetchone()
    if "UNIQUE (run_id, arch)" in " ".join(sql.split()):
        new_table = _SCHEMA.split(";")[0].replace("IF NOT EXISTS evaluations", "evaluations_migrated")
        cols = ", ".join(_COLUMNS)
        db.executescript(
            f"BEGIN IMMEDIATE; {new_table}; INSERT INTO evaluations_migrated ({cols}) SELECT {cols} FROM evaluations; "
            "DROP TABLE evaluations; ALTER TABLE evaluations_migrated RENAME TO evaluations; COMMIT;"
        )


@dataclass(frozen=True)
class Evaluation:
    """One finished evaluation; never changes once written."""

    run_id: str
    seq: int
    arch: str
    valid: float
    test: float | None
    cost: dict[str, float] = field(default_factory=dict)
    wall_time: float = 0.0
    proposed_by: str = ""
    round: int = 0
    created: float = 0.0
    status: str = "ok"
    reason: str = ""
    fidelity: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        extra: dict = {"status": self.status, "fidelity": self.fidelity}
        if self.reason:
            extra["reason"] = self.reason
        return {
            "seq": self.seq,
            "arch": self.arch,
            "valid": self.valid if self.ok else None,
            "test": self.test,
            "cost": dict(self.cost),
            "wall_time": round(self.wall_time, 4),
            "round": self.round,
            "proposed_by": self.proposed_by,
            **extra,
        }


class Ledger:
    """SQLite-backed store of evaluations; safe to share between threads."""

    def __init__(self, path: str | Path | None = None) -> None:
        target = str(path) if path else ":memory:"
        target = target.removeprefix("sqlite:///")
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        self.path = target
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(target, check_same_thread=False, timeout=30)
            if target != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            migrate(self._db)
        except sqlite3.DatabaseError as exc:
            raise ArchloreError(f"ledger {target} is not a usable SQLite file ({exc}); pass another path") from None

    @classmethod
    def on_connection(cls, conn: object, label: str) -> Ledger:
        """A ledger over an open DB-API connection (the run store's SQLite or Postgres adapter)."""
        led = cls.__new__(cls)
        led.path = label
        led._lock = threading.Lock()
        led._db = conn  # type: ignore[assignment]
        conn.executescript(_SCHEMA)  # type: ignore[attr-defined]
        migrate(conn)
        return led

    def close(self) -> None:
        self._db.close()

    def record(
        self,
        run_id: str,
        arch: str,
        valid: float,
        test: float | None,
        *,
        cost: dict[str, float] | None = None,
        wall_time: float = 0.0,
        proposed_by: str = "",
        round: int = 0,
        status: str = "ok",
        reason: str = "",
        fidelity: int = 0,
    ) -> Evaluation:
        if status not in ("ok", "failed"):
            raise ValueError(f"status must be 'ok' or 'failed', got {status!r}")
        failed = status == "failed"
        with self._lock, self._db:
            (seq,) = self._db.execute(
                "SELECT COUNT(*) FROM evaluations WHERE run_id = ?", (run_id,)
            ).fetchone()
            ev = Evaluation(
                run_id, seq, arch, math.nan if failed else valid, None if failed else test, dict(cost or {}),
                wall_time, proposed_by, round, time.time(), status, reason, int(fidelity),
            )
            self._db.execute(
                f"INSERT INTO evaluations ({', '.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})",
                (run_id, seq, arch, 0.0 if failed else valid, ev.test, json.dumps(ev.cost), wall_time, proposed_by,
                 round, ev.created, status, reason, int(fidelity)),
            )
        return ev

    def write_journal(self, run_id: str, round: int, node: str, entries: dict[str, list[dict]]) -> None:
        """Replace what `node` recorded for `round` with `entries` (kind -> payloads, in order)."""
        now = time.time()
        rows = [
            (run_id, round, node, kind, json.dumps(p, default=str), now)
            for kind, payloads in entries.items() for p in payloads
        ]
        with self._lock, self._db:
            self._db.execute("DELETE FROM journal WHERE run_id = ? AND round = ? AND node = ?", (run_id, round, node))
            self._db.executemany(
                "INSERT INTO journal (run_id, round, node, kind, payload, created) VALUES (?,?,?,?,?,?)", rows
            )

    def journal(self, run_id: str, kind: str) -> list[dict]:
        """The payloads of one kind the run's nodes recorded, in the order they were written."""
        with self._lock:
            rows = self._db.execute(
                "SELECT payload FROM journal WHERE run_id = ? AND kind = ? ORDER BY id", (run_id, kind)
            ).fetchall()
        return [json.loads(p) for (p,) in rows]

    def get(self, run_id: str, arch: str) -> Evaluation | None:
        """The architecture's evaluation at the highest fidelity it has."""
        with self._lock:
            row = self._db.execute(
                f"{_SELECT} WHERE run_id = ? AND arch = ? ORDER BY fidelity DESC, seq DESC", (run_id, arch)
            ).fetchone()
        return _to_eval(row) if row else None

    def evaluations(self, run_id: str) -> list[Evaluation]:
        with self._lock:
            rows = self._db.execute(
                f"{_SELECT} WHERE run_id = ? ORDER BY seq", (run_id,)
            ).fetchall()
        return [_to_eval(r) for r in rows]


def _to_eval(row: tuple) -> Evaluation:
    run_id, seq, arch, valid, test, cost, wall_time, proposed_by, rnd, created, status, reason, fidelity = row
    if status != "ok":
        valid, test = math.nan, None
    return Evaluation(run_id, seq, arch, valid, test, json.loads(cost), wall_time, proposed_by, rnd, created,
                      status, reason, int(fidelity))
