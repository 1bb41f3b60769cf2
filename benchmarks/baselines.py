"""The baselines every figure is measured against, as harness strategies.

Each one sees what any strategy sees: the source's `SourceView` (validation values only) and the
target's executor. None of them is tuned: they are the obvious things a reviewer tries first.

| name | source | what it does |
|---|---|---|
| `random` | no | uniform random search over the full space, no repeats |
| `rea` | no | regularized evolution over the full space |
| `freq-prior` | yes | REA inside the frequency prior, each position *padded* to k choices (a choice absent from the source's top-N fills a slot, ranked by its mean source metric) |
| `freq-prior-unpadded` | yes | the same prior keeping only choices that occur among the source's top-N (at most k) |
| `copy-top` | yes | evaluate the source's top cells in their order |
| `rea-seeded` | yes | REA whose initial population is the source's top cells |

The prior-based ones go on in the full space once their filter is used up; `copy-top` goes on with
random cells once the source's known cells are used up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from archlore.tools.errors import ConfigError
from archlore.tools.evaluator import Evaluator
from archlore.tools.evidence import choice_stats, frequency_filter
from archlore.tools.ledger import Ledger
from archlore.tools.source_view import SourceView
from archlore.tools.spaces import Arch, SearchSpace, SpaceFilter, sample_unseen
from archlore.tools.strategies import REA, Proposer, RandomSearch, run_search, widen_to_full

from .harness import StrategyRequest, register_strategy


def search(req: StrategyRequest, proposer: Proposer, flt: SpaceFilter | None = None, widen=None) -> None:
    """Run a proposer through the target's executor for the whole budget."""
    ledger = Ledger(None)
    try:
        evaluator = Evaluator(req.executor(), ledger, req.run_id, req.budget)
        run_search(proposer, evaluator, flt, req.budget, seed=req.seed, widen=widen)
    finally:
        ledger.close()


def _view(req: StrategyRequest, name: str) -> SourceView:
    if req.view is None or req.source is None:
        raise ConfigError(f"{name} needs a source task: pass --source")
    return req.view


# -- priors --------------------------------------------------------------------------------
_PRIORS: dict[tuple, tuple[SourceView, SpaceFilter]] = {}


def prior_filter(view: SourceView, source: str, *, k: int, top_n: int, padded: bool = True) -> SpaceFilter:
    """The frequency prior of a source task: per position, the k most frequent choices among its
    top-N cells. `padded`: a position whose top-N cells use fewer than k choices is filled up to k
    with unseen ones (by mean source metric); unpadded keeps only the choices that occur."""
    if k < 1:
        raise ConfigError("k must be at least 1")
    key = (id(view), source, k, top_n, padded)
    hit = _PRIORS.get(key)
    if hit is None or hit[0] is not view:
        cells = view.all_cells(source)
        flt = frequency_filter(view.space, cells, k=k, top_n=top_n)  # ranks occurring choices first
        if not padded:
            st = choice_stats(view.space, cells, top_n)
            flt = SpaceFilter(tuple(tuple(c for c in a if st[j][c].top_count > 0) for j, a in enumerate(flt.allowed)))
        hit = (view, flt.check(view.space))
        _PRIORS[key] = hit  # holding the view keeps its id from being reused
    return hit[1]


def random_strategy(req: StrategyRequest) -> None:
    """Uniform random search over the full space, no repeats."""
    search(req, RandomSearch())


def rea_strategy(req: StrategyRequest) -> None:
    """Regularized evolution over the full space."""
    search(req, REA(req.population, req.tournament))


def freq_prior_strategy(req: StrategyRequest) -> None:
    """REA inside the padded frequency prior; if the prior is used up, it goes on in the full space."""
    flt = prior_filter(_view(req, "freq-prior"), req.source, k=req.k, top_n=req.top_n, padded=True)
    search(req, REA(req.population, req.tournament), flt, widen_to_full(req.space))


def freq_prior_unpadded_strategy(req: StrategyRequest) -> None:
    """REA inside the unpadded frequency prior (only choices seen among the source's top-N)."""
    flt = prior_filter(_view(req, "freq-prior-unpadded"), req.source, k=req.k, top_n=req.top_n, padded=False)
    search(req, REA(req.population, req.tournament), flt, widen_to_full(req.space))


# -- source-ordered ------------------------------------------------------------------------
@dataclass(frozen=True)
class CopyTop:
    """Propose the source's cells best first; random unseen cells once they are used up."""

    order: tuple[Arch, ...]
    name: str = "copy-top"

    def propose(self, space: SearchSpace, history, flt: SpaceFilter, rng: np.random.Generator) -> Arch:
        seen = {a for a, _ in history}
        for a in self.order:
            if a not in seen and flt.contains(a):
                return a
        return sample_unseen(space, rng, seen, flt)


@dataclass(frozen=True)
class SeededREA:
    """REA whose initial population is the given cells (the source's top ones), in order."""

    seeds: tuple[Arch, ...]
    population: int
    tournament: int
    name: str = "rea-seeded"

    def propose(self, space: SearchSpace, history, flt: SpaceFilter, rng: np.random.Generator) -> Arch:
        if len(history) < self.population:
            seen = {a for a, _ in history}
            for a in self.seeds:
                if a not in seen:
                    return a
        return REA(self.population, self.tournament).propose(space, history, flt, rng)


def _source_order(view: SourceView, source: str, n: int) -> tuple[Arch, ...]:
    return tuple(a for a, _ in view.top_cells(source, n))


def copy_top_strategy(req: StrategyRequest) -> None:
    """Evaluate the source's top cells in their order."""
    view = _view(req, "copy-top")
    search(req, CopyTop(_source_order(view, req.source, req.budget)))


def rea_seeded_strategy(req: StrategyRequest) -> None:
    """REA whose initial population is the source's top `population` cells."""
    view = _view(req, "rea-seeded")
    seeds = _source_order(view, req.source, req.population)
    search(req, SeededREA(seeds, req.population, req.tournament))


for _name, _fn, _needs in (
    ("random", random_strategy, False),
    ("rea", rea_strategy, False),
    ("freq-prior", freq_prior_strategy, True),
    ("freq-prior-unpadded", freq_prior_unpadded_strategy, True),
    ("copy-top", copy_top_strategy, True),
    ("rea-seeded", rea_seeded_strategy, True),
):
    register_strategy(_name, _fn, needs_source=_needs, baseline=True)
