"""The principle record: what the analyst writes and the memory keeps, and where it came from."""

from __future__ import annotations

from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENCODING_VERSION = 2
"""How records are laid out in the store. 1: no provenance. 2: every contribution carries its
``data_tasks`` and ``archlore_version`` (``archlore memory migrate`` turns 1 into 2)."""

UNKNOWN = "unknown"
"""The data task of a contribution written before provenance was recorded (encoding 1 stores and
export files). ``recall`` leaves such contributions out unless asked for them."""


class Principle(BaseModel):
    """A design principle: one sentence plus one structured effect on the search space."""

    model_config = ConfigDict(frozen=True)

    text: str = Field(max_length=400, description="the principle as one sentence")
    position: str = Field(max_length=40, description="position name, e.g. edge3<-0, or '*' for all")
    choice: str = Field(max_length=40, description="choice name at that position, e.g. nor_conv_3x3")
    direction: Literal["prefer", "avoid"]
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: str = Field(default="", max_length=400, description="the numbers behind it")


class TaskInfo(BaseModel):
    """The task a principle came from."""

    space: str
    task: str
    description: str = ""
    metric: str = "validation accuracy"


class Outcome(BaseModel):
    """How the run that produced the principles ended."""

    best_metric: float | None = None
    evaluations: int = 0


class Provenance(BaseModel):
    """Where one contribution to a stored principle came from.

    ``data_tasks`` are the tasks whose *data* produced it: the source tasks the analyst read, plus
    the target when the run's own evaluations were used. A benchmark on task T must not recall a
    principle whose data included T, whatever task it was stored for.
    """

    model_config = ConfigDict(frozen=True)

    space: str = Field(min_length=1)
    task: str = Field(min_length=1, description="the task the principle was stored for")
    data_tasks: tuple[str, ...] = Field(min_length=1, description="tasks whose data produced it, sorted")
    run_id: str = Field(min_length=1)
    archlore_version: str = Field(min_length=1)

    @field_validator("data_tasks", mode="before")
    @classmethod
    def _sorted_unique(cls, value: object) -> object:
        if isinstance(value, str):  # a bare string would otherwise become its characters
            raise ValueError("data_tasks must be a list of task names, not one string")
        if isinstance(value, (list, tuple, set, frozenset)):
            if not all(isinstance(t, str) and t.strip() for t in value):
                raise ValueError("every data task must be a non-empty string")
            return tuple(sorted({t.strip() for t in value}))
        return value


@cache
def archlore_version() -> str:
    """The installed archlore's version, or ``"unknown"`` when it runs from an uninstalled tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("archlore")
    except PackageNotFoundError:
        return UNKNOWN
