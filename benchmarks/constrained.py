"""Constrained NAS-Bench-201: search under cost limits, alone and as a Pareto trade-off.

Limits (the `constrained-nb201` protocol): FLOPs at most half the space's maximum (110.06M of
220.12M) and edge-GPU latency at most the space's median (HW-NAS-Bench, 5.31 ms): 7,536 of the
15,625 cells are feasible. Every strategy gets the table cut to those cells (`tools.constraints`:
an over-limit cell has no result, so it is never evaluated) through the harness's metered access.

Two modes, on held-out seeds (`--split heldout`: 1000..), budget 50:

- single objective (validation accuracy): evaluations until the best-by-validation cell is in the
  *constrained* top-0.1% (the 8 best feasible cells; a miss counts 50), P(hit), and the regret
  against the best feasible cell at 20 and 50 evaluations;
- Pareto (accuracy vs FLOPs): hypervolume of the evaluated cells' front at 20 and 50 evaluations,
  as a share of the hypervolume of the true feasible front (reference point: the median feasible
  accuracy and the largest feasible FLOPs).

Strategies: `random` (uniform over the feasible cells), `rea` (REA whose population and mutations
stay feasible: up to 50 mutation tries, then the nearest feasible cell), `copy-top` (the source's
cells under the limits in the source's order: by source accuracy, as in baselines.py; in Pareto
mode the source's (accuracy, FLOPs) front, then its next fronts), and `agent` (the agents with
`--llm none`, source table cut to the same limits). In Pareto mode the fitness of random, REA
and the agents is the non-domination rank (`tools.pareto.ParetoProposer`); copy-top ignores it.

    archlore experiment constrained --seeds 30 --split heldout --out benchmarks/results/constrained-nb201.json
    (or python -m archlore.benchmarks.constrained with the same options)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from archlore.tools.constraints import constrain_table, format_limits
from archlore.tools.evaluator import Evaluator
from archlore.tools.ledger import Ledger
from archlore.tools.pareto import (
    Objectives,
    ParetoProposer,
    hypervolume_2d,
    nondominated,
)
from archlore.tools.spaces import Arch, SearchSpace, SpaceFilter
from archlore.tools.strategies import REA, run_search
from archlore.tools.tables import Table, load_table

from . import protocols as P
from .harness import StrategyRequest, dumps, make_request

PAIRS = (("cifar100", "cifar10"), ("cifar10", "cifar100"), ("imagenet16-120", "cifar100"))
STRATEGIES = ("random", "rea", "copy-top", "agent")
BUDGET = 50
AT = (20, 50)
COST = "flops"  # the Pareto mode's second objective


def nb201_limits(table: Table) -> dict[str, float]:
    """FLOPs at most half the space's maximum; latency at most the space's median."""
    return {"flops": float(np.nanmax(table.cost["flops"])) / 2, "latency": float(np.nanmedian(table.cost["latency"]))}


def protocol() -> P.Protocol:
    return P.Protocol(
        "constrained-nb201", "nb201", budget=BUDGET, population=10, tournament=5, k=2, top_n=50,
        targets=tuple(t for t, _ in PAIRS), source=None,
        description="NB201 under FLOPs <= max/2 and latency <= median: evaluations to the constrained top-0.1%, hypervolume",
        metrics=(), tables=(), compare=(), plot_metrics=(),
    )


# -- strategies -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeasibleRandom:
    """Uniform over the feasible cells not evaluated yet."""

    feasible: tuple[int, ...]
    name: str = "random"

    def propose(self, space: SearchSpace, history, flt: SpaceFilter, rng: np.random.Generator) -> Arch:
        seen = {space.index(a) for a, _ in history}
        left = [i for i in self.feasible if i not in seen]
        return space.from_index(int(left[rng.integers(len(left))]))


@dataclass(frozen=True)
class FeasibleREA:
    """REA whose initial population is feasible and whose mutations are retried until feasible."""

    feasible: frozenset[int]
    population: int = 10
    tournament: int = 5
    name: str = "rea"

    def propose(self, space: SearchSpace, history, flt: SpaceFilter, rng: np.random.Generator) -> Arch:
        seen = {a for a, _ in history}
        if len(history) >= self.population:
            pop = list(history[-self.population:])
            picks = rng.choice(len(pop), size=self.tournament, replace=False)
            parent = max((pop[i] for i in picks), key=lambda h: h[1])[0]
            for _ in range(50):
                child = space.mutate(parent, rng, flt)
                if child not in seen and space.index(child) in self.feasible:
                    return child
            return REA(self.population, self.tournament).propose(space, history, flt, rng)  # repaired by nearest_known
        return FeasibleRandom(tuple(sorted(self.feasible))).propose(space, history, flt, rng)


@dataclass(frozen=True)
class FeasibleCopyTop:
    """The source's cells in the given order (all feasible: the source table is cut to the limits
    too), then uniform over the feasible cells once they are used up."""

    order: tuple[Arch, ...]
    feasible: tuple[int, ...]
    name: str = "copy-top"

    def propose(self, space: SearchSpace, history, flt: SpaceFilter, rng: np.random.Generator) -> Arch:
        seen = {a for a, _ in history}
        for a in self.order:
            if a not in seen:
                return a
        return FeasibleRandom(self.feasible).propose(space, history, flt, rng)


def copy_top_order(req: StrategyRequest, budget: int) -> tuple[Arch, ...]:
    """Single objective: the source's best feasible cells by validation accuracy (baselines.py's
    copy-top under the limits). Pareto mode: the source's (accuracy, FLOPs) front, best source
    accuracy first, then its next fronts (non-domination ranks 1, 2, ...) until `budget` cells."""
    assert req.view is not None and req.source is not None, "copy-top needs a source"
    if not req.options.get("pareto"):
        return tuple(a for a, _ in req.view.top_cells(req.source, budget))
    cells = req.view.ranked(req.source)  # best source accuracy first: the order within a front
    key = (req.source, budget, hash(cells.tobytes()))
    if key not in _FRONT_ORDER:
        source_valid = np.array([v for _, v in req.view.top_cells(req.source, cells.size)])
        pts = np.stack([source_valid, -req.sealed_table().cost[COST][cells]], axis=1)
        left, order = np.arange(cells.size), []
        while left.size and len(order) < budget:  # peel fronts off until the budget is covered
            front = left[nondominated(pts[left])]  # ascending positions: best source accuracy first
            order.extend(int(cells[i]) for i in front)
            left = np.setdiff1d(left, front)
        _FRONT_ORDER[key] = tuple(order[:budget])
    return tuple(req.space.from_index(i) for i in _FRONT_ORDER[key])


_FRONT_ORDER: dict[tuple, tuple[int, ...]] = {}  # the same for every seed: computed once per source


def _search(req: StrategyRequest, proposer) -> None:
    ledger = Ledger(None)
    try:
        evaluator = Evaluator(req.executor(), ledger, req.run_id, req.budget)
        run_search(proposer, evaluator, None, req.budget, seed=req.seed)
    finally:
        ledger.close()


def _pareto(req: StrategyRequest, proposer):
    if not req.options.get("pareto"):
        return proposer
    return ParetoProposer(proposer, Objectives.of(req.sealed_table(), [req.target, COST]))


def run_strategy(name: str, req: StrategyRequest) -> list[int]:
    feasible = req.executor().known()
    if name == "random":
        _search(req, _pareto(req, FeasibleRandom(tuple(int(i) for i in feasible))))
    elif name == "rea":
        _search(req, _pareto(req, FeasibleREA(frozenset(int(i) for i in feasible), req.population, req.tournament)))
    elif name == "copy-top":  # ignores fitness: in Pareto mode its order is already the source's fronts
        _search(req, FeasibleCopyTop(copy_top_order(req, req.budget), tuple(int(i) for i in feasible)))
    elif name == "agent":
        from archlore.agents.context import RunSettings
        from archlore.agents.runner import execute

        settings = RunSettings(
            run_id=f"c-{req.target}-{req.seed}", space="nb201", target=req.target, source=req.source, budget=req.budget,
            llm="none", seed=req.seed, memory="off", remember=False, recall_same_task=False,
            objectives=[req.target, COST] if req.options.get("pareto") else [],
        )
        ledger = Ledger(None)
        try:
            execute(settings, ledger=ledger, table=req.sealed_table(), use_llm_spec=False)
        finally:
            ledger.close()
    else:
        raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}")
    return req._access().evaluated


# -- metrics ----------------------------------------------------------------------------------
def evals_to(valid: np.ndarray, cells: Sequence[int], threshold: float, budget: int) -> int | None:
    for n, i in enumerate(cells, start=1):
        if valid[i] >= threshold:
            return n
    return None


def front_hv(table: Table, target: str, cells: Sequence[int], ref: tuple[float, float]) -> float:
    idx = np.asarray(cells, dtype=np.int64)
    pts = np.stack([table.valid[target][idx], -table.cost[COST][idx]], axis=1)
    return hypervolume_2d(pts, ref)


def run(
    seeds: P.Seeds, *, data: str | None = None, strategies: Sequence[str] = STRATEGIES,
    pairs: Sequence[tuple[str, str]] = PAIRS, progress: Callable[[str], None] | None = None,
) -> dict:
    full = load_table("nb201", data)
    limits = nb201_limits(full)
    table = constrain_table(full, limits)
    proto = protocol()
    rows = []
    started = time.perf_counter()
    fronts: dict[str, dict] = {}
    for target, source in pairs:
        valid = table.valid[target]
        feasible = table.known(target)
        top = max(1, math.ceil(0.001 * feasible.size - 1e-9))
        threshold = float(np.sort(valid[feasible])[-top])
        best_feasible = float(np.nanmax(valid))
        pts = np.stack([valid[feasible], -table.cost[COST][feasible]], axis=1)
        # the reference: the median feasible accuracy (a cell below it adds nothing) and the largest
        # feasible FLOPs; with the worst accuracy (~10%) every strategy scores above 0.9
        ref = (float(np.median(pts[:, 0])), float(pts[:, 1].min()) - 1e-9)
        true_front = feasible[nondominated(pts)]
        hv_max = front_hv(table, target, true_front, ref)
        fronts[target] = {"true": [[float(valid[i]), float(table.cost[COST][i])] for i in true_front]}
        for pareto in (False, True):
            for name in strategies:
                t0 = time.perf_counter()
                per_seed: dict[str, list] = {"evals_to_top01": [], "hit": [], "valid_regret@20": [], "valid_regret@50": [],
                                             "hv@20": [], "hv@50": [], "violations": []}
                for seed in seeds.values:
                    req = make_request(table, proto, target, source, seed, options={"pareto": pareto})
                    cells = run_strategy(name, req)
                    over = int(sum(1 for i in cells if full.cost["flops"][i] > limits["flops"] or full.cost["latency"][i] > limits["latency"]))
                    per_seed["violations"].append(over)
                    e = evals_to(valid, cells, threshold, BUDGET)
                    per_seed["evals_to_top01"].append(BUDGET if e is None else e)
                    per_seed["hit"].append(e is not None)
                    for at in AT:
                        per_seed[f"valid_regret@{at}"].append(best_feasible - float(max(valid[i] for i in cells[:at])))
                        per_seed[f"hv@{at}"].append(front_hv(table, target, cells[:at], ref) / hv_max)
                    if pareto and seed == seeds.values[0]:
                        fronts[target][name] = [[float(valid[i]), float(table.cost[COST][i])] for i in
                                                np.asarray(cells)[nondominated(np.stack([valid[cells], -table.cost[COST][cells]], axis=1))]]
                row = {"mode": "pareto" if pareto else "single", "strategy": name, "target": target, "source": source,
                       "seeds": len(per_seed["hit"]), "wall_s": round(time.perf_counter() - t0, 2)}
                for k, v in per_seed.items():
                    arr = np.asarray(v, dtype=float)
                    row[k] = round(float(arr.mean()), 4)
                    row[k + "_se"] = round(float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else 0.0, 4)
                row["per_seed"] = per_seed
                rows.append(row)
                if progress:
                    progress(f"{row['mode']} {name} {target}<-{source}: evals to top-0.1% {row['evals_to_top01']:.1f}, "
                             f"HV@20 {row['hv@20']:.3f}, HV@50 {row['hv@50']:.3f}, violations {row['violations']:.0f} "
                             f"({row['wall_s']:.0f} s)")
    return {
        "protocol": proto.name, "description": proto.description,
        "settings": {"limits": limits, "limits_text": format_limits(limits), "feasible_cells": int(table.known(pairs[0][0]).size),
                     "budget": BUDGET, "seeds": seeds.to_json(), "strategies": list(strategies), "pairs": [list(p) for p in pairs],
                     "wall_s": round(time.perf_counter() - started, 1)},
        "rows": rows, "fronts": fronts,
    }


def markdown(payload: dict) -> str:
    s = payload["settings"]
    seeds = P.Seeds(**s["seeds"])
    out = [(f"### constrained-nb201: {s['limits_text']} ({s['feasible_cells']} of 15,625 cells feasible); "
           f"{seeds.describe()}; budget {s['budget']}"), ""]
    head = "| target ← source | strategy | evals to constrained top-0.1% | P(hit ≤ 50) | valid regret @20 | @50 | cells over a limit |"
    out += ["single objective (validation accuracy); mean ± s.e. over seeds, a miss counts 50", "", head,
            "|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        if r["mode"] == "single":
            out.append(f"| {r['target']} ← {r['source']} | {r['strategy']} | {r['evals_to_top01']:.1f} ± {r['evals_to_top01_se']:.1f} | "
                       f"{r['hit']:.2f} | {r['valid_regret@20']:.2f} | {r['valid_regret@50']:.2f} | {r['violations']:.0f} |")
    out += ["", "Pareto mode (accuracy vs FLOPs): hypervolume as a share of the true feasible front's (reference: median feasible accuracy, largest feasible FLOPs)", "",
            "| target ← source | strategy | HV @20 | HV @50 | cells over a limit |", "|---|---|---|---|---|"]
    for r in payload["rows"]:
        if r["mode"] == "pareto":
            out.append(f"| {r['target']} ← {r['source']} | {r['strategy']} | {r['hv@20']:.3f} ± {r['hv@20_se']:.3f} | "
                       f"{r['hv@50']:.3f} ± {r['hv@50_se']:.3f} | {r['violations']:.0f} |")
    return "\n".join(out) + "\n"


def plot(payload: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    targets = [p[0] for p in payload["settings"]["pairs"]]
    strategies = payload["settings"]["strategies"]
    fig = Figure(figsize=(4.5 * len(targets), 7.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(targets), squeeze=False)
    for j, target in enumerate(targets):
        ax = axes[0][j]
        for k, name in enumerate(strategies):
            for m, (mode, key) in enumerate((("single", "evals_to_top01"), ("pareto", "hv@50"))):
                r = next(r for r in payload["rows"] if r["target"] == target and r["strategy"] == name and r["mode"] == mode)
                if m == 0:
                    ax.bar(k, r[key], yerr=r[key + "_se"], color=f"C{k}", label=name)
        ax.set_xticks(range(len(strategies)), strategies)
        ax.set_title(f"{target}: evals to constrained top-0.1%")
        ax2 = axes[1][j]
        fr = payload["fronts"][target]
        true = np.array(sorted(fr["true"], key=lambda p: p[1]))
        ax2.step(true[:, 1] / 1e6, true[:, 0], where="post", color="k", label="true feasible front")
        for k, name in enumerate(strategies):
            if name in fr:
                pts = np.array(sorted(fr[name], key=lambda p: p[1]))
                ax2.plot(pts[:, 1] / 1e6, pts[:, 0], "o-", color=f"C{k}", label=f"{name} (first seed, 50 evals)", ms=4)
        ax2.set_xlabel("FLOPs (M)")
        ax2.set_ylabel(f"{target} validation accuracy")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - a script
    ap = argparse.ArgumentParser(prog="archlore experiment constrained", description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--split", default="heldout")
    ap.add_argument("--data", default=None)
    ap.add_argument("--strategy", action="append", choices=STRATEGIES)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/constrained-nb201.json"))
    a = ap.parse_args(argv)
    payload = run(P.seed_range(a.seeds, split=a.split), data=a.data, strategies=a.strategy or STRATEGIES,
                  progress=lambda m: print(m, flush=True))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(dumps(payload) + "\n")
    a.out.with_suffix(".md").write_text(markdown(payload))
    plot(payload, a.out.with_suffix(".png"))
    print(json.dumps({"files": [str(a.out), str(a.out.with_suffix('.md')), str(a.out.with_suffix('.png'))]}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
