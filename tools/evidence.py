"""The statistics the analyst asks for: what top architectures of a task have in common.

Pure functions over a list of (architecture, metric) pairs, so they work for a source table,
for the evaluations of the current run and for any user space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .spaces import Arch, SearchSpace, SpaceFilter
from .tables import Table


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


def top_cells(table: Table, task: str, n: int) -> list[tuple[Arch, float]]:
    idx = table.ranked(task)[:n]
    return [(table.space.from_index(int(i)), float(table.valid[task][i])) for i in idx]


def all_cells(table: Table, task: str) -> list[tuple[Arch, float]]:
    v = table.valid[task]
    return [(table.space.from_index(int(i)), float(v[i])) for i in np.flatnonzero(~np.isnan(v))]


def choice_stats(
    space: SearchSpace, cells: Sequence[tuple[Arch, float]], n_top: int
) -> list[list[ChoiceStat]]:
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


def ranked_choices(stats: list[list[ChoiceStat]]) -> list[list[int]]:
    """Per position, choice ids best first: by count among the top, then by mean metric."""
    return [
        [s.choice_id for s in sorted(col, key=lambda s: (-s.top_count, -np.nan_to_num(s.mean_metric, nan=-1e18)))]
        for col in stats
    ]


def frequency_filter(
    space: SearchSpace, cells: Sequence[tuple[Arch, float]], *, k: int, top_n: int
) -> SpaceFilter:
    """The trivial prior: per position, the k most frequent choices among the top-N cells."""
    if k < 1:
        raise ConfigError("k must be at least 1")
    ranking = ranked_choices(choice_stats(space, cells, top_n))
    return SpaceFilter(tuple(tuple(r[:k]) for r in ranking)).check(space)


def filter_stats(space: SearchSpace, flt: SpaceFilter, cells: Sequence[tuple[Arch, float]]) -> dict:
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
