"""The statistics the analyst asks for: what top architectures of a task have in common.

Pure functions over a list of (architecture, metric) pairs, so they work for a source table,
for the evaluations of the current run and for any user space. `Evidence` bundles the statistics
of one round (computed once, serialisable, so it travels in the graph state); `rank_choices` is the
one ranking of options by evidence that the analyst, the planner and the frequency prior share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from .errors import ConfigError
from .spaces import Arch, SearchSpace, SpaceFilter
from .tables import Table

Cells = Sequence[tuple[Arch, float]]


@dataclass(frozen=True)
class ChoiceStat:
    position: str
    choice: str
    choice_id: int
    top_count: int  # how often among the top cells
    top_share: float  # top_count / n_top
    base_share: float  # share among all cells given
    lift: float  # top_share / base_share
    mean_metric: float  # mean metric of all given cells with this choice (nan if none)

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class ChoiceEffect:
    """How cells with a choice at a position score against the cells without it."""

    position: str
    choice: str
    choice_id: int
    n_with: int
    n_cells: int
    mean_with: float
    mean_without: float
    effect: float  # (mean_with - mean_without) / std of all cells


def top_cells(table: Table, task: str, n: int) -> list[tuple[Arch, float]]:
    idx = table.ranked(task)[:n]
    return [(table.space.from_index(int(i)), float(table.valid[task][i])) for i in idx]


def all_cells(table: Table, task: str) -> list[tuple[Arch, float]]:
    v = table.valid[task]
    return [(table.space.from_index(int(i)), float(v[i])) for i in np.flatnonzero(~np.isnan(v))]


def choice_stats(space: SearchSpace, cells: Cells, n_top: int) -> list[list[ChoiceStat]]:
    """Per position, per choice: share among the top `n_top` cells vs all `cells`, mean metric."""
    if not cells:
        return [[] for _ in space.positions]
    archs = np.array([a for a, _ in cells], dtype=np.int64)
    metric = np.array([m for _, m in cells], dtype=np.float64)
    order = np.argsort(-metric, kind="stable")[: max(1, n_top)]
    out = []
    for j, pos in enumerate(space.positions):
        col, top = archs[:, j], archs[order, j]
        stats = []
        for c, name in enumerate(pos.choices):
            mask = col == c
            base = float(mask.mean())
            share = float((top == c).mean())
            stats.append(
                ChoiceStat(
                    pos.name, name, c, int((top == c).sum()), share, base,
                    share / base if base > 0 else 0.0,
                    float(metric[mask].mean()) if mask.any() else float("nan"),
                )
            )
        out.append(stats)
    return out


def choice_effects(space: SearchSpace, cells: Cells) -> list[ChoiceEffect]:
    """Every (position, choice) that some but not all cells have: its standardised mean difference."""
    if len(cells) < 2:
        return []
    archs = np.array([a for a, _ in cells])
    m = np.array([v for _, v in cells])
    sd = float(m.std()) or 1.0
    out = []
    for j, pos in enumerate(space.positions):
        for c, name in enumerate(pos.choices):
            mask = archs[:, j] == c
            n = int(mask.sum())
            if n == 0 or n == len(cells):
                continue
            with_, without = float(m[mask].mean()), float(m[~mask].mean())
            out.append(ChoiceEffect(pos.name, name, c, n, len(cells), with_, without, (with_ - without) / sd))
    return out


def rank_column(
    n_choices: int, col: Sequence[ChoiceStat] | None = None, weights: Sequence[float] | None = None
) -> list[int]:
    """One position's choice ids best first: by weight (if given), then count among the top cells,
    then mean metric, then id. Without statistics: by weight and id alone."""

    def key(c: int) -> tuple:
        count = col[c].top_count if col else 0
        mean = np.nan_to_num(col[c].mean_metric, nan=-1e18) if col else 0.0
        return (-(weights[c] if weights is not None else 0.0), -count, -mean, c)

    return sorted(range(n_choices), key=key)


def rank_choices(
    space: SearchSpace, stats: list[list[ChoiceStat]] | None = None, weights: Sequence[Sequence[float]] | None = None
) -> list[list[int]]:
    """The ranking of options by evidence (and principle weights) that every proposer shares."""
    return [
        rank_column(len(pos.choices), stats[j] if stats and stats[j] else None, weights[j] if weights is not None else None)
        for j, pos in enumerate(space.positions)
    ]


def frequency_filter(space: SearchSpace, cells: Cells, *, k: int, top_n: int) -> SpaceFilter:
    """The trivial prior: per position, the k most frequent choices among the top-N cells."""
    if k < 1:
        raise ConfigError("k must be at least 1")
    ranking = rank_choices(space, choice_stats(space, cells, top_n))
    return SpaceFilter(tuple(tuple(r[:k]) for r in ranking)).check(space)


def filter_stats(space: SearchSpace, flt: SpaceFilter, cells: Cells) -> dict:
    """Size of a candidate filter and how the given cells inside it compare with all of them."""
    inside = [m for a, m in cells if flt.contains(a)]
    allm = [m for _, m in cells]
    return {
        "size": flt.size(),
        "share_of_space": flt.size() / space.size(),
        "cells_known_inside": len(inside),
        "best_inside": max(inside) if inside else None,
        "mean_inside": float(np.mean(inside)) if inside else None,
        "best_overall": max(allm) if allm else None,
        "mean_overall": float(np.mean(allm)) if allm else None,
    }


def _num(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


def _unnum(x: float | None) -> float:
    return float("nan") if x is None else x


@dataclass(frozen=True)
class Evidence:
    """The statistics of one round, over the source task's cells or over this run's evaluations.

    It holds statistics, not cells, so it stays small in the graph state and in checkpoints; the
    cells it was computed over are `n_cells` source cells (`SourceView.all_cells(task)`) or the
    first `n_cells` evaluations of the run (the ledger), both fixed once the round has begun.
    `to_json`/`from_json` round-trip exactly (floats as JSON numbers, NaN as null).
    """

    label: str  # how texts name the data, e.g. "source cifar10" or "target cifar100 (this run)"
    origin: Literal["source", "run"]
    task: str
    n_cells: int
    n_top: int
    stats: list[list[ChoiceStat]]
    shown: list[tuple[Arch, float]]  # the best cells, rendered to the LLM as layer lists
    effects: list[ChoiceEffect] = field(default_factory=list)  # run evidence only
    costs: list[CostEffect] = field(default_factory=list)  # with a cost limit or objective: `with_costs`

    @classmethod
    def compute(
        cls, space: SearchSpace, cells: Cells, *, label: str, origin: Literal["source", "run"], task: str,
        n_top: int, shown: Cells, effects: bool = False,
    ) -> Evidence:
        return cls(
            label, origin, task, len(cells), n_top, choice_stats(space, cells, n_top),
            [(tuple(a), float(m)) for a, m in shown], choice_effects(space, cells) if effects else [],
        )

    def stat(self, position: str, choice: str) -> ChoiceStat | None:
        for col in self.stats:
            if col and col[0].position == position:
                return next((s for s in col if s.choice == choice), None)
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label, "origin": self.origin, "task": self.task, "n_cells": self.n_cells,
            "n_top": self.n_top,
            "stats": [[{**asdict(s), "mean_metric": _num(s.mean_metric)} for s in col] for col in self.stats],
            "shown": [[list(a), m] for a, m in self.shown],
            "effects": [asdict(e) for e in self.effects],
            "costs": [asdict(c) for c in self.costs],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Evidence:
        return cls(
            raw["label"], raw["origin"], raw["task"], raw["n_cells"], raw["n_top"],
            [[ChoiceStat(**{**s, "mean_metric": _unnum(s["mean_metric"])}) for s in col] for col in raw["stats"]],
            [(tuple(a), m) for a, m in raw["shown"]],
            [ChoiceEffect(**e) for e in raw.get("effects", [])],
            [CostEffect(**c) for c in raw.get("costs", [])],
        )

    def with_costs(self, space: SearchSpace, cells: Cells, costs: Sequence[dict[str, float]], names: Sequence[str]) -> Evidence:
        """This evidence plus what each choice costs over the same `cells` (`cost_effects`)."""
        from dataclasses import replace

        return replace(self, costs=cost_effects(space, cells, costs, names))


@dataclass(frozen=True)
class CostEffect:
    """What a choice at a position costs: mean cost of the cells with it against those without,
    and the metric difference it comes with (for principles about a trade-off)."""

    position: str
    choice: str
    cost: str  # the cost's name, e.g. flops
    mean_with: float
    mean_without: float
    share: float  # (mean_with - mean_without) / mean cost of all cells: +0.4 = 40% more
    metric_delta: float  # mean metric with - without

    def sentence(self) -> str:
        return (f"{self.choice} at {self.position} costs {self.share:+.0%} {self.cost} "
                f"for {self.metric_delta:+.2f} points")


def cost_effects(space: SearchSpace, cells: Cells, costs: Sequence[dict[str, float]], names: Sequence[str]) -> list[CostEffect]:
    """Per position, per choice present and absent among `cells`: its cost against the others'.

    `costs[i]` is the cost of `cells[i]` (a `CostFunction`'s answer); a cost missing from any cell
    is skipped."""
    out: list[CostEffect] = []
    if not cells:
        return out
    archs = np.array([a for a, _ in cells], dtype=np.int64)
    metric = np.array([m for _, m in cells], dtype=np.float64)
    for name in names:
        if not all(name in c for c in costs):
            continue
        cost = np.array([c[name] for c in costs], dtype=np.float64)
        mean_all = float(cost.mean()) or 1.0
        for j, pos in enumerate(space.positions):
            for c, choice in enumerate(pos.choices):
                mask = archs[:, j] == c
                if not mask.any() or mask.all():
                    continue
                out.append(CostEffect(
                    pos.name, choice, name, float(cost[mask].mean()), float(cost[~mask].mean()),
                    float((cost[mask].mean() - cost[~mask].mean()) / mean_all),
                    float(metric[mask].mean() - metric[~mask].mean()),
                ))
    return out
