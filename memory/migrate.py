"""Bringing a memory written by an older archlore up to the current encoding, in place.

Encoding 1 -> 2 (provenance): archlore before provenance did not record which tasks' data a
principle came from, so every old contribution gets ``data_tasks=["unknown"]`` and
``archlore_version="unknown"``; ``recall`` leaves such contributions out unless it is called with
``include_unknown=True``. The collection records the migration (``migrated_from``,
``migrated_at``, ``migrated_by``), and the task index is rebuilt from the records.

The migration is explicit: ``open_store`` refuses an old memory with a one-line message naming
``archlore memory migrate``. It is safe to run again (on a current memory it only rebuilds the
task index), and a migration killed halfway is finished by running it again: the collection keeps
its old encoding until every record is rewritten, and each record carries its own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from archlore.memory import taskindex
from archlore.memory.aggregate import Contribution, aggregate, key_of, unpack
from archlore.memory.backends import open_backend
from archlore.memory.location import default_location
from archlore.memory.record import ENCODING_VERSION, UNKNOWN, archlore_version
from archlore.memory.store import PAGE, WRITE_BATCH, PrincipleStore, _peek, _resolve_embedding


def migrate_store(
    location: str | Path | None = None,
    *,
    embedding: str | Any = "auto",
    lock_timeout: float = 120.0,
) -> dict[str, Any]:
    """Migrate the memory at ``location`` (default: ``default_location()``); returns a report:
    ``location, from_encoding`` (None: no memory there), ``to_encoding, principles_migrated,
    contributions_marked_unknown, tasks_indexed``."""
    backend = open_backend(default_location() if location is None else location, lock_timeout=lock_timeout)
    try:
        if _peek(backend) is None:
            return {"location": backend.location, "from_encoding": None, "to_encoding": ENCODING_VERSION,
                    "principles_migrated": 0, "contributions_marked_unknown": 0, "tasks_indexed": 0}
        store = PrincipleStore(backend, _resolve_embedding(backend, embedding), _migrating=True)
        return _migrate(store)
    finally:
        backend.close()


def _migrate(store: PrincipleStore) -> dict[str, Any]:
    contributions = 0
    with store._session(write=True) as (col, tasks):
        before = dict(col.metadata or {})
        old_version = int(before.get("encoding_version", 1))
        records: list[tuple[str, dict[str, Any]]] = []
        offset = 0
        while True:  # read everything first: paging while rewriting could skip records
            got = col.get(include=["metadatas"], limit=PAGE, offset=offset)
            records += zip(got["ids"], got["metadatas"])
            if len(got["ids"]) < PAGE:
                break
            offset += PAGE
        by_task: dict[tuple[str, str], list[Contribution]] = {}
        ids, metas = [], []
        for rid, meta in records:
            contribs = unpack(meta, rid)["contributions"]
            if int(meta.get("encoding_version", 1)) < ENCODING_VERSION:
                for c in contribs:
                    c.setdefault("data_tasks", [UNKNOWN])
                    c.setdefault("archlore_version", UNKNOWN)
                new_meta = aggregate(key_of(meta), contribs)[1]
                ids.append(rid)  # Chroma merges metadata on update: drop the old flat keys
                metas.append({**{k: None for k in meta if k not in new_meta}, **new_meta})
                contributions += len(contribs)
            by_task.setdefault((meta["space"], meta["task"]), []).extend(contribs)
        for start in range(0, len(ids), WRITE_BATCH):
            # documents and embeddings stay: the same contributions give the same text
            col.update(ids=ids[start:start + WRITE_BATCH], metadatas=metas[start:start + WRITE_BATCH])
        taskindex.rebuild(tasks, by_task, store._embed_cached)
        if old_version < ENCODING_VERSION:
            col.modify(metadata={**before, "encoding_version": ENCODING_VERSION, "migrated_from": old_version,
                                 "migrated_at": time.time(), "migrated_by": archlore_version()})
    return {"location": store.location, "from_encoding": old_version, "to_encoding": ENCODING_VERSION,
            "principles_migrated": len(ids), "contributions_marked_unknown": contributions,
            "tasks_indexed": len(by_task)}
