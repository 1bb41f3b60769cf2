"""Search as ranking (LM-Searcher, EMNLP 2025), zero-shot, inside any `SpaceFilter`.

Encoding ("NCode"): every architecture of every space is a digit string with one character per
position, the choice id in base 36 (`0-9`, then `a-z`): `SearchSpace.to_digits` / `from_digits`.

| space | positions | choices per position | example |
|---|---|---|---|
| nb201 | 6 edges | 5 (`0` none, `1` skip_connect, `2` nor_conv_1x1, `3` nor_conv_3x3, `4` avg_pool_3x3) | `330133` |
| tnb101 | 6 edges | 4 (`0` none, `1` skip_connect, `2` nor_conv_1x1, `3` nor_conv_3x3) | `330133` |
| darts | 24 (per cell and node: the input pair, the op on each input) | 1..10 (pairs in colex order; ops `0` none .. `7` dil_conv_5x5) | `065122000165074175344926` |
| user YAML/JSON | 1..200 | 1..36 per position (the file's order: first choice `0`) | `2a0` |

So the maximum is 36 choices per position (`spaces.MAX_CHOICES`), and a code is as long as the
space has positions (200 at most).

At every step `RankSearch` shows a chooser the best past trials as `code|score` lines (at most
200, scores min-max normalised to 0..1 over the trials shown, oldest first so the lines form a
stable prefix) and a pool of unseen candidates (10 by default, listed best first by the surrogate)
drawn by pruning-based subspace sampling: each candidate comes from a subspace of the current filter in which some positions are
cut down to the choices the best trials use there, more of them as the search goes on. The
chooser returns the index of one candidate, or None; then (and for `choose=None`, the non-LLM
control) the candidate a simple additive surrogate scores best is taken. tools/ knows nothing of
LLMs: the LLM chooser lives in agents/ranker.py and is passed in as a callable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError, SpaceExhausted
from .spaces import Arch, SearchSpace, SpaceFilter, sample_unseen

log = logging.getLogger(__name__)

History = Sequence[tuple[Arch, float]]
#: (history lines, pool lines) -> the index of the chosen pool line, or None (let the surrogate choose)
Choose = Callable[[list[str], list[str]], "int | None"]

MAX_HISTORY = 200
POOL_SIZE = 10
TOP_FOR_PRUNING = 5  # the best trials whose choices the pruned subspaces keep
PRUNE_HALF_LIFE = 20  # trials after which half the positions of a candidate's subspace are pruned
PRUNE_MAX = 0.9


def encode(space: SearchSpace, arch: Arch) -> str:
    """The NCode of an architecture: one base-36 digit per position (the choice id)."""
    return space.to_digits(arch)


def decode(space: SearchSpace, code: str) -> Arch:
    """The architecture of an NCode (SpaceError with the reason when it is not one)."""
    return space.from_digits(code)


def normalized(scores: Sequence[float]) -> list[float]:
    """Min-max normalisation to 0..1 (all equal: all 1.0)."""
    lo, hi = min(scores), max(scores)
    if hi <= lo:
        return [1.0 for _ in scores]
    return [(s - lo) / (hi - lo) for s in scores]


def top_trials(history: History, n: int = MAX_HISTORY) -> list[tuple[Arch, float]]:
    """The `n` best trials, in the order they were evaluated (a stable prompt prefix)."""
    if len(history) <= n:
        return list(history)
    keep = set(np.argsort([-v for _, v in history], kind="stable")[:n].tolist())
    return [h for i, h in enumerate(history) if i in keep]


def history_lines(space: SearchSpace, history: History, n: int = MAX_HISTORY) -> list[str]:
    """`code|normalised score` for the best `n` trials, oldest first, scores with 3 decimals."""
    top = top_trials(history, n)
    if not top:
        return []
    return [f"{encode(space, a)}|{s:.3f}" for (a, _), s in zip(top, normalized([v for _, v in top]))]


def prune_share(n_trials: int, half_life: int = PRUNE_HALF_LIFE) -> float:
    """The share of positions pruned toward the best trials' choices after `n_trials` trials."""
    return min(PRUNE_MAX, n_trials / (n_trials + half_life))


def pruned_subspace(
    history: History, flt: SpaceFilter, rng: np.random.Generator, *, top: int = TOP_FOR_PRUNING,
    share: float | None = None,
) -> SpaceFilter:
    """A subspace of `flt`: each position is, with probability `share`, cut down to the choices
    the best `top` trials use there (those inside the filter; a position none of them fits keeps
    the filter's choices)."""
    if not history:
        return flt
    share = prune_share(len(history)) if share is None else share
    best = sorted(history, key=lambda h: -h[1])[:top]
    allowed = []
    for j, choices in enumerate(flt.allowed):
        if rng.random() < share:
            kept = sorted({a[j] for a, _ in best} & set(choices))
            allowed.append(tuple(kept) if kept else choices)
        else:
            allowed.append(choices)
    return SpaceFilter(tuple(allowed))


def sample_pool(
    space: SearchSpace, history: History, flt: SpaceFilter, rng: np.random.Generator, size: int = POOL_SIZE,
) -> list[Arch]:
    """Up to `size` distinct unseen members of `flt`, each from its own pruned subspace.

    A pruned subspace whose members are all seen gives way to the whole filter; fewer than `size`
    remain only when the filter holds fewer unseen members. Raises SpaceExhausted when it holds none.
    """
    if size < 1:
        raise ConfigError("the pool needs at least one candidate")
    seen = {a for a, _ in history}
    pool: list[Arch] = []
    taken: set[Arch] = set()
    for attempt in range(size * 8):
        if len(pool) >= size:
            break
        sub = pruned_subspace(history, flt, rng) if attempt < size * 4 else flt
        try:
            arch = sample_unseen(space, rng, seen | taken, sub, tries=16)
        except SpaceExhausted:
            if sub == flt:
                break
            continue
        pool.append(arch)
        taken.add(arch)
    if not pool:
        sample_unseen(space, rng, seen, flt)  # raises SpaceExhausted when truly empty
    return pool


@dataclass(frozen=True)
class Surrogate:
    """An additive score: per position, the mean normalised score of the trials using each choice
    (shrunk toward the overall mean by `prior` pseudo-trials), plus optional per-choice weights
    (principles). Unseen choices score the overall mean, so with no history the weights decide."""

    prior: float = 2.0
    weights: tuple[tuple[float, ...], ...] | None = None
    weight_scale: float = 0.1

    def scores(self, space: SearchSpace, history: History, cands: Sequence[Arch]) -> np.ndarray:
        out = np.zeros(len(cands))
        if history:
            y = np.array(normalized([v for _, v in history]))
            mean = float(y.mean())
            archs = np.array([a for a, _ in history])
            for j, n in enumerate(space.radix):
                col = archs[:, j]
                sums = np.bincount(col, weights=y, minlength=n)
                counts = np.bincount(col, minlength=n)
                est = (sums + self.prior * mean) / (counts + self.prior)
                out += np.array([est[a[j]] for a in cands])
        if self.weights is not None:
            out += self.weight_scale * np.array([sum(self.weights[j][c] for j, c in enumerate(a)) for a in cands])
        return out

    def best(self, space: SearchSpace, history: History, cands: Sequence[Arch]) -> int:
        """The index of the best-scored candidate (the first among equals)."""
        return int(np.argmax(self.scores(space, history, cands)))


@dataclass(frozen=True)
class RankSearch:
    """LM-Searcher's step as a proposer: a pool of unseen candidates, one picked by `choose`
    (None: the surrogate picks, the non-LLM control)."""

    choose: Choose | None = None
    pool_size: int = POOL_SIZE
    max_history: int = MAX_HISTORY
    surrogate: Surrogate = field(default_factory=Surrogate)
    on_pick: Callable[[dict], None] | None = None  # told each step's pool, surrogate pick and choice
    name: str = "rank"

    def __post_init__(self) -> None:
        if self.pool_size < 1 or self.max_history < 1:
            raise ConfigError("rank needs a pool of at least 1 and a history of at least 1 trial")

    def propose(self, space: SearchSpace, history: History, flt: SpaceFilter, rng: np.random.Generator) -> Arch:
        pool = sample_pool(space, history, flt, rng, self.pool_size)
        # shown best first by the surrogate: a chooser that only copies the first line (a small
        # model's position bias: measured, the 1.5B local model answered 1 in 20 of 20 calls)
        # then falls back to the surrogate's pick, and one that reads the trials can overrule it
        order = np.argsort(-self.surrogate.scores(space, history, pool), kind="stable")
        pool = [pool[i] for i in order]
        fallback = 0
        codes = [encode(space, a) for a in pool]
        picked, by = fallback, "surrogate"
        if self.choose is not None and len(pool) > 1:
            answer = self.choose(history_lines(space, history, self.max_history), codes)
            if answer is not None and 0 <= int(answer) < len(pool):
                picked, by = int(answer), "chooser"
        if self.on_pick is not None:
            self.on_pick({"pool": codes, "surrogate": fallback, "chosen": picked, "by": by})
        return pool[picked]
