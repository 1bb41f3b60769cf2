"""The training cache: nothing is trained twice, across runs too.

A SQLite file maps (space, architecture, builder and its options, recipe hash, data fingerprint,
seed, fidelity) to the metrics that training produced. The training executor looks there before
it builds anything. Failed results are kept only when the failure is deterministic (the builder
refused the candidate); out-of-memory and NaN failures may not repeat on another machine or
batch, so they are not cached.

Default file (`TrainCache.default()`): `$ARCHLORE_TRAIN_CACHE` (`off` disables it), else
`$ARCHLORE_CACHE/train-cache.db`, else `~/.cache/archlore/train-cache.db`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ArchloreError
from .executors import Metrics

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    space TEXT NOT NULL,
    arch TEXT NOT NULL,
    builder TEXT NOT NULL,
    recipe TEXT NOT NULL,
    data TEXT NOT NULL,
    seed INTEGER NOT NULL,
    fidelity INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    created REAL NOT NULL
);
"""


@dataclass(frozen=True)
class CacheKey:
    space: str
    arch: str
    builder: str  # the builder spec and its options, as canonical JSON
    recipe: str  # Recipe.hash()
    data: str  # Dataset.fingerprint
    seed: int
    fidelity: int

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


class TrainCache:
    """Metrics by `CacheKey` in one SQLite file; safe to share between threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise ArchloreError(
                f"training cache {self.path} is not usable ({exc}); set ARCHLORE_TRAIN_CACHE to another file or 'off'"
            ) from None

    @staticmethod
    def default_path() -> Path | None:
        from .env import env

        e = env()
        if e.archlore_train_cache is not None:
            text = e.archlore_train_cache.strip()
            return None if text.lower() in ("", "off", "none", "0") else Path(text).expanduser()
        root = e.archlore_cache or Path("~/.cache/archlore").expanduser()
        return Path(root) / "train-cache.db"

    @classmethod
    def default(cls) -> TrainCache | None:
        path = cls.default_path()
        return cls(path) if path is not None else None

    def get(self, key: CacheKey) -> Metrics | None:
        with self._lock:
            row = self._db.execute("SELECT metrics FROM results WHERE key = ?", (key.digest(),)).fetchone()
        if row is None:
            return None
        d = json.loads(row[0])
        valid = float("nan") if d["valid"] is None else d["valid"]
        return Metrics(valid, d["test"], d["cost"], d["wall_time"], d["status"], d["reason"], d["fidelity"])

    def put(self, key: CacheKey, m: Metrics) -> None:
        payload = {
            "valid": m.valid if m.ok else None, "test": m.test, "cost": m.cost, "wall_time": m.wall_time,
            "status": m.status, "reason": m.reason, "fidelity": m.fidelity,
        }
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?)",
                (key.digest(), key.space, key.arch, key.builder, key.recipe, key.data, key.seed, key.fidelity,
                 json.dumps(payload), time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def close(self) -> None:
        self._db.close()
