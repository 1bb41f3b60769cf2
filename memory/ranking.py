"""How ``recall`` ranks principles of past tasks for a new one. Pure functions: no Chroma.

For each principle, with cos⁺ the cosine clipped at 0:

    task_sim   = cos⁺(E(new task description), E(description of the principle's task))
    evid_sim   = cos⁺(E(evidence text), E(principle sentence))
    similarity = 0.75·task_sim + 0.25·evid_sim   (task_sim alone without evidence text,
                                                  evid_sim alone without a task description)
    outcome    = the run's best metric scaled to [0, 1] among the principles of the same task
                 (1 when they all tie, 0.5 when unknown)
    score      = similarity · (0.5 + 0.25·confidence + 0.25·outcome)

A task's principles score at most ``bound``: its task similarity with the highest evidence
similarity any of them can have, times the factor with its highest confidence and the best outcome.
That is what lets ``recall`` read only the tasks that can still make the top k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from archlore.memory.aggregate import provenance_of
from archlore.memory.conflicts import find_conflicts
from archlore.memory.record import Outcome, Principle, Provenance, TaskInfo

TASK_WEIGHT = 0.75
EVIDENCE_WEIGHT = 0.25
BASE = 0.5
CONFIDENCE_WEIGHT = 0.25
OUTCOME_WEIGHT = 0.25


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
    data_tasks: tuple[str, ...] = ()
    """The tasks whose data produced the contributions recalled (the union of ``provenance``)."""
    provenance: tuple[Provenance, ...] = field(default=())
    """One entry per contribution (run) that recall kept, oldest first."""
    weaker: bool = False
    """In a conflict, the side with the weaker evidence (``memory.conflicts.evidence_weight``)."""


@dataclass(frozen=True)
class Row:
    """One stored principle as recall sees it (``meta``: ``aggregate.unpack``), after excluded
    contributions were taken out."""

    id: str
    doc: str
    meta: dict[str, Any]
    vector: np.ndarray


def cos(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity clipped at 0."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return max(0.0, float(np.dot(a, b)) / (na * nb))


def similarity(task_sim: float, evid_sim: float, *, has_task: bool, has_evidence: bool) -> float:
    if has_task and has_evidence:
        return TASK_WEIGHT * task_sim + EVIDENCE_WEIGHT * evid_sim
    if has_evidence:
        return evid_sim
    return task_sim if has_task else 1.0


def bound(task_sim: float, evid_max: float, confidence_max: float, *, has_task: bool, has_evidence: bool) -> float:
    """The best score a principle of a task can reach, if none of its principles is closer to the
    evidence than ``evid_max`` and no contribution is more confident than ``confidence_max``."""
    sim = similarity(task_sim, evid_max, has_task=has_task, has_evidence=has_evidence)
    return sim * (BASE + CONFIDENCE_WEIGHT * confidence_max + OUTCOME_WEIGHT)


def _scaled(value: float | None, lo: float, hi: float) -> float:
    if value is None or lo > hi:
        return 0.5
    return 1.0 if hi == lo else (value - lo) / (hi - lo)


@dataclass(frozen=True)
class Scored:
    score: float
    similarity: float
    conflicts: bool
    row: Row
    weaker: bool = False


def score_task(rows: Sequence[Row], task_sim: float, evidence: np.ndarray | None, *, has_task: bool) -> list[Scored]:
    """Every principle of one task scored (all of the task's rows must be given: the outcome is
    scaled among them, and conflicts are found among them)."""
    metrics = [r.meta["best_metric"] for r in rows if r.meta.get("best_metric") is not None]
    lo, hi = (min(metrics), max(metrics)) if metrics else (1.0, 0.0)
    directions: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        directions.setdefault((r.meta["position"], r.meta["choice"]), set()).add(r.meta["direction"])
    weaker = {c["weaker"]["id"] for c in find_conflicts({**r.meta, "id": r.id} for r in rows)}
    evid = np.zeros(len(rows), dtype=np.float32)
    if evidence is not None and rows:
        mat = np.stack([r.vector for r in rows])
        norms = np.linalg.norm(mat, axis=1) * float(np.linalg.norm(evidence))
        evid = np.where(norms > 0, mat @ evidence / np.where(norms > 0, norms, 1.0), 0.0).clip(min=0.0)
    out = []
    for r, ev in zip(rows, evid):
        m = r.meta
        sim = similarity(task_sim, float(ev), has_task=has_task, has_evidence=evidence is not None)
        outcome = _scaled(m.get("best_metric"), lo, hi)
        total = sim * (BASE + CONFIDENCE_WEIGHT * m["confidence"] + OUTCOME_WEIGHT * outcome)
        out.append(Scored(round(total, 6), round(sim, 6), len(directions[(m["position"], m["choice"])]) > 1, r,
                          r.id in weaker))
    return out


def best(scored: Sequence[Scored], k: int) -> list[Scored]:
    """The k best, by score then id."""
    return sorted(scored, key=lambda s: (-s.score, s.row.id))[:k]


def recalled(s: Scored, description: str) -> Recalled:
    """The ``Recalled`` handed out for a scored principle (``description``: its task's, from the index)."""
    m, r = s.row.meta, s.row
    key = {"space": m["space"], "task": m["task"]}
    contribs = sorted(m["contributions"], key=lambda c: (c["created"], c["run_id"]))
    provenance = tuple(provenance_of(key, c) for c in contribs)
    return Recalled(
        id=r.id,
        principle=Principle(
            text=r.doc, position=m["position"], choice=m["choice"], direction=m["direction"],
            confidence=m["confidence"], evidence=m.get("evidence", ""),
        ),
        task=TaskInfo(
            space=m["space"], task=m["task"],
            description=m.get("task_description") or (description if description != m["task"] else ""),
            metric=m.get("metric", "validation accuracy"),
        ),
        run_ids=tuple(m["sources"]),
        outcome=Outcome(best_metric=m.get("best_metric"), evaluations=m.get("evaluations", 0)),
        count=m.get("count", 1),
        similarity=s.similarity,
        score=s.score,
        conflicts=s.conflicts,
        weaker=s.weaker,
        data_tasks=tuple(sorted({t for p in provenance for t in p.data_tasks})),
        provenance=provenance,
    )
