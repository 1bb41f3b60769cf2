"""The export file: every principle with all its contributions and their provenance, as JSON.

Embeddings are left out (import recomputes them), so a file moves between embedding models.

Format versions: 1 (archlore before provenance) has no ``data_tasks``; its contributions import
with ``data_tasks=["unknown"]``, which ``recall`` leaves out unless asked (as ``archlore memory
migrate`` does for an old store). From format 2 on, every contribution must name its data tasks: a
principle of unknown data origin is not importable by accident.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from archlore.memory.aggregate import KEY_FIELDS, Contribution, principle_id
from archlore.memory.errors import MemoryFormatError, MemoryStoreError
from archlore.memory.record import ENCODING_VERSION, UNKNOWN, Principle, archlore_version

EXPORT_FORMAT = "archlore-memory"
EXPORT_VERSION = 2
_FIX = "pass a file made by `archlore memory export`"


def _data_tasks(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError("data_tasks must be a list of task names, not one string")
    if value is not None and (not value or not all(isinstance(t, str) and t.strip() for t in value)):
        raise ValueError("data_tasks must name at least one task, each a non-empty string")
    return value


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
    data_tasks: list[str] | None = None
    archlore_version: str | None = None

    _check_data_tasks = field_validator("data_tasks", mode="before")(_data_tasks)


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
    data_tasks: list[str] | None = None
    contributions: list[_Contribution] | None = None

    _check_data_tasks = field_validator("data_tasks", mode="before")(_data_tasks)

    def to_contributions(self, legacy: bool) -> list[Contribution]:
        if self.contributions:
            contribs = [c.model_dump() for c in self.contributions]
        else:  # a hand-written entry: one contribution from its top-level fields
            contribs = [
                _Contribution(
                    run_id=self.run_id, text=self.text, confidence=self.confidence, evidence=self.evidence,
                    best_metric=self.best_metric, evaluations=self.evaluations,
                    task_description=self.task_description, metric=self.metric, created=self.created or 0.0,
                    data_tasks=self.data_tasks,
                ).model_dump()
            ]
        for i, c in enumerate(contribs):
            if c["data_tasks"] is None:
                if not legacy:
                    raise _MissingProvenance(i if self.contributions else None)
                c["data_tasks"] = [UNKNOWN]
            c["data_tasks"] = sorted({t.strip() for t in c["data_tasks"]})
            c["archlore_version"] = c["archlore_version"] or UNKNOWN
            Principle(  # the same limits as a principle the analyst writes
                text=c["text"], position=self.position, choice=self.choice, direction=self.direction,
                confidence=c["confidence"], evidence=c["evidence"],
            )
        return contribs


class _ExportFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: Literal["archlore-memory"]
    format_version: int = Field(ge=1)
    encoding_version: int = 1
    principles: list[_ExportedPrinciple]


class _MissingProvenance(Exception):
    def __init__(self, contribution: int | None) -> None:
        self.contribution = contribution


@dataclass(frozen=True)
class ExportData:
    """A validated export file, merged by principle id: id -> (key, contributions)."""

    principles: dict[str, tuple[dict[str, str], list[Contribution]]]
    entries: int
    format_version: int


def read_export(path: str | Path) -> ExportData:
    """Read and validate an export file; every problem is a ``MemoryFormatError`` naming the fix."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MemoryFormatError(f"cannot read {path}: {exc.strerror or exc}; {_FIX}") from exc
    except UnicodeDecodeError as exc:
        raise MemoryFormatError(f"{path} is not text ({exc.reason}); {_FIX}") from exc
    except json.JSONDecodeError as exc:
        raise MemoryFormatError(f"{path} is not JSON ({exc}); {_FIX}") from exc
    if isinstance(raw, dict):
        fv, ev = raw.get("format_version"), raw.get("encoding_version", 1)
        if isinstance(fv, int) and isinstance(ev, int) and (fv > EXPORT_VERSION or ev > ENCODING_VERSION):
            raise MemoryFormatError(
                f"{path} was written by a newer archlore (format {fv}, encoding {ev}); "
                "upgrade archlore to import it"
            )
    try:
        data = _ExportFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "the file"
        raise MemoryFormatError(
            f"{path} is not an archlore memory export: {where}: {first['msg']} "
            f"({exc.error_count()} problem(s)); {_FIX}"
        ) from None
    legacy = data.format_version < 2
    incoming: dict[str, tuple[dict[str, str], list[Contribution]]] = {}
    for i, entry in enumerate(data.principles):
        key = {f: getattr(entry, f) for f in KEY_FIELDS}
        rid = principle_id(**key)
        try:
            contribs = entry.to_contributions(legacy)
        except _MissingProvenance as exc:
            at = f"principles.{i}" + ("" if exc.contribution is None else f".contributions.{exc.contribution}")
            raise MemoryFormatError(
                f"{path}: {at} has no data_tasks (format {data.format_version} requires them); add the "
                'tasks whose data produced the principle, or ["unknown"] to import it as of unknown origin'
            ) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            raise MemoryFormatError(
                f"{path} is not an archlore memory export: principles.{i}: "
                f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}; {_FIX}"
            ) from None
        merged = {c["run_id"]: c for c in incoming.get(rid, (key, []))[1]}
        merged.update({c["run_id"]: c for c in contribs})
        incoming[rid] = (key, list(merged.values()))
    return ExportData(incoming, len(data.principles), data.format_version)


def write_export(path: str | Path, records: list[dict[str, Any]], embedding: str) -> None:
    """Write the records (with contributions) atomically: a temporary file renamed into place."""
    path = Path(path)
    payload = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "encoding_version": ENCODING_VERSION,
        "archlore_version": archlore_version(),
        "embedding": embedding,
        "exported": time.time(),
        "principles": records,
    }
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise MemoryStoreError(f"cannot write {path}: {exc.strerror or exc}; choose a writable path") from exc
