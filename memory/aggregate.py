"""Records and their aggregation: how contributions of many runs become one stored principle.

One Chroma record per distinct principle, identified by ``(space, task, position, choice,
direction)``. The document is the principle's sentence (that is what gets embedded); everything
else is scalar metadata so that Chroma ``where`` filters work. Each record keeps a list of
*contributions*, one per run that stated the principle (its confidence, evidence, outcome and
provenance), and its summary fields are recomputed from that list every time it changes:

- ``sources``/``count``: the runs that stated it; ``confidence``: their mean, ``confidence_max``;
- ``run_id``, ``best_metric``, ``evaluations``, ``evidence`` and the text: from the contribution
  with the best outcome (the metric is taken as higher-is-better, as validation accuracy is);
- ``data_tasks``: the union of the contributions' data tasks; ``archlore_version``: the version
  that wrote the newest contribution (``archlore_versions``: all of them).

Everything here is pure: no Chroma, no embeddings.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from archlore.memory.errors import MemoryCorrupt
from archlore.memory.record import ENCODING_VERSION, UNKNOWN, Outcome, Principle, Provenance, TaskInfo

KEY_FIELDS = ("space", "task", "position", "choice", "direction")

Contribution = dict[str, Any]
"""One run's statement of a principle, as stored (JSON) inside the record's metadata."""


def principle_id(space: str, task: str, position: str, choice: str, direction: str) -> str:
    """The deterministic id of a principle: the same statement on the same task is one record."""
    key = "\x1f".join((space, task, position, choice, direction))
    return "p-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def contribution(
    p: Principle, task: TaskInfo, outcome: Outcome, provenance: Provenance, created: float
) -> Contribution:
    return {
        "run_id": provenance.run_id,
        "text": p.text,
        "confidence": float(p.confidence),
        "evidence": p.evidence,
        "best_metric": None if outcome.best_metric is None else float(outcome.best_metric),
        "evaluations": int(outcome.evaluations),
        "task_description": task.description,
        "metric": task.metric,
        "created": created,
        "data_tasks": list(provenance.data_tasks),
        "archlore_version": provenance.archlore_version,
    }


def provenance_of(key: dict[str, str], c: Contribution) -> Provenance:
    return Provenance(space=key["space"], task=key["task"], data_tasks=c.get("data_tasks") or [UNKNOWN],
                      run_id=c["run_id"], archlore_version=c.get("archlore_version") or UNKNOWN)


def data_tasks_of(contributions: Iterable[Contribution]) -> list[str]:
    return sorted({t for c in contributions for t in (c.get("data_tasks") or [UNKNOWN])})


def excluded(c: Contribution, runs: set[str], data: set[str]) -> bool:
    """Whether ``recall`` leaves this contribution out: its run, or any of its data tasks, is excluded."""
    return c["run_id"] in runs or not data.isdisjoint(c.get("data_tasks") or [UNKNOWN])


def _outcome_rank(c: Contribution) -> tuple[bool, float, float, str]:
    bm = c.get("best_metric")
    return (bm is not None, -math.inf if bm is None else bm, c["created"], c["run_id"])


def aggregate(key: dict[str, str], contributions: Sequence[Contribution]) -> tuple[str, dict[str, Any]]:
    """(document, Chroma metadata) of a record, recomputed from its contributions only.

    The metadata holds the key fields as scalars (what ``where`` filters use) and everything else
    as one JSON string, ``record``: Chroma stores a record's metadata one key per row, and reading
    twenty keys per principle was three times slower than reading one.
    """
    contribs = sorted(contributions, key=lambda c: (c["created"], c["run_id"]))
    best = max(contribs, key=_outcome_rank)
    confidences = [c["confidence"] for c in contribs]
    description = next((c["task_description"] for c in reversed(contribs) if c["task_description"]), "")
    summary: dict[str, Any] = {
        "confidence": round(sum(confidences) / len(confidences), 6),
        "confidence_max": max(confidences),
        "evidence": best["evidence"],
        "task_description": description,
        "metric": contribs[-1]["metric"],
        "run_id": best["run_id"],
        "best_metric": best["best_metric"],
        "evaluations": best["evaluations"],
        "sources": [c["run_id"] for c in contribs],
        "count": len(contribs),
        "data_tasks": data_tasks_of(contribs),
        "archlore_version": contribs[-1].get("archlore_version") or UNKNOWN,
        "archlore_versions": sorted({c.get("archlore_version") or UNKNOWN for c in contribs}),
        "created": min(c["created"] for c in contribs),
        "updated": max(c["created"] for c in contribs),
        "contributions": contribs,
    }
    meta = {**key, "encoding_version": ENCODING_VERSION, "record": json.dumps(summary, sort_keys=True)}
    return best["text"], meta


def key_of(meta: dict[str, Any]) -> dict[str, str]:
    return {f: meta[f] for f in KEY_FIELDS}


def unpack(meta: dict[str, Any], rid: str = "") -> dict[str, Any]:
    """A record's metadata as one flat dict: key fields, summary fields, parsed contributions.

    Reads both layouts: encoding 2 (``record`` JSON) and encoding 1 (flat keys, no provenance;
    met only while migrating). A record that is neither raises ``MemoryCorrupt`` naming the fix.
    """
    try:
        return _unpack(meta)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        name = rid or principle_id(*(str((meta or {}).get(f, "")) for f in KEY_FIELDS))
        raise MemoryCorrupt(
            f"the stored principle {name} is damaged ({exc.__class__.__name__}: {str(exc)[:120]}); "
            f"remove it with `archlore memory forget --id {name}`"
        ) from exc


def _unpack(meta: dict[str, Any]) -> dict[str, Any]:
    if "record" in meta:
        flat = json.loads(meta["record"])
        flat.update(key_of(meta), encoding_version=meta.get("encoding_version", ENCODING_VERSION))
        return flat
    contribs = json.loads(meta.get("contributions", "[]"))
    return {
        **key_of(meta),
        "confidence": meta["confidence"],
        "confidence_max": meta.get("confidence_max", meta["confidence"]),
        "evidence": meta.get("evidence", ""),
        "task_description": meta.get("task_description", ""),
        "metric": meta.get("metric", ""),
        "run_id": meta.get("run_id", ""),
        "best_metric": meta.get("best_metric"),
        "evaluations": meta.get("evaluations", 0),
        "sources": json.loads(meta.get("sources", "[]")),
        "count": meta.get("count", 1),
        "data_tasks": data_tasks_of(contribs),
        "archlore_version": UNKNOWN,
        "archlore_versions": [UNKNOWN],
        "created": meta.get("created"),
        "updated": meta.get("updated"),
        "contributions": contribs,
        "encoding_version": meta.get("encoding_version", 1),
    }


PUBLIC_FIELDS = (
    "space", "task", "task_description", "metric", "position", "choice", "direction", "confidence",
    "confidence_max", "evidence", "run_id", "sources", "count", "best_metric", "evaluations", "data_tasks",
    "archlore_version", "archlore_versions", "encoding_version", "created", "updated",
)


def to_record(rid: str, doc: str, flat: dict[str, Any], *, contributions: bool = False) -> dict[str, Any]:
    """The plain dict handed out by ``list``/``get``/``query`` (``flat``: from ``unpack``)."""
    rec = {"id": rid, "text": doc, **{f: flat.get(f) for f in PUBLIC_FIELDS}}
    if contributions:
        rec["contributions"] = flat["contributions"]
    return rec


def sort_key(rec: dict[str, Any]) -> tuple[str, ...]:
    return tuple(rec[f] for f in KEY_FIELDS)


def where(space: str | None = None, task: str | None = None, extra: Sequence[dict] = ()) -> dict | None:
    """A Chroma ``where`` filter: every clause must hold."""
    clauses: list[dict] = []
    if space is not None:
        clauses.append({"space": space})
    if task is not None:
        clauses.append({"task": task})
    clauses.extend(extra)
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
