"""The task index: one entry per (space, task) in a second Chroma collection, ``principle_tasks``.

Each entry holds the task's latest non-empty description (what recall compares a new
task with), the union of its data tasks and the highest confidence any contribution gave (which
bounds what its principles can score). Remembering and importing only ever *merge* into an entry
(union, max, latest wins), so an entry written before its records, or twice, is still right;
forgetting recomputes the entry from the records that are left.

``recall`` reads the index of a space (a few hundred entries, not tens of thousands of principles)
to rank tasks by similarity before it reads any principle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from archlore.memory.aggregate import Contribution, unpack, where
from archlore.memory.record import UNKNOWN

COLLECTION = "principle_tasks"

Embed = Callable[[Iterable[str]], dict[str, np.ndarray]]


def task_id(space: str, task: str) -> str:
    """The id of a task's entry in the task index."""
    return "t-" + hashlib.sha256(f"{space}\x1f{task}".encode()).hexdigest()[:16]


def task_entry(space: str, task: str, contributions: Iterable[Contribution]) -> dict[str, Any]:
    """The index metadata of a task, from (some of) its contributions."""
    entry = {"space": space, "task": task, "description": "", "description_stamp": -1.0,
             "description_run": "", "data_tasks": "[]", "confidence_max": 0.0}
    return merge_task_entry(entry, contributions)


def merge_task_entry(entry: dict[str, Any], contributions: Iterable[Contribution]) -> dict[str, Any]:
    """``entry`` with more contributions folded in: data tasks united, the latest description kept."""
    out = dict(entry)
    data = set(json.loads(out.get("data_tasks", "[]")))
    for c in contributions:
        data.update(c.get("data_tasks") or [UNKNOWN])
        out["confidence_max"] = max(float(out.get("confidence_max", 1.0)), float(c["confidence"]))
        if c.get("task_description"):
            stamp = (float(c["created"]), c["run_id"])
            if stamp > (float(out["description_stamp"]), out["description_run"]):
                out.update(description=c["task_description"], description_stamp=stamp[0],
                           description_run=stamp[1])
    out["data_tasks"] = json.dumps(sorted(data))
    return out


def task_document(entry: dict[str, Any]) -> str:
    """What stands for a task in recall: its description, or its name when it has none."""
    return entry.get("description") or entry["task"]


def merge(tasks: Any, incoming: dict[tuple[str, str], list[Contribution]], embed: Embed) -> None:
    """Fold contributions into their tasks' entries (a union: safe to do before the records)."""
    ids = {task_id(*st): st for st in incoming}
    got = tasks.get(ids=list(ids), include=["metadatas", "documents"])
    old = {tid: (doc, meta) for tid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"])}
    new: dict[str, dict[str, Any]] = {}
    for tid, (space, task) in ids.items():
        before = old[tid][1] if tid in old else task_entry(space, task, [])
        entry = merge_task_entry(before, incoming[(space, task)])
        if tid not in old or entry != before:
            new[tid] = entry
    _put(tasks, new, {tid: doc for tid, (doc, _) in old.items()}, embed)


def recompute(col: Any, tasks: Any, affected: set[tuple[str, str]], embed: Embed) -> None:
    """Rebuild these tasks' entries from their records (after a forget: do it after the records,
    so that the index stays a superset if the process dies in between)."""
    by_space: dict[str, list[str]] = {}
    for space, task in affected:
        by_space.setdefault(space, []).append(task)
    contribs: dict[tuple[str, str], list[Contribution]] = {st: [] for st in affected}
    for space, names in by_space.items():
        for start in range(0, len(names), 100):
            got = col.get(where=where(space, None, [{"task": {"$in": names[start:start + 100]}}]),
                          include=["metadatas"])
            for rid, meta in zip(got["ids"], got["metadatas"]):
                contribs[(space, meta["task"])].extend(unpack(meta, rid)["contributions"])
    gone = [task_id(*st) for st, cs in contribs.items() if not cs]
    if gone:
        tasks.delete(ids=gone)
    new = {task_id(*st): task_entry(st[0], st[1], cs) for st, cs in contribs.items() if cs}
    if new:
        got = tasks.get(ids=list(new), include=["documents"])
        _put(tasks, new, dict(zip(got["ids"], got["documents"])), embed)


def rebuild(tasks: Any, by_task: dict[tuple[str, str], list[Contribution]], embed: Embed) -> None:
    """Replace the whole index with entries made from these contributions (``migrate``)."""
    stale = tasks.get(include=[])["ids"]
    if stale:
        tasks.delete(ids=stale)
    _put(tasks, {task_id(*st): task_entry(st[0], st[1], cs) for st, cs in by_task.items()}, {}, embed)


def data_tasks(tasks: Any, space: str | None) -> set[str]:
    got = tasks.get(where=where(space), include=["metadatas"])
    return {t for meta in got["metadatas"] for t in json.loads(meta.get("data_tasks", "[]"))}


def _put(tasks: Any, entries: dict[str, dict[str, Any]], old_docs: dict[str, str], embed: Embed) -> None:
    if not entries:
        return
    docs = {tid: task_document(e) for tid, e in entries.items()}
    same = [tid for tid in entries if old_docs.get(tid) == docs[tid]]
    if same:  # the embedding stays: only the metadata changes
        tasks.update(ids=same, metadatas=[entries[t] for t in same])
    fresh = [tid for tid in entries if old_docs.get(tid) != docs[tid]]
    if fresh:
        vectors = embed(docs[t] for t in fresh)
        tasks.upsert(ids=fresh, documents=[docs[t] for t in fresh],
                     metadatas=[entries[t] for t in fresh], embeddings=[vectors[docs[t]] for t in fresh])
