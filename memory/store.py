"""The principle memory: design principles from past runs, kept in ChromaDB and recalled for new tasks.

One Chroma collection, ``principles``, holds one record per distinct principle, identified by
``(space, task, position, choice, direction)``. The document is the principle's sentence (that is
what gets embedded); everything else is scalar metadata so that Chroma ``where`` filters work.

Repeated runs do not pile up copies: each record keeps a list of *contributions*, one per run that
stated the principle (its confidence, evidence and outcome), and its summary fields are recomputed
from that list every time it changes:

- ``sources``/``count``: the runs that stated it; ``confidence``: their mean, ``confidence_max``;
- ``run_id``, ``best_metric``, ``evaluations``, ``evidence`` and the text: from the contribution
  with the best outcome (the metric is taken as higher-is-better, as validation accuracy is).

Because a contribution is keyed by its run, remembering the same run twice changes nothing, so a
write retried after a crash converges; forgetting a run removes exactly its contributions. The
opposite direction on the same position/choice has another id, so conflicting principles are both
kept, each with its own sources, and ``recall`` flags them.

Backends: a folder (``PersistentClient``) or ``http://host:port`` (``HttpClient`` on a shared
``chroma run`` server). A PersistentClient is not safe for several processes, and one that stays
open keeps a stale vector index when another process writes. So with a folder every operation takes
an inter-process file lock next to the store, opens a client, works, and closes it again (about
50 ms). Against a server the server serialises writes; a long-lived client is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from archlore.memory.embeddings import (
    embedding_dimension,
    embedding_name,
    embedding_option,
    get_embedding,
)
from archlore.memory.errors import (
    EmbeddingMismatch,
    MemoryFormatError,
    MemoryStoreError,
    MemoryUnavailable,
    PrincipleNotFound,
)
from archlore.memory.record import ENCODING_VERSION, Outcome, Principle, TaskInfo

log = logging.getLogger(__name__)

COLLECTION = "principles"
LOCK_FILE = "archlore-memory.lock"
EXPORT_FORMAT = "archlore-memory"
EXPORT_VERSION = 1

# recall: similarity = TASK_WEIGHT * task similarity + EVIDENCE_WEIGHT * evidence similarity
# (task similarity alone when no evidence text is given), and
# score = similarity * (BASE + CONFIDENCE_WEIGHT * confidence + OUTCOME_WEIGHT * outcome).
TASK_WEIGHT = 0.75
EVIDENCE_WEIGHT = 0.25
BASE = 0.5
CONFIDENCE_WEIGHT = 0.25
OUTCOME_WEIGHT = 0.25

_KEY_FIELDS = ("space", "task", "position", "choice", "direction")


def default_location() -> str:
    """Where the memory lives when none is given: ``$ARCHLORE_MEMORY``, else the user data dir."""
    env = os.environ.get("ARCHLORE_MEMORY")
    if env:
        return env
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return str(base / "archlore" / "memory")


def principle_id(space: str, task: str, position: str, choice: str, direction: str) -> str:
    """The deterministic id of a principle: the same statement on the same task is one record."""
    key = "\x1f".join((space, task, position, choice, direction))
    return "p-" + hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Recalled:
    """A principle recalled for a new task, with where it came from and why it ranks where it does."""

    id: str
    principle: Principle
    task: TaskInfo
    run_ids: tuple[str, ...]
    outcome: Outcome
    count: int
    similarity: float
    """In [0, 1]: how close the past task (and the principle, given evidence text) is to the query."""
    score: float
    """similarity weighted by confidence and outcome; what recall sorts by."""
    conflicts: bool
    """The memory also holds the opposite direction for the same space, task, position and choice."""


# --------------------------------------------------------------------------- records


def _contribution(
    p: Principle, task: TaskInfo, outcome: Outcome, run_id: str, created: float
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "text": p.text,
        "confidence": float(p.confidence),
        "evidence": p.evidence,
        "best_metric": None if outcome.best_metric is None else float(outcome.best_metric),
        "evaluations": int(outcome.evaluations),
        "task_description": task.description,
        "metric": task.metric,
        "created": created,
    }


def _outcome_rank(c: dict[str, Any]) -> tuple[bool, float, float, str]:
    bm = c.get("best_metric")
    return (bm is not None, -math.inf if bm is None else bm, c["created"], c["run_id"])


def _aggregate(key: dict[str, str], contributions: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """(document, metadata) of a record, recomputed from its contributions only."""
    contribs = sorted(contributions, key=lambda c: (c["created"], c["run_id"]))
    best = max(contribs, key=_outcome_rank)
    confidences = [c["confidence"] for c in contribs]
    description = next((c["task_description"] for c in reversed(contribs) if c["task_description"]), "")
    meta: dict[str, Any] = {
        **key,
        "confidence": round(sum(confidences) / len(confidences), 6),
        "confidence_max": max(confidences),
        "evidence": best["evidence"],
        "task_description": description,
        "metric": contribs[-1]["metric"],
        "run_id": best["run_id"],
        "evaluations": best["evaluations"],
        "sources": json.dumps([c["run_id"] for c in contribs]),
        "count": len(contribs),
        "encoding_version": ENCODING_VERSION,
        "created": min(c["created"] for c in contribs),
        "updated": max(c["created"] for c in contribs),
        "contributions": json.dumps(contribs, sort_keys=True),
    }
    if best["best_metric"] is not None:  # Chroma metadata cannot hold None
        meta["best_metric"] = best["best_metric"]
    return best["text"], meta


def _key(meta: dict[str, Any]) -> dict[str, str]:
    return {f: meta[f] for f in _KEY_FIELDS}


def _record(rid: str, doc: str, meta: dict[str, Any], *, contributions: bool = False) -> dict[str, Any]:
    """The plain dict handed out by ``list``/``get``/``query``."""
    rec: dict[str, Any] = {
        "id": rid,
        "text": doc,
        "space": meta["space"],
        "task": meta["task"],
        "task_description": meta.get("task_description", ""),
        "metric": meta.get("metric", ""),
        "position": meta["position"],
        "choice": meta["choice"],
        "direction": meta["direction"],
        "confidence": meta["confidence"],
        "confidence_max": meta.get("confidence_max", meta["confidence"]),
        "evidence": meta.get("evidence", ""),
        "run_id": meta.get("run_id", ""),
        "sources": json.loads(meta.get("sources", "[]")),
        "count": meta.get("count", 1),
        "best_metric": meta.get("best_metric"),
        "evaluations": meta.get("evaluations", 0),
        "encoding_version": meta.get("encoding_version", ENCODING_VERSION),
        "created": meta.get("created"),
        "updated": meta.get("updated"),
    }
    if contributions:
        rec["contributions"] = json.loads(meta.get("contributions", "[]"))
    return rec


def _where(space: str | None = None, task: str | None = None, extra: Sequence[dict] = ()) -> dict | None:
    clauses: list[dict] = []
    if space is not None:
        clauses.append({"space": space})
    if task is not None:
        clauses.append({"task": task})
    clauses.extend(extra)
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


# --------------------------------------------------------------------------- export file


class _Contribution(BaseModel):
    model_config = ConfigDict(extra="ignore")

    run_id: str = Field(min_length=1)
    text: str
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: str = ""
    best_metric: float | None = None
    evaluations: int = 0
    task_description: str = ""
    metric: str = "validation accuracy"
    created: float = 0.0


class _ExportedPrinciple(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str
    space: str = Field(min_length=1)
    task: str = Field(min_length=1)
    position: str
    choice: str
    direction: Literal["prefer", "avoid"]
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: str = ""
    task_description: str = ""
    metric: str = "validation accuracy"
    run_id: str = "imported"
    best_metric: float | None = None
    evaluations: int = 0
    created: float | None = None
    contributions: list[_Contribution] | None = None

    def to_contributions(self) -> list[dict[str, Any]]:
        if self.contributions:
            contribs = [c.model_dump() for c in self.contributions]
        else:  # a hand-written entry: one contribution from its top-level fields
            contribs = [
                _Contribution(
                    run_id=self.run_id,
                    text=self.text,
                    confidence=self.confidence,
                    evidence=self.evidence,
                    best_metric=self.best_metric,
                    evaluations=self.evaluations,
                    task_description=self.task_description,
                    metric=self.metric,
                    created=self.created or 0.0,
                ).model_dump()
            ]
        for c in contribs:  # the same limits as a principle the analyst writes
            Principle(
                text=c["text"],
                position=self.position,
                choice=self.choice,
                direction=self.direction,
                confidence=c["confidence"],
                evidence=c["evidence"],
            )
        return contribs


class _ExportFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: Literal["archlore-memory"]
    format_version: int
    encoding_version: int = ENCODING_VERSION
    principles: list[_ExportedPrinciple]


# --------------------------------------------------------------------------- backends

_path_locks: dict[str, threading.RLock] = {}
_path_locks_guard = threading.Lock()


def _settings() -> Any:
    """Fresh settings per client: the Chroma clients write host, port and path into them."""
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False)


def _chroma_errors() -> tuple[type[BaseException], ...]:
    from chromadb.errors import ChromaError

    return (ChromaError,)


class _LocalBackend:
    """A Chroma folder, one client per operation, under an inter-process file lock."""

    def __init__(self, path: Path, lock_timeout: float) -> None:
        from filelock import FileLock

        self.path = path.expanduser().resolve()
        self.location = str(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MemoryUnavailable(
                f"cannot create the memory folder {self.path}: {exc}; pass --memory with a writable path"
            ) from exc
        self.lock_timeout = lock_timeout
        self._file_lock = FileLock(str(self.path / LOCK_FILE), timeout=lock_timeout)
        with _path_locks_guard:  # threads of one process serialise before the file lock
            self._thread_lock = _path_locks.setdefault(self.location, threading.RLock())

    @contextmanager
    def session(self) -> Iterator[Any]:
        import chromadb
        from filelock import Timeout

        with self._thread_lock:
            try:
                self._file_lock.acquire()
            except Timeout:
                raise MemoryUnavailable(
                    f"the memory at {self.location} stayed locked by another process for "
                    f"{self.lock_timeout:.0f} s; wait for that process to finish and retry"
                ) from None
            try:
                try:
                    client = chromadb.PersistentClient(path=self.location, settings=_settings())
                except _chroma_errors() + (OSError,) as exc:
                    raise MemoryUnavailable(f"cannot open the memory at {self.location}: {exc}") from exc
                try:
                    yield client
                except _chroma_errors() as exc:
                    raise MemoryStoreError(f"the memory at {self.location} failed: {exc}") from exc
                finally:
                    client.close()
            finally:
                self._file_lock.release()

    def close(self) -> None:
        pass


class _HttpBackend:
    """A shared ``chroma run`` server; it serialises writes itself, so one client is kept."""

    def __init__(self, url: str) -> None:
        import chromadb

        parsed = urlparse(url)
        if not parsed.hostname:
            raise MemoryStoreError(f"cannot read a host from {url!r}; use http://HOST:PORT")
        ssl = parsed.scheme == "https"
        port = parsed.port or (443 if ssl else 8000)
        self.location = f"{parsed.scheme}://{parsed.hostname}:{port}"
        self._lock = threading.RLock()
        try:
            self._client = chromadb.HttpClient(host=parsed.hostname, port=port, ssl=ssl, settings=_settings())
            self._client.heartbeat()
        except Exception as exc:  # connection refused, DNS, TLS... all mean "not reachable"
            raise MemoryUnavailable(
                f"cannot reach the Chroma server at {self.location} ({exc.__class__.__name__}: {exc}); "
                f"start one with `chroma run --path DIR --port {port}` or fix --memory"
            ) from exc

    @contextmanager
    def session(self) -> Iterator[Any]:
        import httpx

        with self._lock:
            try:
                yield self._client
            except httpx.HTTPError as exc:
                raise MemoryUnavailable(f"lost the Chroma server at {self.location}: {exc}") from exc
            except _chroma_errors() as exc:
                raise MemoryStoreError(f"the Chroma server at {self.location} failed: {exc}") from exc

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing is best effort
            pass


def _peek_embedding(backend: _LocalBackend | _HttpBackend) -> str | None:
    """The embedding name recorded in an existing memory, or None for a new memory."""
    from chromadb.errors import NotFoundError

    with backend.session() as client:
        try:
            col = client.get_collection(COLLECTION, embedding_function=None)
        except (NotFoundError, ValueError):
            return None
        return (col.metadata or {}).get("embedding")


# --------------------------------------------------------------------------- the store


class PrincipleStore:
    """Design principles of past runs, with retrieval for a new task. Build it with ``open_store``."""

    def __init__(self, backend: _LocalBackend | _HttpBackend, embedding: Any) -> None:
        self._backend = backend
        self._ef = embedding
        self.location: str = backend.location
        self.embedding_name: str = embedding_name(embedding)
        self.dimension: int = embedding_dimension(embedding)
        self.embedding = embedding  # the EmbeddingFunction, e.g. to open a copy with the same one
        self._vectors: dict[str, np.ndarray] = {}
        with self._session():  # create the collection, or check that it fits this embedding
            pass

    # -- plumbing

    def __enter__(self) -> PrincipleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._backend.close()

    def __repr__(self) -> str:
        return f"PrincipleStore({self.location!r}, embedding={self.embedding_name!r})"

    @contextmanager
    def _session(self) -> Iterator[Any]:
        with self._backend.session() as client:
            col = client.get_or_create_collection(
                COLLECTION,
                embedding_function=None,  # archlore embeds; Chroma must never fall back to a download
                configuration={"hnsw": {"space": "cosine"}},
                metadata={
                    "archlore": "principle memory",
                    "embedding": self.embedding_name,
                    "embedding_dimension": self.dimension,
                    "encoding_version": ENCODING_VERSION,
                },
            )
            self._check(col.metadata or {})
            yield col

    def _check(self, meta: dict[str, Any]) -> None:
        built_name, built_dim = meta.get("embedding"), meta.get("embedding_dimension")
        if built_name is None or built_dim is None:
            raise MemoryStoreError(
                f"the collection {COLLECTION!r} at {self.location} was not made by archlore; "
                "point --memory at another path"
            )
        if built_name == self.embedding_name and built_dim == self.dimension:
            return
        option = embedding_option(built_name)
        fix = f"open it with --embedding {option}" if option else f"open it with the {built_name} embedding"
        raise EmbeddingMismatch(
            f"this memory ({self.location}) was built with {built_name} ({built_dim}-d), not "
            f"{self.embedding_name} ({self.dimension}-d); {fix} or point --memory at a new path"
        )

    def _embed(self, texts: Iterable[str]) -> dict[str, np.ndarray]:
        """Embeddings by text; cached, since the same task descriptions come back on every recall."""
        wanted = list(dict.fromkeys(texts))
        missing = [t for t in wanted if t not in self._vectors]
        if missing:
            vectors = self._ef(missing)
            for text, vec in zip(missing, vectors):
                arr = np.asarray(vec, dtype=np.float32)
                if arr.shape != (self.dimension,):
                    raise EmbeddingMismatch(
                        f"the embedding {self.embedding_name} returned {arr.shape} vectors, "
                        f"expected ({self.dimension},)"
                    )
                self._vectors[text] = arr
            if len(self._vectors) > 4096:  # bounded: forget the oldest half
                for old in list(self._vectors)[:2048]:
                    del self._vectors[old]
        return {t: self._vectors[t] for t in wanted}

    def _write(
        self,
        col: Any,
        aggregates: dict[str, tuple[dict[str, str], list[dict[str, Any]]]],
        stored: dict[str, tuple[str, Any]],
        vectors: dict[str, np.ndarray],
    ) -> None:
        """Upsert records rebuilt from their contributions, reusing embeddings where text is unchanged."""
        ids, docs, metas, embs = [], [], [], []
        pending: list[int] = []
        for rid, (key, contribs) in aggregates.items():
            doc, meta = _aggregate(key, contribs)
            ids.append(rid)
            docs.append(doc)
            metas.append(meta)
            if doc in vectors:
                embs.append(vectors[doc])
            elif rid in stored and stored[rid][0] == doc and stored[rid][1] is not None:
                embs.append(np.asarray(stored[rid][1], dtype=np.float32))
            else:
                embs.append(None)
                pending.append(len(embs) - 1)
        if pending:  # rare: the best contribution's text is one we did not embed beforehand
            fresh = self._embed(docs[i] for i in pending)
            for i in pending:
                embs[i] = fresh[docs[i]]
        batch = 1000
        for start in range(0, len(ids), batch):
            sl = slice(start, start + batch)
            col.upsert(ids=ids[sl], documents=docs[sl], metadatas=metas[sl], embeddings=embs[sl])

    # -- writing

    def remember(
        self, principles: Sequence[Principle], task: TaskInfo, outcome: Outcome, run_id: str
    ) -> list[str]:
        """Store the principles a run ended with; returns their ids, in the order given.

        A principle already in memory (same space, task, position, choice, direction) is merged:
        this run joins its sources. Remembering the same run again replaces that run's contribution,
        so retrying after a crash is safe. Within one call a repeated principle counts once (the last).
        """
        if not isinstance(run_id, str) or not run_id.strip():
            raise MemoryStoreError("run_id must be a non-empty string")
        if not task.space or not task.task:
            raise MemoryStoreError(f"the task needs a space and a task name, got {task!r}")
        if not principles:
            return []
        now = time.time()
        order: list[str] = []
        incoming: dict[str, tuple[dict[str, str], dict[str, Any]]] = {}
        for p in principles:
            key = {"space": task.space, "task": task.task, "position": p.position,
                   "choice": p.choice, "direction": p.direction}
            rid = principle_id(**key)
            order.append(rid)
            incoming[rid] = (key, _contribution(p, task, outcome, run_id, now))
        vectors = self._embed(p.text for p in principles)  # before the lock: model loading is slow
        with self._session() as col:
            got = col.get(ids=list(incoming), include=["metadatas", "documents", "embeddings"])
            stored = _stored(got)
            aggregates = {}
            for rid, (key, contrib) in incoming.items():
                old = json.loads(_got_meta(got, rid).get("contributions", "[]")) if rid in stored else []
                previous = next((c for c in old if c["run_id"] == run_id), None)
                if previous is not None:  # a retry of the same run: keep its first timestamp
                    contrib["created"] = previous["created"]
                aggregates[rid] = (key, [c for c in old if c["run_id"] != run_id] + [contrib])
            self._write(col, aggregates, stored, vectors)
        log.info("remembered %d principles of run %s (%s/%s)", len(incoming), run_id, task.space, task.task)
        return order

    def forget(
        self,
        ids: Sequence[str] | None = None,
        *,
        run_id: str | None = None,
        task: str | None = None,
        space: str | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Remove principles; returns the ids removed or changed. Filters combine with AND.

        With ``run_id`` only that run's contributions go: a principle other runs also stated stays,
        with its summary recomputed from them. ``dry_run`` reports without changing anything.
        """
        if not ids and run_id is None and task is None and space is None:
            raise MemoryStoreError("forget needs ids, a run, a task or a space; nothing was forgotten")
        with self._session() as col:
            got = col.get(
                ids=list(ids) if ids else None,
                where=_where(space, task),
                include=["metadatas", "documents", "embeddings"],
            )
            stored = _stored(got)
            delete: list[str] = []
            rewrite: dict[str, tuple[dict[str, str], list[dict[str, Any]]]] = {}
            for rid, meta in zip(got["ids"], got["metadatas"]):
                if run_id is None:
                    delete.append(rid)
                    continue
                contribs = json.loads(meta.get("contributions", "[]"))
                kept = [c for c in contribs if c["run_id"] != run_id]
                if len(kept) == len(contribs):
                    continue
                if kept:
                    rewrite[rid] = (_key(meta), kept)
                else:
                    delete.append(rid)
            if not dry_run:
                if delete:
                    col.delete(ids=delete)
                if rewrite:
                    self._write(col, rewrite, stored, {})
        return sorted(delete + list(rewrite))

    def import_(self, path: str | Path) -> int:
        """Merge an ``export`` file into this memory, re-embedding every text; returns its size.

        Contributions are merged by run, so importing the same file twice changes nothing.
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise MemoryFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except json.JSONDecodeError as exc:
            raise MemoryFormatError(
                f"{path} is not JSON ({exc}); pass a file made by `archlore memory export`"
            ) from exc
        try:
            data = _ExportFile.model_validate(raw)
            incoming: dict[str, tuple[dict[str, str], list[dict[str, Any]]]] = {}
            for entry in data.principles:
                key = {f: getattr(entry, f) for f in _KEY_FIELDS}
                rid = principle_id(**key)
                merged = {c["run_id"]: c for c in incoming.get(rid, (key, []))[1]}
                merged.update({c["run_id"]: c for c in entry.to_contributions()})
                incoming[rid] = (key, list(merged.values()))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise MemoryFormatError(
                f"{path} is not an archlore memory export: {where}: {first['msg']} "
                f"({exc.error_count()} problem(s)); pass a file made by `archlore memory export`"
            ) from None
        if data.format_version > EXPORT_VERSION or data.encoding_version > ENCODING_VERSION:
            raise MemoryFormatError(
                f"{path} was written by a newer archlore (format {data.format_version}, encoding "
                f"{data.encoding_version}); upgrade archlore to import it"
            )
        if not incoming:
            return 0
        texts = {c["text"] for _, contribs in incoming.values() for c in contribs}
        vectors = self._embed(sorted(texts))
        with self._session() as col:
            got = col.get(ids=list(incoming), include=["metadatas", "documents", "embeddings"])
            stored = _stored(got)
            aggregates = {}
            for rid, (key, contribs) in incoming.items():
                old = json.loads(_got_meta(got, rid).get("contributions", "[]")) if rid in stored else []
                by_run = {c["run_id"]: c for c in old}
                by_run.update({c["run_id"]: c for c in contribs})
                aggregates[rid] = (key, list(by_run.values()))
            self._write(col, aggregates, stored, vectors)
        return len(data.principles)

    # -- reading

    def export(self, path: str | Path) -> int:
        """Write every principle, with all its contributions, to a JSON file; returns how many.

        Embeddings are left out (``import_`` recomputes them), so the file moves between models.
        The file is written to a temporary name and renamed, so a crash never leaves half a file.
        """
        path = Path(path)
        records = self._records(None, contributions=True)
        payload = {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_VERSION,
            "encoding_version": ENCODING_VERSION,
            "embedding": self.embedding_name,
            "exported": time.time(),
            "principles": records,
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except OSError as exc:
            raise MemoryStoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return len(records)

    def _records(self, where: dict | None, *, contributions: bool = False) -> list[dict[str, Any]]:
        with self._session() as col:
            got = col.get(where=where, include=["metadatas", "documents"])
        recs = [
            _record(rid, doc, meta, contributions=contributions)
            for rid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"])
        ]
        recs.sort(key=lambda r: (r["space"], r["task"], r["position"], r["choice"], r["direction"]))
        return recs

    def list(
        self, space: str | None = None, task: str | None = None, *, run_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Every principle (optionally of one space/task, or stated by one run), sorted by key."""
        recs = self._records(_where(space, task))
        if run_id is not None:
            recs = [r for r in recs if run_id in r["sources"]]
        return recs

    def get(self, id: str) -> dict[str, Any]:
        """One principle with all its contributions; ``PrincipleNotFound`` if absent."""
        with self._session() as col:
            got = col.get(ids=[id], include=["metadatas", "documents"])
        if not got["ids"]:
            raise PrincipleNotFound(
                f"no principle {id!r} in the memory at {self.location}; `archlore memory list` shows the ids"
            )
        return _record(got["ids"][0], got["documents"][0], got["metadatas"][0], contributions=True)

    def count(self, space: str | None = None, task: str | None = None) -> int:
        """How many principles (records, not contributions) the memory holds."""
        with self._session() as col:
            where = _where(space, task)
            return col.count() if where is None else len(col.get(where=where, include=[])["ids"])

    def query(
        self, text: str, *, space: str | None = None, task: str | None = None, k: int = 5
    ) -> list[dict[str, Any]]:
        """The k principles whose sentence is closest to ``text``, each with ``similarity``.

        ``similarity`` is the cosine similarity (1 - Chroma's cosine distance), so in [-1, 1].
        """
        if k < 1:
            raise MemoryStoreError(f"k must be at least 1, got {k}")
        vec = self._embed([text])[text]
        with self._session() as col:
            n = col.count()
            if n == 0:
                return []
            got = col.query(
                query_embeddings=[vec],
                n_results=min(k, n),
                where=_where(space, task),
                include=["metadatas", "documents", "distances"],
            )
        out = []
        rows = zip(got["ids"][0], got["documents"][0], got["metadatas"][0], got["distances"][0])
        for rid, doc, meta, dist in rows:
            rec = _record(rid, doc, meta)
            rec["similarity"] = round(1.0 - float(dist), 6)
            out.append(rec)
        return out

    def recall(
        self,
        space: str,
        task_description: str,
        evidence_text: str = "",
        *,
        k: int = 10,
        exclude_tasks: Sequence[str] = (),
        exclude_runs: Sequence[str] = (),
    ) -> list[Recalled]:
        """Principles from the most similar past tasks of ``space``, best first.

        For each principle, with cos⁺ the cosine clipped at 0:

            task_sim   = cos⁺(E(task_description), E(description of the principle's task))
            evid_sim   = cos⁺(E(evidence_text), E(principle sentence))
            similarity = 0.75·task_sim + 0.25·evid_sim   (task_sim alone without evidence_text)
            outcome    = the run's best metric scaled to [0, 1] among the principles of the same
                         task (1 when they all tie, 0.5 when unknown)
            score      = similarity · (0.5 + 0.25·confidence + 0.25·outcome)

        A past task without a description is compared by its name. Without ``task_description``
        similarity is evid_sim alone; with neither text every task counts as equally similar (1).
        ``exclude_tasks`` drops whole tasks; ``exclude_runs`` drops those runs' contributions (a
        principle only they stated disappears, one other runs also stated is recomputed without
        them), so an experiment can keep the target task's own knowledge out of its prior.
        """
        if k < 1:
            raise MemoryStoreError(f"k must be at least 1, got {k}")
        extra = [{"task": {"$nin": list(exclude_tasks)}}] if exclude_tasks else []
        with self._session() as col:
            got = col.get(where=_where(space, None, extra), include=["metadatas", "documents", "embeddings"])
        excluded = set(exclude_runs)
        rows: list[tuple[str, str, dict[str, Any], Any]] = []
        for rid, doc, meta, emb in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"]):
            if excluded and excluded.intersection(json.loads(meta.get("sources", "[]"))):
                kept = [c for c in json.loads(meta["contributions"]) if c["run_id"] not in excluded]
                if not kept:
                    continue
                new_doc, meta = _aggregate(_key(meta), kept)
                if new_doc != doc:
                    doc, emb = new_doc, None
            rows.append((rid, doc, meta, emb))
        if not rows:
            return []

        latest: dict[str, tuple[float, str]] = {}  # task -> its most recent non-empty description
        for _, _, m, _ in rows:
            stamp = m.get("updated", 0.0) if m.get("task_description") else -math.inf
            if m["task"] not in latest or stamp > latest[m["task"]][0]:
                latest[m["task"]] = (stamp, m.get("task_description") or m["task"])
        descriptions = {t: desc for t, (_, desc) in latest.items()}
        query_texts = [t for t in (task_description, evidence_text) if t]
        unembedded = [d for _, d, _, e in rows if e is None]  # texts changed by exclude_runs
        vectors = self._embed(query_texts + list(descriptions.values()) + unembedded)
        task_sim: dict[str, float] = {}
        for task_name, desc in descriptions.items():
            task_sim[task_name] = _cos(vectors[task_description], vectors[desc]) if task_description else 1.0

        metrics: dict[str, list[float]] = {}
        for _, _, m, _ in rows:
            if m.get("best_metric") is not None:
                metrics.setdefault(m["task"], []).append(m["best_metric"])
        directions: dict[tuple[str, str, str], set[str]] = {}
        for _, _, m, _ in rows:
            directions.setdefault((m["task"], m["position"], m["choice"]), set()).add(m["direction"])

        results: list[Recalled] = []
        for rid, doc, m, emb in rows:
            sim = task_sim[m["task"]]
            if evidence_text:
                vec = vectors[doc] if emb is None else np.asarray(emb, dtype=np.float32)
                ev = _cos(vectors[evidence_text], vec)
                sim = TASK_WEIGHT * sim + EVIDENCE_WEIGHT * ev if task_description else ev
            outcome_q = _scaled(m.get("best_metric"), metrics.get(m["task"], []))
            score = sim * (BASE + CONFIDENCE_WEIGHT * m["confidence"] + OUTCOME_WEIGHT * outcome_q)
            results.append(
                Recalled(
                    id=rid,
                    principle=Principle(
                        text=doc,
                        position=m["position"],
                        choice=m["choice"],
                        direction=m["direction"],
                        confidence=m["confidence"],
                        evidence=m.get("evidence", ""),
                    ),
                    task=TaskInfo(
                        space=m["space"],
                        task=m["task"],
                        description=m.get("task_description")
                        or (descriptions[m["task"]] if descriptions[m["task"]] != m["task"] else ""),
                        metric=m.get("metric", "validation accuracy"),
                    ),
                    run_ids=tuple(json.loads(m.get("sources", "[]"))),
                    outcome=Outcome(best_metric=m.get("best_metric"), evaluations=m.get("evaluations", 0)),
                    count=m.get("count", 1),
                    similarity=round(sim, 6),
                    score=round(score, 6),
                    conflicts=len(directions[(m["task"], m["position"], m["choice"])]) > 1,
                )
            )
        results.sort(key=lambda r: (-r.score, r.id))
        return results[:k]


def _stored(got: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """id -> (document, embedding) of a Chroma ``get`` result."""
    embs = got.get("embeddings")
    if embs is None:
        embs = [None] * len(got["ids"])
    return {rid: (doc, emb) for rid, doc, emb in zip(got["ids"], got["documents"], embs)}


def _got_meta(got: dict[str, Any], rid: str) -> dict[str, Any]:
    return got["metadatas"][got["ids"].index(rid)]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return max(0.0, float(np.dot(a, b)) / (na * nb))


def _scaled(value: float | None, values: Sequence[float]) -> float:
    if value is None or not values:
        return 0.5
    lo, hi = min(values), max(values)
    return 1.0 if hi == lo else (value - lo) / (hi - lo)


def open_store(
    location: str | Path | None = None,
    *,
    embedding: str | Any = "minilm",
    lock_timeout: float = 120.0,
) -> PrincipleStore:
    """Open (creating if needed) the principle memory.

    ``location``: None -> ``$ARCHLORE_MEMORY`` or the per-user data folder; a path -> a Chroma
    folder there; ``http://host:port`` -> a ``chroma run`` server shared by a team.
    ``embedding``: ``"minilm"`` (default), ``"hash"``, an ``EmbeddingFunction``, or ``"auto"``
    (whatever an existing memory was built with, MiniLM for a new one). Opening a memory with
    another embedding than it was built with raises ``EmbeddingMismatch``.
    ``lock_timeout``: seconds to wait for another process's write before giving up.
    """
    loc = default_location() if location is None else location
    if isinstance(loc, str) and loc.startswith(("http://", "https://")):
        backend: _LocalBackend | _HttpBackend = _HttpBackend(loc)
    else:
        backend = _LocalBackend(Path(loc), lock_timeout)
    try:
        if embedding == "auto":
            built = _peek_embedding(backend)
            embedding = (embedding_option(built) if built else None) or "minilm"
        return PrincipleStore(backend, get_embedding(embedding))
    except BaseException:
        backend.close()
        raise
