"""The principle memory: design principles from past runs, kept in ChromaDB and recalled for new tasks.

Two Chroma collections: ``principles`` (one record per distinct principle, see
``archlore.memory.aggregate`` for how the contributions of many runs make one record) and
``principle_tasks``, a small index with one entry per task (its latest description, embedded, and
the union of its data tasks). Remembering the same run twice changes nothing, so a write retried
after a crash converges; forgetting a run removes exactly its contributions. The opposite direction
on the same position/choice has another id, so conflicting principles are both kept, and ``recall``
flags them.

``recall`` reads the task index, asks Chroma for the principles nearest to the evidence text, and
then reads whole tasks, most similar first, until no task left unread can reach the top k (see
``archlore.memory.ranking``), instead of reading the whole space.

Every contribution records its provenance (``Provenance``: space, task, the tasks whose *data*
produced it, run, archlore version), and ``recall(exclude_data=[...])`` leaves out every
contribution whose data touched those tasks. Stores written before provenance (encoding 1) are
refused on open until ``archlore memory migrate`` (``archlore.memory.migrate``) marks their contributions as of
unknown data; ``recall`` leaves those out unless ``include_unknown=True``.

Backends (``archlore.memory.backends``): a folder under an inter-process file lock, or a
``chroma run`` server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from archlore.memory import taskindex
from archlore.memory.aggregate import (
    Contribution,
    aggregate,
    contribution,
    excluded,
    key_of,
    principle_id,
    sort_key,
    to_record,
    unpack,
    where,
)
from archlore.memory.backends import Backend, open_backend
from archlore.memory.conflicts import OPPOSITE, annotate, find_conflicts
from archlore.memory.embeddings import (
    embedding_dimension,
    embedding_name,
    embedding_option,
    get_embedding,
)
from archlore.memory.errors import (
    EmbeddingMismatch,
    MemoryNeedsMigration,
    MemoryStoreError,
    PrincipleNotFound,
)
from archlore.memory.exchange import read_export, write_export
from archlore.memory.location import default_location
from archlore.memory.ranking import (
    Recalled,
    Row,
    Scored,
    best,
    bound,
    recalled,
    score_task,
)
from archlore.memory.record import (
    ENCODING_VERSION,
    UNKNOWN,
    Outcome,
    Principle,
    Provenance,
    TaskInfo,
    archlore_version,
)
from pydantic import ValidationError

__all__ = ["PrincipleStore", "Recalled", "default_location", "open_store", "principle_id"]

log = logging.getLogger(__name__)

COLLECTION = "principles"
CANDIDATES_PER_RESULT = 20
"""recall asks Chroma for the k x this many principles nearest to the evidence text, and reads
about that many principles (whole tasks) before it settles for the best of what it read."""
WRITE_BATCH = 500
"""Records per import batch (one lock and one upsert each); every batch is complete or absent."""
PAGE = 5000
"""Records per page when reading a whole memory (list, export, migrate)."""
EMBED_CACHE = 4096
"""Texts whose vectors a store keeps (LRU): the task descriptions and queries that come back."""

_MIGRATE_FIX = "run `archlore memory migrate --memory {loc}` once"


class BoundedCache:
    """A least-recently-used map of at most ``maxsize`` texts to vectors.

    ``get_many`` builds each call's answer itself before it stores anything, so an eviction can
    never lose a text the same call still needs (the bug of the cache this replaces, which made
    importing more than 4,096 distinct principles fail with a KeyError)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get_many(self, keys: Iterable[str], compute: Callable[[list[str]], list[np.ndarray]]) -> dict[str, np.ndarray]:
        wanted = list(dict.fromkeys(keys))
        with self._lock:
            out = {k: self._data[k] for k in wanted if k in self._data}
            for k in out:
                self._data.move_to_end(k)
        missing = [k for k in wanted if k not in out]
        if missing:
            for k, vec in zip(missing, compute(missing)):
                vec.setflags(write=False)  # shared by every caller
                out[k] = vec
            with self._lock:
                for k in missing:
                    self._data[k] = out[k]
                while len(self._data) > self.maxsize:
                    self._data.popitem(last=False)
        return {k: out[k] for k in wanted}


def _unlisted(name: str, value: Any) -> None:
    if isinstance(value, str):  # a string is a Sequence[str] of its characters
        raise MemoryStoreError(f"{name} must be a list of names, not one string: pass [{value!r}]")


class PrincipleStore:
    """Design principles of past runs, with retrieval for a new task. Build it with ``open_store``."""

    def __init__(self, backend: Backend, embedding: Any, *, _migrating: bool = False) -> None:
        self._backend = backend
        self._ef = embedding
        self.location: str = backend.location
        self.embedding_name: str = embedding_name(embedding)
        self.dimension: int = embedding_dimension(embedding)
        self.embedding = embedding  # the embedding function, e.g. to open a copy with the same one
        self._migrating = _migrating
        self._client: Any = None
        self._cols: tuple[Any, Any] | None = None
        self._vectors = BoundedCache(EMBED_CACHE)
        self._index: tuple[str, list[tuple[dict[str, Any], np.ndarray]]] | None = None  # (generation, entries)
        with self._session():  # create the collections, or check that they fit this embedding
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
    def _session(self, *, write: bool = False) -> Iterator[tuple[Any, Any]]:
        """(principles, task index) collections, under the backend's lock."""
        with self._backend.session(write=write) as client:
            if client is not self._client or self._cols is None:
                self._cols = None
                self._cols = self._collections(client)
                self._client = client
            try:
                yield self._cols
            except BaseException:
                self._cols = None  # fetch the collections again next time
                raise

    def _collections(self, client: Any) -> tuple[Any, Any]:
        from chromadb.errors import NotFoundError

        created = False
        try:
            col = client.get_collection(COLLECTION, embedding_function=None)
        except (NotFoundError, ValueError):
            created = True
            col = client.get_or_create_collection(
                COLLECTION,
                embedding_function=None,  # archlore embeds; Chroma must never fall back to a download
                configuration={"hnsw": {"space": "cosine"}},
                metadata={
                    "archlore": "principle memory",
                    "embedding": self.embedding_name,
                    "embedding_dimension": self.dimension,
                    "encoding_version": ENCODING_VERSION,
                    "archlore_version": archlore_version(),
                },
            )
        self._check(col.metadata or {})
        try:
            tasks = client.get_collection(taskindex.COLLECTION, embedding_function=None)
        except (NotFoundError, ValueError):
            created = True
            tasks = client.get_or_create_collection(
                taskindex.COLLECTION,
                embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}},
                metadata={"archlore": "principle task index", "embedding": self.embedding_name},
            )
        if created:  # a write, though the session may be a read: other processes must reopen
            self._backend.stamp()
        return col, tasks

    def _check(self, meta: dict[str, Any]) -> None:
        built_name, built_dim = meta.get("embedding"), meta.get("embedding_dimension")
        if built_name is None or built_dim is None:
            raise MemoryStoreError(
                f"the collection {COLLECTION!r} at {self.location} was not made by archlore; "
                "point --memory at another path"
            )
        if built_name != self.embedding_name or built_dim != self.dimension:
            option = embedding_option(built_name)
            fix = f"open it with --embedding {option}" if option else f"open it with the {built_name} embedding"
            raise EmbeddingMismatch(
                f"this memory ({self.location}) was built with {built_name} ({built_dim}-d), not "
                f"{self.embedding_name} ({self.dimension}-d); {fix} or point --memory at a new path"
            )
        version = int(meta.get("encoding_version", 1))
        if version > ENCODING_VERSION:
            raise MemoryStoreError(
                f"the memory at {self.location} was written by a newer archlore (encoding {version}, "
                f"this one reads {ENCODING_VERSION}); upgrade archlore"
            )
        if version < ENCODING_VERSION and not self._migrating:
            raise MemoryNeedsMigration(
                f"the memory at {self.location} was written before principles recorded their provenance "
                f"(encoding {version}); {_MIGRATE_FIX.format(loc=self.location)} (its principles are kept, "
                "marked as from unknown data, and left out of recall unless asked for)"
            )

    # -- embeddings

    def _embed(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One vector per text, in order, checked; uncached (writes embed each text once)."""
        if not texts:
            return []
        out = []
        for vec in self._ef(list(texts)):
            arr = np.asarray(vec, dtype=np.float32)
            if arr.shape != (self.dimension,):
                raise EmbeddingMismatch(
                    f"the embedding {self.embedding_name} returned {arr.shape} vectors, "
                    f"expected ({self.dimension},); pass an embedding with a fixed dimension"
                )
            out.append(arr)
        return out

    def _embed_cached(self, texts: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors by text for the few texts that come back call after call (queries, task
        descriptions); the texts not cached are embedded in one batch."""
        return self._vectors.get_many(texts, self._embed)

    def _embed_map(self, texts: Iterable[str]) -> dict[str, np.ndarray]:
        wanted = sorted(set(texts))
        return dict(zip(wanted, self._embed(wanted)))

    # -- writing

    def _write(
        self,
        col: Any,
        aggregates: dict[str, tuple[dict[str, str], list[Contribution]]],
        stored: dict[str, tuple[str, Any]],
        vectors: dict[str, np.ndarray],
    ) -> None:
        """Upsert records rebuilt from their contributions, reusing embeddings where text is unchanged."""
        ids, docs, metas, embs = [], [], [], []
        pending: list[int] = []
        for rid, (key, contribs) in aggregates.items():
            doc, meta = aggregate(key, contribs)
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
            fresh = self._embed_map(docs[i] for i in pending)
            for i in pending:
                embs[i] = fresh[docs[i]]
        for start in range(0, len(ids), WRITE_BATCH):
            sl = slice(start, start + WRITE_BATCH)
            col.upsert(ids=ids[sl], documents=docs[sl], metadatas=metas[sl], embeddings=embs[sl])

    def remember(
        self,
        principles: Sequence[Principle],
        task: TaskInfo,
        outcome: Outcome,
        run_id: str,
        *,
        data_tasks: Sequence[str],
    ) -> list[str]:
        """Store the principles a run ended with; returns their ids, in the order given.

        ``data_tasks``: the tasks whose data produced these principles (the source tasks the
        analyst read, plus ``task.task`` when the run's own evaluations were used). Required: a
        principle of unknown data origin must not be storable by accident.

        A principle already in memory (same space, task, position, choice, direction) is merged:
        this run joins its sources. Remembering the same run again replaces that run's contribution,
        so retrying after a crash is safe. Within one call a repeated principle counts once (the last).
        """
        if not isinstance(run_id, str) or not run_id.strip():
            raise MemoryStoreError("run_id must be a non-empty string")
        if not task.space or not task.task:
            raise MemoryStoreError(f"the task needs a space and a task name, got {task!r}")
        _unlisted("data_tasks", data_tasks)
        try:
            provenance = Provenance(space=task.space, task=task.task, data_tasks=list(data_tasks or []),
                                    run_id=run_id, archlore_version=archlore_version())
        except ValidationError as exc:
            raise MemoryStoreError(
                f"data_tasks {list(data_tasks or [])!r} is not usable ({exc.errors()[0]['msg']}); pass the "
                "tasks whose data produced the principles, e.g. data_tasks=[source, target]"
            ) from None
        if not principles:
            return []
        now = time.time()
        order: list[str] = []
        incoming: dict[str, tuple[dict[str, str], Contribution]] = {}
        for p in principles:
            key = {"space": task.space, "task": task.task, "position": p.position,
                   "choice": p.choice, "direction": p.direction}
            rid = principle_id(**key)
            order.append(rid)
            incoming[rid] = (key, contribution(p, task, outcome, provenance, now))
        vectors = self._embed_map(p.text for p in principles)  # before the lock: embedding is slow
        if task.description:
            self._embed_cached([task.description])
        with self._session(write=True) as (col, tasks):
            got = col.get(ids=list(incoming), include=["metadatas", "documents", "embeddings"])
            stored = _stored(got)
            metas = dict(zip(got["ids"], got["metadatas"]))
            aggregates = {}
            for rid, (key, contrib) in incoming.items():
                old = unpack(metas[rid], rid)["contributions"] if rid in metas else []
                previous = next((c for c in old if c["run_id"] == run_id), None)
                if previous is not None:  # a retry of the same run: keep its first timestamp
                    contrib["created"] = previous["created"]
                aggregates[rid] = (key, [c for c in old if c["run_id"] != run_id] + [contrib])
            taskindex.merge(tasks, {(task.space, task.task): [c for _, c in incoming.values()]}, self._embed_cached)
            self._write(col, aggregates, stored, vectors)
        log.info("remembered %d principles of run %s (%s/%s, data %s)", len(incoming), run_id, task.space,
                 task.task, ", ".join(provenance.data_tasks))
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
        with self._session(write=not dry_run) as (col, tasks):
            got = col.get(
                ids=list(ids) if ids else None,
                where=where(space, task),
                include=["metadatas", "documents", "embeddings"],
            )
            stored = _stored(got)
            delete: list[str] = []
            rewrite: dict[str, tuple[dict[str, str], list[Contribution]]] = {}
            affected: set[tuple[str, str]] = set()
            for rid, meta in zip(got["ids"], got["metadatas"]):
                if run_id is None:
                    delete.append(rid)
                else:
                    contribs = unpack(meta, rid)["contributions"]
                    kept = [c for c in contribs if c["run_id"] != run_id]
                    if len(kept) == len(contribs):
                        continue
                    if kept:
                        rewrite[rid] = (key_of(meta), kept)
                    else:
                        delete.append(rid)
                affected.add((meta["space"], meta["task"]))
            if not dry_run and (delete or rewrite):
                if delete:
                    col.delete(ids=delete)
                if rewrite:
                    self._write(col, rewrite, stored, {})
                taskindex.recompute(col, tasks, affected, self._embed_cached)  # after the records
        return sorted(delete + list(rewrite))

    def import_(
        self,
        path: str | Path,
        *,
        batch_size: int = WRITE_BATCH,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Merge an ``export`` file into this memory, re-embedding its texts; returns its size.

        Contributions are merged by run, so importing the same file twice changes nothing. The file
        is written in batches of ``batch_size`` principles, each under its own lock: an import
        killed halfway leaves whole batches, and running it again converges to exactly the memory an
        uninterrupted import makes. ``progress(done, total)`` is called after every batch.
        Old export files (format 1, no provenance) import with ``data_tasks=["unknown"]``.
        """
        data = read_export(path)
        if data.format_version < 2:
            log.warning("%s has no provenance (format 1): its principles are imported as from unknown data", path)
        rids = sorted(data.principles)  # a fixed order, so a re-run redoes the same batches
        total = len(rids)
        for start in range(0, total, max(1, batch_size)):
            batch = {rid: data.principles[rid] for rid in rids[start:start + max(1, batch_size)]}
            # embed the text each record will most likely show, before taking the lock
            vectors = self._embed_map(aggregate(key, contribs)[0] for key, contribs in batch.values())
            by_task: dict[tuple[str, str], list[Contribution]] = {}
            for key, contribs in batch.values():
                by_task.setdefault((key["space"], key["task"]), []).extend(contribs)
            self._embed_cached(taskindex.task_document(taskindex.task_entry(s, t, cs))
                               for (s, t), cs in by_task.items())
            with self._session(write=True) as (col, tasks):
                got = col.get(ids=list(batch), include=["metadatas", "documents", "embeddings"])
                stored = _stored(got)
                metas = dict(zip(got["ids"], got["metadatas"]))
                aggregates = {}
                for rid, (key, contribs) in batch.items():
                    old = unpack(metas[rid], rid)["contributions"] if rid in metas else []
                    by_run = {c["run_id"]: c for c in old}
                    by_run.update({c["run_id"]: c for c in contribs})
                    aggregates[rid] = (key, list(by_run.values()))
                taskindex.merge(tasks, by_task, self._embed_cached)
                self._write(col, aggregates, stored, vectors)
            if progress is not None:
                progress(min(start + batch_size, total), total)
        return data.entries

    # -- reading

    def export(self, path: str | Path) -> int:
        """Write every principle, with all its contributions and their provenance, to a JSON file;
        returns how many. Embeddings are left out (``import_`` recomputes them), so the file moves
        between models. The file is written to a temporary name and renamed: never half a file.
        """
        records = self._records(None, contributions=True)
        write_export(path, records, self.embedding_name)
        return len(records)

    def _records(self, filt: dict | None, *, contributions: bool = False) -> list[dict[str, Any]]:
        recs: list[dict[str, Any]] = []
        with self._session() as (col, _):
            offset = 0
            while True:
                got = col.get(where=filt, include=["metadatas", "documents"], limit=PAGE, offset=offset)
                recs += [to_record(rid, doc, unpack(meta, rid), contributions=contributions)
                         for rid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"])]
                if len(got["ids"]) < PAGE:
                    break
                offset += PAGE
        recs.sort(key=sort_key)
        return recs

    def list(
        self, space: str | None = None, task: str | None = None, *, run_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Every principle (optionally of one space/task, or stated by one run), sorted by key."""
        recs = self._records(where(space, task))
        if run_id is not None:
            recs = [r for r in recs if run_id in r["sources"]]
        return recs

    def get(self, id: str) -> dict[str, Any]:
        """One principle with all its contributions; ``PrincipleNotFound`` if absent."""
        with self._session() as (col, _):
            got = col.get(ids=[id], include=["metadatas", "documents"])
        if not got["ids"]:
            raise PrincipleNotFound(
                f"no principle {id!r} in the memory at {self.location}; `archlore memory list` shows the ids"
            )
        return to_record(got["ids"][0], got["documents"][0], unpack(got["metadatas"][0], id), contributions=True)

    def count(self, space: str | None = None, task: str | None = None) -> int:
        """How many principles (records, not contributions) the memory holds."""
        with self._session() as (col, _):
            filt = where(space, task)
            return col.count() if filt is None else len(col.get(where=filt, include=[])["ids"])

    def data_tasks(self, space: str | None = None) -> set[str]:
        """Every task named in any contribution's provenance (of one space, or all): what a
        benchmark checks to refuse a memory that already saw its target's data. Contains
        ``"unknown"`` when the memory holds principles of unknown origin (migrated or old imports).
        """
        with self._session() as (_, tasks):
            return taskindex.data_tasks(tasks, space)

    def query(
        self, text: str, *, space: str | None = None, task: str | None = None, k: int = 5,
        position: str | None = None, choice: str | None = None, direction: str | None = None,
    ) -> list[dict[str, Any]]:
        """The k principles whose sentence is closest to ``text``, each with ``similarity``.

        ``similarity`` is the cosine similarity (1 - Chroma's cosine distance), so in [-1, 1].
        ``position``, ``choice`` and ``direction`` (prefer/avoid) filter exactly, before ranking by
        meaning. Each result carries ``conflict``: None, or the opposite principle (same space,
        task, position and choice) and which side the evidence supports (``memory.conflicts``).
        """
        if k < 1:
            raise MemoryStoreError(f"k must be at least 1, got {k}")
        if direction is not None and direction not in OPPOSITE:
            raise MemoryStoreError(f"direction must be prefer or avoid, got {direction!r}")
        extra = [{f: v} for f, v in (("position", position), ("choice", choice), ("direction", direction)) if v is not None]
        vec = self._embed_cached([text])[text]
        with self._session() as (col, _):
            n = col.count()
            if n == 0:
                return []
            got = col.query(
                query_embeddings=[vec],
                n_results=min(k, n),
                where=where(space, task, extra),
                include=["metadatas", "documents", "distances"],
            )
            out = []
            rows = zip(got["ids"][0], got["documents"][0], got["metadatas"][0], got["distances"][0])
            for rid, doc, meta, dist in rows:
                rec = to_record(rid, doc, unpack(meta, rid))
                rec["id"] = rid
                rec["similarity"] = round(1.0 - float(dist), 6)
                out.append(rec)
            opposites = self._opposites(col, out)
        return annotate(out, opposites)

    def _opposites(self, col: Any, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """For each record, the stored principle saying the opposite (same key, other direction)."""
        want = {principle_id(r["space"], r["task"], r["position"], r["choice"], OPPOSITE[r["direction"]]): r["id"]
                for r in records}
        if not want:
            return {}
        got = col.get(ids=list(want), include=["metadatas", "documents"])
        return {want[oid]: to_record(oid, doc, unpack(meta, oid)) | {"id": oid}
                for oid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"])}

    def conflicts(self, space: str | None = None, task: str | None = None) -> list[dict[str, Any]]:
        """Every "prefer X"/"avoid X" pair at one position (of one space/task), with the side the
        evidence supports and why (``memory.conflicts.find_conflicts``)."""
        return find_conflicts(self.list(space, task))

    def recall(
        self,
        space: str,
        task_description: str,
        evidence_text: str = "",
        *,
        k: int = 10,
        exclude_tasks: Sequence[str] = (),
        exclude_runs: Sequence[str] = (),
        exclude_data: Sequence[str] = (),
        include_unknown: bool = False,
        resolve_conflicts: bool = False,
    ) -> list[Recalled]:
        """Principles from the most similar past tasks of ``space``, best first (scoring:
        ``archlore.memory.ranking``).

        A past task without a description is compared by its name. Without ``task_description``
        similarity is the evidence similarity alone; with neither text every task counts as
        equally similar (1). ``exclude_tasks`` drops whole tasks (what they were stored for);
        ``exclude_runs`` drops those runs' contributions, and ``exclude_data`` every contribution
        whose data tasks include one of these (a principle only they stated disappears, one others
        also stated is recomputed without them), so an experiment can keep its target's data out of
        its prior. Contributions of unknown data origin are left out unless ``include_unknown``.
        With ``resolve_conflicts``, of a "prefer X"/"avoid X" pair of one task only the side with the
        stronger evidence is handed out (``memory.conflicts``); without it both come, flagged.

        The whole space is not read. From the task index and the principles nearest to the
        evidence text, every task gets an upper bound on what its principles can score (see
        ``ranking.bound``); tasks are read whole (so outcome scaling and conflicts stay exact), the
        highest bound first, until the k-th score read is at least the next task's bound (then the
        result is exact) or about ``k * CANDIDATES_PER_RESULT`` principles were read (then it is the
        best of those: the tasks most similar to the query). The bounds of unread tasks use the
        index's description and confidence, from all contributions, before exclusions.
        """
        if k < 1:
            raise MemoryStoreError(f"k must be at least 1, got {k}")
        for name, value in (("exclude_tasks", exclude_tasks), ("exclude_runs", exclude_runs),
                            ("exclude_data", exclude_data)):
            _unlisted(name, value)
        runs = set(exclude_runs)
        data = set(exclude_data) | (set() if include_unknown else {UNKNOWN})
        has_task, has_ev = bool(task_description), bool(evidence_text)
        query_vecs = self._embed_cached(t for t in (task_description, evidence_text) if t)
        evidence = query_vecs[evidence_text] if has_ev else None
        budget = k * CANDIDATES_PER_RESULT
        left_out = set(exclude_tasks)
        with self._session() as (col, tasks):
            index = [(m, e) for m, e in self._task_index(tasks)
                     if m["space"] == space and m["task"] not in left_out]
            if not index:
                return []
            task_sims: dict[str, float] = {}
            descriptions: dict[str, str] = {}
            conf_max: dict[str, float] = {}
            for meta, emb in index:
                name = meta["task"]
                descriptions[name] = taskindex.task_document(meta)
                task_sims[name] = _cos(query_vecs[task_description], emb) if has_task else 1.0
                conf_max[name] = float(meta.get("confidence_max", 1.0))
            evid_floor, evid_max = 0.0, {}
            if has_ev:
                # Unfiltered: a `where` makes Chroma list every matching id first (~10x slower), and
                # a principle that is not a hit is no closer than the last hit, whatever its space.
                hits = col.query(query_embeddings=[evidence], n_results=budget, include=["metadatas", "distances"])
                for meta, dist in zip(hits["metadatas"][0], hits["distances"][0]):
                    if meta["space"] == space and meta["task"] in task_sims:
                        evid_max.setdefault(meta["task"], max(0.0, 1.0 - float(dist)))
                if len(hits["ids"][0]) >= budget:  # fewer: every principle was a hit
                    evid_floor = max(0.0, 1.0 - float(hits["distances"][0][-1]))

            def task_bound(name: str) -> float:
                return bound(task_sims[name], evid_max.get(name, evid_floor), conf_max[name],
                             has_task=has_task, has_evidence=has_ev)

            queue = sorted(task_sims, key=lambda t: (-task_bound(t), t))
            scored: list[Scored] = []
            read, done, step = 0, 0, 4
            while done < len(queue):
                chunk = queue[done:done + step]
                done, step = done + len(chunk), step * 2
                by_task = self._task_rows(col, space, chunk, runs, data)
                for name, rows in by_task.items():
                    read += len(rows)
                    scored += [s for s in score_task(rows, task_sims[name], evidence, has_task=has_task)
                               if not (resolve_conflicts and s.weaker)]
                if len(scored) < k or done == len(queue):
                    continue
                top = best(scored, k)
                if top[-1].score >= task_bound(queue[done]):
                    break  # no unread task can reach the top k: exact
                if read >= budget:
                    break  # enough candidates read: the best of them
        return [recalled(s, descriptions[s.row.meta["task"]]) for s in best(scored, k)]

    def _task_index(self, tasks: Any) -> list[tuple[dict[str, Any], np.ndarray]]:
        """Every entry of the task index, read again only when someone wrote since the last read."""
        generation = self._backend.generation()
        if generation is not None and self._index is not None and self._index[0] == generation:
            return self._index[1]
        got = tasks.get(include=["metadatas", "embeddings"])
        entries = [(m, np.asarray(e, dtype=np.float32)) for m, e in zip(got["metadatas"], got["embeddings"])]
        self._index = None if generation is None else (generation, entries)
        return entries

    def _task_rows(
        self, col: Any, space: str, names: list[str], runs: set[str], data: set[str]
    ) -> dict[str, list[Row]]:
        """Every principle of these tasks by task, with excluded contributions taken out."""
        got = col.get(where=where(space, None, [{"task": {"$in": names}}]),
                      include=["metadatas", "documents", "embeddings"])
        rows: dict[str, list[Row]] = {}
        changed: list[tuple[str, str, dict[str, Any]]] = []
        for rid, doc, meta, emb in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"]):
            flat = unpack(meta, rid)
            if not data.isdisjoint(flat["data_tasks"]) or not runs.isdisjoint(flat["sources"]):
                kept = [c for c in flat["contributions"] if not excluded(c, runs, data)]
                if not kept:
                    continue
                if len(kept) < len(flat["contributions"]):
                    new_doc, new_meta = aggregate(key_of(flat), kept)
                    flat = unpack(new_meta)
                    if new_doc != doc:
                        changed.append((rid, new_doc, flat))
                        continue
            rows.setdefault(flat["task"], []).append(Row(rid, doc, flat, np.asarray(emb, dtype=np.float32)))
        if changed:  # texts only the excluded runs' best contribution had: embed the survivor's
            vectors = self._embed_cached(doc for _, doc, _ in changed)
            for rid, doc, meta in changed:
                rows.setdefault(meta["task"], []).append(Row(rid, doc, meta, vectors[doc]))
        return rows

def _stored(got: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """id -> (document, embedding) of a Chroma ``get`` result."""
    embs = got.get("embeddings")
    if embs is None:
        embs = [None] * len(got["ids"])
    return {rid: (doc, emb) for rid, doc, emb in zip(got["ids"], got["documents"], embs)}


def _cos(a: np.ndarray, b: Any) -> float:
    from archlore.memory.ranking import cos

    return cos(a, np.asarray(b, dtype=np.float32))


def _peek(backend: Backend) -> dict[str, Any] | None:
    """The principles collection's metadata in an existing memory, or None for a new memory."""
    from chromadb.errors import NotFoundError

    with backend.session() as client:
        try:
            col = client.get_collection(COLLECTION, embedding_function=None)
        except (NotFoundError, ValueError):
            return None
        return dict(col.metadata or {})


def _resolve_embedding(backend: Backend, embedding: str | Any) -> Any:
    if embedding == "auto":
        meta = _peek(backend) or {}
        built = meta.get("embedding")
        embedding = (embedding_option(built) if built else None) or "minilm"
    return get_embedding(embedding)


def open_store(
    location: str | Path | None = None,
    *,
    embedding: str | Any = "minilm",
    lock_timeout: float = 120.0,
) -> PrincipleStore:
    """Open (creating if needed) the principle memory.

    ``location``: None -> ``$ARCHLORE_MEMORY`` or the per-user data folder; a path -> a Chroma
    folder there; ``http://host:port`` -> a ``chroma run`` server shared by a team.
    ``embedding``: ``"minilm"`` (default), ``"hash"``, an embedding function, or ``"auto"``
    (whatever an existing memory was built with, MiniLM for a new one). Opening a memory with
    another embedding than it was built with raises ``EmbeddingMismatch``; a memory written before
    provenance raises ``MemoryNeedsMigration`` (``archlore memory migrate``; ``archlore.memory.migrate``).
    ``lock_timeout``: seconds to wait for another process's write before giving up.
    """
    backend = open_backend(default_location() if location is None else location, lock_timeout=lock_timeout)
    try:
        return PrincipleStore(backend, _resolve_embedding(backend, embedding))
    except BaseException:
        backend.close()
        raise
