"""Search strategies as proposers (ask/tell): given the history, propose the next architecture.

A proposer holds no hidden state: history comes from the ledger and the random generator is
seeded by (seed, evaluations so far), so a resumed run proposes exactly what an uninterrupted
one would. `run_search` drives a proposer through an `Evaluator` inside a `SpaceFilter` and
stops, never spins, when the filter is exhausted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .errors import BudgetExhausted, ConfigError, SpaceExhausted, UnknownCell
from .evaluator import Evaluator
from .spaces import Arch, SearchSpace, SpaceFilter, sample_unseen

log = logging.getLogger(__name__)

History = Sequence[tuple[Arch, float]]  # (architecture, validation metric), oldest first


class Proposer(Protocol):
    name: str

    def propose(
        self, space: SearchSpace, history: History, flt: SpaceFilter, rng: np.random.Generator
    ) -> Arch: ...


@dataclass(frozen=True)
class RandomSearch:
    name: str = "random"

    def propose(self, space, history, flt, rng):
        return sample_unseen(space, rng, {a for a, _ in history}, flt)


@dataclass(frozen=True)
class REA:
    """Regularized (aging) evolution: tournament over the last `population` evaluations."""

    population: int = 10
    tournament: int = 5
    name: str = "rea"

    def __post_init__(self) -> None:
        if self.population < 1 or not 1 <= self.tournament <= self.population:
            raise ConfigError("REA needs population >= 1 and 1 <= tournament <= population")

    def propose(self, space, history, flt, rng):
        seen = {a for a, _ in history}
        if len(history) < self.population:
            return sample_unseen(space, rng, seen, flt)
        pop = list(history[-self.population :])
        picks = rng.choice(len(pop), size=self.tournament, replace=False)
        parent = max((pop[i] for i in picks), key=lambda h: h[1])[0]
        for _ in range(8):
            child = space.mutate(parent, rng, flt)
            if child not in seen:
                return child
        fresh = [n for n in space.neighbours(flt.project(parent, rng), flt) if n not in seen]
        if fresh:
            return fresh[rng.integers(len(fresh))]
        return sample_unseen(space, rng, seen, flt)


def step_rng(seed: int, n_done: int) -> np.random.Generator:
    return np.random.default_rng([seed, n_done])


@dataclass(frozen=True)
class SearchOutcome:
    evaluated: int
    stopped: str  # "done", "budget" or "exhausted"
    filter: SpaceFilter


def run_search(
    proposer: Proposer,
    evaluator: Evaluator,
    flt: SpaceFilter | None,
    n: int,
    *,
    seed: int,
    proposed_by: str | None = None,
    round: int = 0,
    widen: Callable[[SpaceFilter], SpaceFilter | None] | None = None,
    on_eval: Callable[[object], None] | None = None,
    batch: int | None = None,
) -> SearchOutcome:
    """Evaluate up to `n` new architectures proposed inside `flt`.

    When the filter is exhausted, `widen(flt)` may return a larger filter to continue in; with
    no widening (or none left) the search stops and says so.

    `batch` candidates are proposed and evaluated together (default: the executor's
    `parallelism`, 1 for a local executor); see `_run_batches`.
    """
    space = evaluator.space
    flt = (flt or space.full_filter()).check(space)
    batch = batch or int(getattr(evaluator.executor, "parallelism", 1))
    if batch > 1:
        return _run_batches(proposer, evaluator, flt, n, batch, seed=seed, proposed_by=proposed_by or proposer.name,
                            round=round, widen=widen, on_eval=on_eval)
    done = 0
    while done < n:
        if evaluator.remaining <= 0:
            return SearchOutcome(done, "budget", flt)
        rng = step_rng(seed, evaluator.used)
        try:
            arch = proposer.propose(space, evaluator.pairs(), flt, rng)
            if evaluator.is_failed(arch):  # failed candidates are not in pairs(): never propose one again
                arch = sample_unseen(space, rng, evaluator.seen(), flt)
        except SpaceExhausted:
            wider = widen(flt) if widen else None
            if wider is None or wider.size() <= flt.size():
                log.info("filter of size %d exhausted; stopping", flt.size())
                return SearchOutcome(done, "exhausted", flt)
            log.info("filter of size %d exhausted; widened to %d", flt.size(), wider.size())
            flt = wider.check(space)
            continue
        try:
            try:
                ev = evaluator.evaluate(arch, proposed_by=proposed_by or proposer.name, round=round)
            except UnknownCell:  # a partial table has no row for it: take the nearest row that exists
                near = nearest_known(evaluator, arch, flt, rng)
                if near is None:
                    wider = widen(flt) if widen else None
                    if wider is None or wider.size() <= flt.size():
                        log.info("no evaluable cell left in the filter of size %d; stopping", flt.size())
                        return SearchOutcome(done, "exhausted", flt)
                    flt = wider.check(space)
                    continue
                ev = evaluator.evaluate(near, proposed_by=f"{proposed_by or proposer.name}~nearest", round=round)
        except BudgetExhausted:
            return SearchOutcome(done, "budget", flt)
        done += 1
        if on_eval:
            on_eval(ev)
    return SearchOutcome(done, "done", flt)


def _run_batches(
    proposer: Proposer,
    evaluator: Evaluator,
    flt: SpaceFilter,
    n: int,
    batch: int,
    *,
    seed: int,
    proposed_by: str,
    round: int,
    widen: Callable[[SpaceFilter], SpaceFilter | None] | None,
    on_eval: Callable[[object], None] | None,
) -> SearchOutcome:
    """`run_search` for an executor that evaluates many candidates at once (a Ray cluster).

    A batch is proposed one by one from the ledger's history, each pending candidate added to the
    history with the worst value seen so far (the "constant liar"), so the proposer neither
    repeats it nor builds on a result it does not have. The batch is then evaluated together;
    each result is recorded as it arrives. A failed candidate is recorded once and never proposed
    again. A resumed run proposes from what was recorded, so the
    candidates in flight at a kill are proposed afresh (the budget counts only recorded ones).
    """
    space = evaluator.space
    done = 0
    while done < n:
        if evaluator.remaining <= 0:
            return SearchOutcome(done, "budget", flt)
        history = list(evaluator.pairs())
        liar = min((v for _, v in history), default=0.0)
        # failed cells are not in pairs(); they stand in the history as liars so none is proposed again
        history += [(a, liar) for a in evaluator.seen() if evaluator.is_failed(a)]
        k = min(batch, n - done, evaluator.remaining)
        picks: list[Arch] = []
        exhausted = False
        while len(picks) < k:
            rng = step_rng(seed, len(history))
            try:
                arch = proposer.propose(space, history, flt, rng)
            except SpaceExhausted:
                if picks:
                    break  # evaluate what we have; the next batch widens
                wider = widen(flt) if widen else None
                if wider is None or wider.size() <= flt.size():
                    exhausted = True
                    break
                log.info("filter of size %d exhausted; widened to %d", flt.size(), wider.size())
                flt = wider.check(space)
                continue
            known = getattr(evaluator.executor, "known", None)
            if known is not None and space.index(arch) not in set(int(i) for i in known()):
                near = nearest_known(evaluator, arch, flt, rng)
                arch = near if near is not None and near not in picks else arch
            picks.append(tuple(arch))
            history.append((tuple(arch), liar))
        if exhausted:
            log.info("filter of size %d exhausted; stopping", flt.size())
            return SearchOutcome(done, "exhausted", flt)
        new: list = []  # what this batch adds to the ledger, recorded as each finishes

        def take(ev, new=new) -> None:
            new.append(ev)
            if on_eval is not None:
                on_eval(ev)

        try:  # picks are at most the budget left (k), so only a stale count could refuse them
            evaluator.evaluate_many(picks, proposed_by=proposed_by, round=round, on_eval=take)
        except BudgetExhausted:
            return SearchOutcome(done, "budget", flt)
        if not new:  # nothing could be evaluated (cells without a result): stop, never spin
            return SearchOutcome(done, "exhausted", flt)
        done += len(new)
    return SearchOutcome(done, "done", flt)


def nearest_known(evaluator: Evaluator, arch: Arch, flt: SpaceFilter, rng: np.random.Generator) -> Arch | None:
    """The unevaluated cell inside `flt` that the executor can evaluate and that differs from `arch`
    at the fewest positions (ties broken by `rng`), or None when there is none.

    For executors over partial tables (`executor.known()`): a proposal without a row is replaced by
    the closest row that exists, so the proposer's intent is kept and no budget is spent on a miss.
    """
    known = getattr(evaluator.executor, "known", None)
    if known is None:
        return None
    space = evaluator.space
    seen = {a for a, _ in evaluator.pairs()}
    cands = [a for a in (space.from_index(int(i)) for i in known()) if flt.contains(a) and a not in seen]
    if not cands:
        return None
    dist = np.array([sum(x != y for x, y in zip(a, arch)) for a in cands])
    best = np.flatnonzero(dist == dist.min())
    return cands[int(best[rng.integers(best.size)])]


def widen_to_full(space: SearchSpace) -> Callable[[SpaceFilter], SpaceFilter | None]:
    def widen(flt: SpaceFilter) -> SpaceFilter | None:
        full = space.full_filter()
        return None if flt == full else full

    return widen


Weights = tuple[tuple[float, ...], ...]  # per position, per choice: higher = more promising


@dataclass(frozen=True)
class GuidedREA:
    """REA whose initial population and mutations are ordered by per-choice weights.

    Candidates are scored by the sum of their choices' weights plus Gumbel noise scaled by
    `temperature` (seeded, so runs differ by seed but repeat exactly). The warm-up picks the
    best-scored unseen members of the filter instead of uniform samples; after it, a tournament
    parent's best-scored unseen neighbour is the child. With all weights equal this is REA with
    a random mutation, so the weights are the only thing principles add.
    """

    weights: Weights
    population: int = 10
    tournament: int = 5
    temperature: float = 0.25
    name: str = "guided-rea"

    def __post_init__(self) -> None:
        REA(self.population, self.tournament)  # same validation

    def _pick(self, cands: list[Arch], rng: np.random.Generator) -> Arch:
        w = self.weights
        scores = np.array([sum(w[j][c] for j, c in enumerate(a)) for a in cands])
        scores = scores + self.temperature * rng.gumbel(size=len(cands))
        return cands[int(np.argmax(scores))]

    def _members(self, space, flt, seen, rng) -> list[Arch]:
        if flt.size() <= 50_000:
            return [a for a in flt.members() if a not in seen]
        return list({space.sample(rng, flt) for _ in range(2000)} - seen)

    def propose(self, space, history, flt, rng):
        seen = {a for a, _ in history}
        if len(history) >= self.population:
            pop = list(history[-self.population :])
            picks = rng.choice(len(pop), size=self.tournament, replace=False)
            parent = flt.project(max((pop[i] for i in picks), key=lambda h: h[1])[0], rng)
            children = [n for n in space.neighbours(parent, flt) if n not in seen]
            if children:
                return self._pick(children, rng)
        cands = self._members(space, flt, seen, rng)
        if not cands:
            return sample_unseen(space, rng, seen, flt)  # raises SpaceExhausted when truly empty
        return self._pick(cands, rng)
