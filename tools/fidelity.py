"""Multi-fidelity evaluation on epochs: successive halving and hyperband over a round's candidates.

`successive_halving(evaluator, archs, min_epochs=1, max_epochs=9, eta=3)` trains every candidate
for `min_epochs`, keeps the best 1/eta (by validation accuracy, at least one), trains those for
eta times as many epochs, and so on up to `max_epochs` (the last rung is clipped to it). Weak
candidates stop early, so a round costs far fewer epochs than training all to the end.

- Every rung's result goes into the ledger with its fidelity (the epochs), through the
  `Evaluator`: each unique architecture costs one evaluation of the budget however many rungs it
  climbs; candidates beyond the budget left are not started.
- Each rung trains from scratch for its number of epochs (the recipe's schedule spans them), so
  a result at a fidelity means the same whichever way it was reached, and the training cache
  can serve it again.
- A failed candidate (out of memory, NaN, builder error) is never promoted.
- A run killed in the middle resumes by calling the same function again: results already in the
  ledger are reused, so the same candidates are kept without training anything again.

`hyperband(evaluator, propose, ...)` runs successive halving in brackets that trade the number
of candidates against their starting epochs (Li et al., 2018); `propose(n)` supplies n new
candidates per bracket.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .errors import BudgetExhausted, ConfigError
from .evaluator import Evaluator
from .ledger import Evaluation
from .spaces import Arch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rung:
    epochs: int
    evaluated: tuple[str, ...]  # arch strings trained at this rung
    kept: tuple[str, ...]  # promoted to the next rung (empty at the last)


@dataclass(frozen=True)
class HalvingOutcome:
    rungs: tuple[Rung, ...]
    #: the results at the highest rung reached, best first
    final: tuple[Evaluation, ...] = field(default_factory=tuple)

    @property
    def best(self) -> Evaluation | None:
        return self.final[0] if self.final else None

    def to_dict(self) -> dict:
        return {"rungs": [{"epochs": r.epochs, "evaluated": list(r.evaluated), "kept": list(r.kept)} for r in self.rungs]}


def rung_epochs(min_epochs: int, max_epochs: int, eta: int) -> list[int]:
    """min, min*eta, min*eta^2 ... clipped to max (which is always the last rung)."""
    if min_epochs < 1 or max_epochs < min_epochs:
        raise ConfigError(f"need 1 <= min_epochs <= max_epochs, got {min_epochs} and {max_epochs}")
    if eta < 2:
        raise ConfigError(f"eta must be at least 2, got {eta}")
    out = [int(min_epochs)]
    while out[-1] < max_epochs:
        out.append(min(out[-1] * eta, int(max_epochs)))
    return out


def successive_halving(
    evaluator: Evaluator,
    archs: Sequence[Arch],
    *,
    min_epochs: int,
    max_epochs: int,
    eta: int = 3,
    proposed_by: str = "",
    round: int = 0,
    on_eval: Callable[[Evaluation], None] | None = None,
) -> HalvingOutcome:
    """Successive halving over `archs` (see the module docstring); BudgetExhausted only when
    none of them can be started. `on_eval` hears of each rung's result as it is recorded."""
    epochs = rung_epochs(min_epochs, max_epochs, eta)
    space = evaluator.space
    survivors: list[Arch] = []
    seen: set[str] = set()
    room = evaluator.remaining
    known = {e.arch for e in evaluator.results()}
    for a in archs:
        key = space.to_string(a)
        if key in seen or evaluator.is_failed(a):
            continue
        if key not in known:
            if room <= 0:
                continue
            room -= 1
        seen.add(key)
        survivors.append(tuple(a))
    if not survivors:
        if archs and evaluator.remaining <= 0:
            raise BudgetExhausted(f"run {evaluator.run_id} has spent its budget of {evaluator.budget} evaluations")
        return HalvingOutcome(())
    rungs: list[Rung] = []
    ranked: list[tuple[Arch, Evaluation]] = []
    for k, e in enumerate(epochs):
        evs = evaluator.evaluate_many(survivors, epochs=e, proposed_by=f"{proposed_by}@{e}ep" if proposed_by else f"@{e}ep", round=round,
                                      on_eval=on_eval)
        got = {ev.arch: ev for ev in evs}  # a cell the executor has no result for is left out
        ok = [(a, got[k]) for a in survivors if (k := space.to_string(a)) in got and got[k].ok]
        ranked = sorted(ok, key=lambda p: -p[1].valid)  # stable: ties keep the proposal order
        last = k == len(epochs) - 1
        keep = [] if last else [a for a, _ in ranked[: max(1, len(survivors) // eta)]]
        rungs.append(Rung(e, tuple(space.to_string(a) for a in survivors), tuple(space.to_string(a) for a in keep)))
        log.info("rung %d (%d epochs): %d trained, %d kept", k, e, len(survivors), len(keep))
        if last or not keep:
            break
        survivors = keep
    return HalvingOutcome(tuple(rungs), tuple(ev for _, ev in ranked))


def hyperband_brackets(min_epochs: int, max_epochs: int, eta: int = 3) -> list[tuple[int, int]]:
    """(candidates, starting epochs) per bracket, most exploratory first."""
    rung_epochs(min_epochs, max_epochs, eta)  # validates
    s_max = math.floor(math.log(max_epochs / min_epochs, eta) + 1e-9)
    out = []
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) / (s + 1) * eta**s)
        r = max(min_epochs, round(max_epochs / eta**s))
        out.append((n, r))
    return out


def hyperband(
    evaluator: Evaluator,
    propose: Callable[[int], Sequence[Arch]],
    *,
    min_epochs: int,
    max_epochs: int,
    eta: int = 3,
    proposed_by: str = "",
    round: int = 0,
) -> list[HalvingOutcome]:
    """Successive halving in hyperband's brackets; stops early when the budget is spent."""
    out = []
    for n, r in hyperband_brackets(min_epochs, max_epochs, eta):
        n = min(n, evaluator.remaining)
        if n <= 0:
            break
        out.append(successive_halving(evaluator, propose(n), min_epochs=r, max_epochs=max_epochs, eta=eta,
                                      proposed_by=proposed_by, round=round))
    return out
