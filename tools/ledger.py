"""The ledger: every evaluation of every run, as frozen records, in SQLite.

`Ledger(None)` keeps it in memory; `Ledger("runs.db")` (or `sqlite:///runs.db`) persists it.
All shared state of a search lives here, so a killed run resumes from it without evaluating
a finished candidate again.

Beside the evaluations, the ledger keeps a run's *journal*: what each node of a round decided
(principles, filters, events). It lives here rather than in the graph's state so that a LangGraph
checkpoint stays the same size however long the run is. A node writes its whole journal for a
round in one transaction that replaces what an earlier, killed attempt of the same node wrote, so
a node re-run after a kill never duplicates an entry.
"""

from __future__ import annotations

import json
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
    PRIMARY KEY (run_id, seq),
    UNIQUE (run_id, arch)
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

    def to_dict(self) -> dict:
        return {
            "seq": self.seq,
            "arch": self.arch,
            "valid": self.valid,
            "test": self.test,
            "cost": dict(self.cost),
            "wall_time": round(self.wall_time, 4),
            "round": self.round,
            "proposed_by": self.proposed_by,
        }


class Ledger:
    """SQLite-backed store of evaluations; safe to share between threads."""

    def __init__(self, path: str | Path | None = None) -> None:
        target = str(path) if path else ":memory:"
        if target.startswith("sqlite:///"):
            target = target[len("sqlite:///") :]
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        self.path = target
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(target, check_same_thread=False, timeout=30)
            if target != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ArchloreError(f"ledger {target} is not a usable SQLite file ({exc}); pass another path") from None

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
    ) -> Evaluation:
        with self._lock, self._db:
            (seq,) = self._db.execute(
                "SELECT COUNT(*) FROM evaluations WHERE run_id = ?", (run_id,)
            ).fetchone()
            ev = Evaluation(run_id, seq, arch, valid, test, dict(cost or {}), wall_time, proposed_by, round, time.time())
            self._db.execute(
                "INSERT INTO evaluations VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run_id, seq, arch, valid, test, json.dumps(ev.cost), wall_time, proposed_by, round, ev.created),
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
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM evaluations WHERE run_id = ? AND arch = ?", (run_id, arch)
            ).fetchone()
        return _to_eval(row) if row else None

    def evaluations(self, run_id: str) -> list[Evaluation]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM evaluations WHERE run_id = ? ORDER BY seq", (run_id,)
            ).fetchall()
        return [_to_eval(r) for r in rows]


def _to_eval(row: tuple) -> Evaluation:
    run_id, seq, arch, valid, test, cost, wall_time, proposed_by, rnd, created = row
    return Evaluation(run_id, seq, arch, valid, test, json.loads(cost), wall_time, proposed_by, rnd, created)
