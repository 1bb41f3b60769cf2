"""Conflicting principles: "prefer X" and "avoid X" at one position, for one space and task.

The store keeps both (each is what some runs saw); this module says which one the evidence
supports. The stronger side is the one stated by more runs; on a tie, the higher mean confidence;
then the better best metric of its runs; then the more recent. `recall` hands out only the
stronger side of a conflict within a task (the weaker is named in `Recalled.outweighs`), and
`memory list`/`query` show every conflict with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

OPPOSITE = {"prefer": "avoid", "avoid": "prefer"}


def evidence_weight(rec: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """What a side of a conflict weighs: (runs, mean confidence, best metric, last update)."""
    best = rec.get("best_metric")
    return (float(rec.get("count") or 1), float(rec.get("confidence") or 0.0),
            float("-inf") if best is None else float(best), float(rec.get("updated") or 0.0))


def why(stronger: Mapping[str, Any], weaker: Mapping[str, Any]) -> str:
    a, b = evidence_weight(stronger), evidence_weight(weaker)
    if a[0] != b[0]:
        return f"stated by {int(a[0])} run(s) against {int(b[0])}"
    if a[1] != b[1]:
        return f"mean confidence {a[1]:.2f} against {b[1]:.2f} (as many runs)"
    if a[2] != b[2]:
        return f"its runs found better cells ({a[2]:.4g} against {b[2]:.4g})"
    return "stated more recently (the evidence is otherwise even)"


def conflict_key(rec: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (rec["space"], rec["task"], rec["position"], rec["choice"])


def find_conflicts(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every conflict among `records`: `{key, stronger, weaker, reason}` (the records themselves)."""
    sides: dict[tuple[str, str, str, str], dict[str, Mapping[str, Any]]] = {}
    for r in records:
        sides.setdefault(conflict_key(r), {})[r["direction"]] = r
    out = []
    for key, by_dir in sorted(sides.items()):
        if len(by_dir) < 2:
            continue
        p, a = by_dir["prefer"], by_dir["avoid"]
        stronger, weaker = (p, a) if evidence_weight(p) >= evidence_weight(a) else (a, p)
        out.append({"key": dict(zip(("space", "task", "position", "choice"), key)), "stronger": stronger,
                    "weaker": weaker, "reason": why(stronger, weaker)})
    return out


def annotate(records: list[dict[str, Any]], opposites: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Add `conflict` to each record whose opposite (same key, other direction) is in `opposites`
    (by the record's id): `{with, status: stronger|weaker, reason}`."""
    for r in records:
        other = opposites.get(r["id"])
        if other is None:
            r["conflict"] = None
            continue
        stronger = evidence_weight(r) >= evidence_weight(other) if r["direction"] == "prefer" else evidence_weight(r) > evidence_weight(other)
        r["conflict"] = {
            "with": other["id"],
            "opposite": f"{other['direction']} {other['choice']} @ {other['position']}",
            "status": "stronger" if stronger else "weaker",
            "reason": why(r, other) if stronger else why(other, r),
        }
    return records
