"""The principle record: what the analyst writes and the memory keeps."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ENCODING_VERSION = 1


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
