"""The benchmark protocols: fixed search settings and the metrics each one reports.

A protocol names a space, a budget, the REA settings and the prior's settings, its default targets
and sources. The scoring functions are pure functions over a run's evaluations (oldest first), so
every strategy, built-in or plugged in, is scored the same way.

* `lapt-nb201`: LAPT's NAS-Bench-201 protocol. Evaluations until the best-so-far (by validation)
  reaches the top-0.1% by validation (the 16th best validation value of the target), capped at the
  budget (a miss counts the budget), P(hit), and the test accuracy of the best-by-validation cell
  at the hit point and at the budget.
* `lapt-tnb101`: LAPT's TransNAS-Bench-101 protocol. Percentile (100 = best) of the best cell
  found by validation after the budget, and P(percentile >= 99).
* `curves`: best-so-far validation (and test) percentile and regret at several budgets, on either
  space, with that space's protocol settings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from archlore.tools.errors import ConfigError
from archlore.tools.tables import NB201_TASKS, TNB101_TASKS, Table


class Scored(Protocol):
    """What scoring needs of an evaluation (tools.ledger.Evaluation has it)."""

    valid: float
    test: float | None


@dataclass(frozen=True)
class BenchProtocol:
    """Fixed settings of one protocol."""

    name: str
    space: str  # "nb201" or "tnb101"
    budget: int  # evaluations per run
    population: int  # REA population
    tournament: int  # REA tournament size
    k: int  # the prior's choices kept per edge
    top_n: int  # the prior's source cells
    targets: tuple[str, ...]  # default targets
    source: str | None  # default source of strategies that need one; None: every other task
    description: str
    top_k: int = 16  # lapt-nb201: the hit threshold is the top_k-th best validation value
    top_percentile: float = 99.0  # lapt-tnb101: a "top-1%" cell has at least this percentile
    budgets: tuple[int, ...] = ()  # curves: where the curves are read

    def default_sources(self, target: str, tasks: Sequence[str]) -> list[str]:
        if self.source is not None:
            return [self.source] if self.source != target else []
        return [t for t in tasks if t != target]

    def settings(self) -> dict:
        out = {
            "space": self.space,
            "budget": self.budget,
            "population": self.population,
            "tournament": self.tournament,
            "k": self.k,
            "top_n": self.top_n,
        }
        if self.name == "lapt-nb201":
            out["top_k"] = self.top_k
        if self.name == "lapt-tnb101":
            out["top_percentile"] = self.top_percentile
        if self.budgets:
            out["budgets"] = list(self.budgets)
        return out


_NB201_TARGETS = tuple(NB201_TASKS)  # cifar10, cifar100, imagenet16-120
_TNB101_TARGETS = tuple(t for t in TNB101_TASKS if t != "jigsaw")

PROTOCOLS: dict[str, BenchProtocol] = {
    "lapt-nb201": BenchProtocol(
        "lapt-nb201", "nb201", budget=20, population=5, tournament=2, k=2, top_n=50,
        targets=_NB201_TARGETS, source=None,
        description="LAPT's NAS-Bench-201 protocol: evaluations until the top-0.1% by validation",
    ),
    "lapt-tnb101": BenchProtocol(
        "lapt-tnb101", "tnb101", budget=50, population=10, tournament=5, k=3, top_n=50,
        targets=_TNB101_TARGETS, source="jigsaw",
        description="LAPT's TransNAS-Bench-101 protocol: percentile of the best cell after 50 evaluations",
    ),
}
CURVES = "curves"
PROTOCOL_NAMES = (*PROTOCOLS, CURVES)
DEFAULT_BUDGETS = (10, 20, 50, 100, 200)
_SPACE_PROTOCOL = {"nb201": "lapt-nb201", "tnb101": "lapt-tnb101"}


def get_protocol(name: str, *, space: str | None = None, budgets: Sequence[int] | None = None) -> BenchProtocol:
    """A protocol by name; `curves` takes its settings from the space's protocol."""
    if name not in PROTOCOL_NAMES:
        raise ConfigError(f"unknown protocol {name!r}: use one of {', '.join(PROTOCOL_NAMES)}")
    if name != CURVES:
        proto = PROTOCOLS[name]
        if space is not None and space != proto.space:
            raise ConfigError(f"protocol {name} runs on space {proto.space}: drop --space {space}")
        if budgets:
            raise ConfigError(f"protocol {name} has a fixed budget of {proto.budget}: --budgets is for curves")
        return proto
    space = space or "nb201"
    if space not in _SPACE_PROTOCOL:
        raise ConfigError(f"unknown space {space!r} for curves: use nb201 or tnb101")
    points = tuple(sorted(set(int(b) for b in (budgets or DEFAULT_BUDGETS))))
    if not points or points[0] < 1:
        raise ConfigError(f"budgets must be positive integers, got {list(budgets or [])}")
    base = PROTOCOLS[_SPACE_PROTOCOL[space]]
    return replace(
        base, name=CURVES, budget=points[-1], budgets=points,
        description=f"budget curves on {space} ({base.name} search settings)",
    )


# ---------------------------------------------------------------------------------------------
# scoring one run
def best_by_valid(evals: Sequence[Scored]) -> list[Scored]:
    """The best-so-far evaluation by validation after each step (the first one wins a tie)."""
    out: list[Scored] = []
    best = None
    for e in evals:
        if best is None or e.valid > best.valid:
            best = e
        out.append(best)
    return out


@dataclass(frozen=True)
class TopHit:
    evals_to_top: int  # evaluations until the best-so-far reached the threshold (budget if never)
    hit: bool
    test_at_stop: float | None  # test of the best-by-validation cell at the hit (at the end if none)
    test_at_budget: float | None


def score_top_hit(evals: Sequence[Scored], threshold: float, budget: int) -> TopHit:
    if not evals:
        raise ConfigError("a run returned no evaluations: a strategy must evaluate at least one cell")
    best = best_by_valid(evals)
    for i, e in enumerate(evals):
        if e.valid >= threshold:
            return TopHit(min(i + 1, budget), True, best[i].test, best[-1].test)
    return TopHit(budget, False, best[-1].test, best[-1].test)


def score_percentile(evals: Sequence[Scored], table: Table, task: str) -> float:
    if not evals:
        raise ConfigError("a run returned no evaluations: a strategy must evaluate at least one cell")
    return table.percentile(task, max(e.valid for e in evals))


@dataclass(frozen=True)
class CurveScale:
    """What a target's curves are measured against: its best validation and test values."""

    best_valid: float
    sorted_test: np.ndarray | None  # known test values, ascending (None: the table has no test)

    @classmethod
    def of(cls, table: Table, task: str) -> CurveScale:
        test = table.test.get(task)
        if test is not None:
            test = np.sort(test[~np.isnan(test)])
            test = test if test.size else None
        return cls(float(np.nanmax(table.valid[task])), test)

    def test_percentile(self, value: float) -> float:
        assert self.sorted_test is not None
        return 100.0 * np.searchsorted(self.sorted_test, value, side="right") / self.sorted_test.size


def score_curve(
    evals: Sequence[Scored], table: Table, task: str, budgets: Sequence[int], scale: CurveScale
) -> dict[str, list[float | None]]:
    """Best-so-far (by validation) percentile and regret, validation and test, at each budget."""
    if not evals:
        raise ConfigError("a run returned no evaluations: a strategy must evaluate at least one cell")
    best = best_by_valid(evals)
    out: dict[str, list[float | None]] = {k: [] for k in ("valid_percentile", "valid_regret", "test_percentile", "test_regret")}
    for b in budgets:
        e = best[min(b, len(best)) - 1]  # a run that stopped early keeps its last best
        out["valid_percentile"].append(table.percentile(task, e.valid))
        out["valid_regret"].append(scale.best_valid - e.valid)
        has_test = scale.sorted_test is not None and e.test is not None
        out["test_percentile"].append(scale.test_percentile(e.test) if has_test else None)
        out["test_regret"].append(float(scale.sorted_test[-1]) - e.test if has_test else None)
    return out


# ---------------------------------------------------------------------------------------------
# aggregating over seeds
def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def mean_std_ci(values: Sequence[float | None]) -> tuple[float | None, float | None, float | None]:
    """Mean, sample std and the 95% CI half-width (normal approximation); None-s are skipped."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return None, None, None
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return _r(v.mean()), _r(std), _r(1.96 * std / math.sqrt(v.size))


def proportion_ci(hits: Sequence[bool]) -> tuple[float, float]:
    """A proportion and its 95% CI half-width (normal approximation)."""
    n = len(hits)
    p = sum(hits) / n
    return _r(p), _r(1.96 * math.sqrt(p * (1 - p) / n))


def aggregate_top_hit(scores: Sequence[TopHit]) -> dict:
    mean, std, ci = mean_std_ci([s.evals_to_top for s in scores])
    p, p_ci = proportion_ci([s.hit for s in scores])
    stop, stop_std, _ = mean_std_ci([s.test_at_stop for s in scores])
    end, end_std, _ = mean_std_ci([s.test_at_budget for s in scores])
    return {
        "mean_evals_to_top": mean, "evals_std": std, "evals_ci95": ci,
        "p_hit": p, "p_hit_ci95": p_ci,
        "test_at_stop": stop, "test_at_stop_std": stop_std,
        "test_at_budget": end, "test_at_budget_std": end_std,
    }


def aggregate_percentile(percentiles: Sequence[float], top: float) -> dict:
    mean, std, ci = mean_std_ci(percentiles)
    p, p_ci = proportion_ci([x >= top for x in percentiles])
    return {"mean_percentile": mean, "percentile_std": std, "percentile_ci95": ci, "p_top1": p, "p_top1_ci95": p_ci}


def aggregate_curves(curves: Sequence[dict[str, list[float | None]]], budgets: Sequence[int]) -> dict:
    out: dict = {"budgets": list(budgets)}
    for key in ("valid_percentile", "valid_regret", "test_percentile", "test_regret"):
        stats = [mean_std_ci([c[key][j] for c in curves]) for j in range(len(budgets))]
        means = [m for m, _, _ in stats]
        out[key] = means if any(m is not None for m in means) else None
        out[f"{key}_ci95"] = [ci for _, _, ci in stats] if out[key] is not None else None
    return out
