"""The benchmark harness: a registry of strategies and `run_bench`, which runs a protocol.

A strategy is a function `StrategyRequest -> list[Evaluation]` (the run's evaluations in order).
The built-ins `random`, `rea` and `freq-prior` run through tools (TabularExecutor, an in-memory
Ledger, Evaluator, run_search). Others register themselves: asking for an unregistered name
imports `archlore.benchmarks.strategies_<name>` (dashes as underscores), which is expected to call
`register_strategy` on import; that is how the agents add `agent` without this module knowing
them.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from archlore.tools.errors import ArchloreError, ConfigError
from archlore.tools.evaluator import Evaluator
from archlore.tools.evidence import all_cells, frequency_filter
from archlore.tools.executors import TabularExecutor
from archlore.tools.ledger import Evaluation, Ledger
from archlore.tools.spaces import SpaceFilter
from archlore.tools.strategies import REA, Proposer, RandomSearch, run_search, widen_to_full
from archlore.tools.tables import Table, load_table

from . import protocols as P

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StrategyRequest:
    """Everything one run of a strategy gets: the table, the task pair, the seed and settings."""

    table: Table
    space_name: str
    target: str
    source: str | None
    seed: int
    budget: int
    population: int
    tournament: int
    k: int
    top_n: int
    options: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"llm": "none"}

    @property
    def run_id(self) -> str:
        return f"{self.target}<-{self.source or '-'}/seed{self.seed}"


StrategyFn = Callable[[StrategyRequest], list[Evaluation]]

# name -> (function, needs_source)
STRATEGIES: dict[str, tuple[StrategyFn, bool]] = {}

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def register_strategy(name: str, fn: StrategyFn, *, needs_source: bool) -> None:
    """Add (or replace) a strategy under `name`."""
    if not _NAME.match(name):
        raise ConfigError(f"strategy name {name!r} is invalid: use lower-case letters, digits, '-' or '_'")
    if name in STRATEGIES:
        log.debug("strategy %s replaced", name)
    STRATEGIES[name] = (fn, needs_source)


def plugin_module(name: str) -> str:
    return f"{__package__}.strategies_{name.replace('-', '_')}"


def get_strategy(name: str) -> tuple[StrategyFn, bool]:
    """A registered strategy, importing its plugin module first when it is not registered yet."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    if not _NAME.match(name):
        raise ConfigError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}")
    module = plugin_module(name)
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # the plugin exists but one of its imports is missing
            raise ConfigError(
                f"strategy {name!r} needs the module {exc.name!r}, which is not installed: install it"
            ) from None
        raise ConfigError(
            f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)} "
            f"(or add {module} that calls register_strategy)"
        ) from None
    if name not in STRATEGIES:
        raise ConfigError(f"{module} was imported but did not register strategy {name!r}: call register_strategy")
    return STRATEGIES[name]


def run_strategy(name: str, request: StrategyRequest) -> list[Evaluation]:
    """Run one strategy once, checking the contract (a source when needed, the budget kept)."""
    fn, needs_source = get_strategy(name)
    if needs_source and request.source is None:
        raise ConfigError(f"strategy {name!r} needs a source task: pass --sources")
    evals = list(fn(request))
    if not evals:
        raise ArchloreError(f"strategy {name!r} returned no evaluations for {request.run_id}: it must evaluate at least one cell")
    if len(evals) > request.budget:
        raise ArchloreError(
            f"strategy {name!r} returned {len(evals)} evaluations for a budget of {request.budget}: "
            "it must stop at the budget"
        )
    return evals


# ---------------------------------------------------------------------------------------------
# built-in strategies
def _search(req: StrategyRequest, proposer: Proposer, flt: SpaceFilter | None = None, widen=None) -> list[Evaluation]:
    ledger = Ledger(None)
    try:
        evaluator = Evaluator(TabularExecutor(req.table, req.target), ledger, req.run_id, req.budget)
        run_search(proposer, evaluator, flt, req.budget, seed=req.seed, widen=widen)
        return evaluator.history
    finally:
        ledger.close()


def random_strategy(req: StrategyRequest) -> list[Evaluation]:
    """Uniform random search over the full space, no repeats."""
    return _search(req, RandomSearch())


def rea_strategy(req: StrategyRequest) -> list[Evaluation]:
    """Regularized evolution over the full space."""
    return _search(req, REA(req.population, req.tournament))


_PRIORS: dict[tuple, tuple[object, SpaceFilter]] = {}


def prior_filter(table: Table, source: str, *, k: int, top_n: int) -> SpaceFilter:
    """The frequency prior of a source task: per edge, the k most frequent choices of its top-N cells."""
    table.check_task(source)
    values = table.valid[source]
    key = (id(values), source, k, top_n)
    hit = _PRIORS.get(key)
    if hit is None or hit[0] is not values:
        hit = (values, frequency_filter(table.space, all_cells(table, source), k=k, top_n=top_n))
        _PRIORS[key] = hit  # holding the array keeps its id from being reused
    return hit[1]


def freq_prior_strategy(req: StrategyRequest) -> list[Evaluation]:
    """REA inside the source's frequency prior; if the prior is used up, it goes on in the full space."""
    if req.source is None:
        raise ConfigError("freq-prior needs a source task: pass --sources")
    if req.source == req.target:
        raise ConfigError(
            f"freq-prior source and target are both {req.target!r}: a prior from the target's own "
            "table would leak its answers; pass a different --sources"
        )
    flt = prior_filter(req.table, req.source, k=req.k, top_n=req.top_n)
    return _search(req, REA(req.population, req.tournament), flt, widen_to_full(req.table.space))


register_strategy("random", random_strategy, needs_source=False)
register_strategy("rea", rea_strategy, needs_source=False)
register_strategy("freq-prior", freq_prior_strategy, needs_source=True)


# ---------------------------------------------------------------------------------------------
# running a protocol
_RESERVED = {
    "strategy", "space", "target", "source", "seeds", "wall_s", "threshold", "budgets",
    "mean_evals_to_top", "p_hit", "test_at_stop", "test_at_budget", "mean_percentile", "p_top1",
}


def _check_tasks(kind: str, names: Sequence[str], table: Table, space: str) -> list[str]:
    out = []
    for n in names:
        if n not in table.tasks:
            raise ConfigError(f"unknown {kind} {n!r} for space {space}: use one of {', '.join(table.tasks)}")
        if n not in out:
            out.append(n)
    if not out:
        raise ConfigError(f"no {kind}s given: name at least one of {', '.join(table.tasks)}")
    return out


def plan_rows(
    proto: P.BenchProtocol, strategies: Sequence[str], table: Table,
    targets: Sequence[str] | None, sources: Sequence[str] | None,
) -> list[tuple[str, str, str | None]]:
    """The (strategy, target, source) rows to run, in order."""
    tgts = _check_tasks("target", targets if targets is not None else proto.targets, table, proto.space)
    srcs = _check_tasks("source", sources, table, proto.space) if sources is not None else None
    rows: list[tuple[str, str, str | None]] = []
    for name in strategies:
        _, needs_source = get_strategy(name)
        if not needs_source:
            rows.extend((name, t, None) for t in tgts)
            continue
        pairs = [(t, s) for t in tgts for s in (srcs if srcs is not None else proto.default_sources(t, table.tasks)) if s != t]
        if not pairs:
            raise ConfigError(
                f"strategy {name!r} needs a source other than its target, but every source given is a "
                f"target ({', '.join(tgts)}): pass other --sources or --targets"
            )
        rows.extend((name, t, s) for t, s in pairs)
    return rows


def _out_paths(out: Path, proto: P.BenchProtocol) -> Path:
    out = Path(out)
    if out.suffix == ".json":
        return out
    stem = proto.name if proto.name != P.CURVES else f"curves-{proto.space}"
    return out / f"{stem}.json"


def run_bench(
    protocol: str,
    strategies: list[str],
    *,
    targets: list[str] | None,
    sources: list[str] | None,
    seeds: int,
    out: Path,
    data: str | Path | None,
    options: Mapping[str, Any] = {},
    space: str | None = None,
    budgets: list[int] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run a protocol for each strategy, seeds 0..seeds-1, and write FILE.json, FILE.md, FILE.png.

    `out` is the JSON path (FILE.json) or a folder (then FILE is the protocol's name, or
    curves-<space>). Returns the written payload plus `files`.
    """
    proto = P.get_protocol(protocol, space=space, budgets=budgets)
    if not strategies:
        raise ConfigError(f"no strategies given: name at least one of {', '.join(STRATEGIES)}")
    if seeds < 1:
        raise ConfigError(f"seeds must be at least 1, got {seeds}")
    names = list(dict.fromkeys(strategies))
    for name in names:
        get_strategy(name)
    opts = dict(options)
    clash = sorted(set(opts) & _RESERVED)
    if clash:
        raise ConfigError(f"option(s) {', '.join(clash)} would overwrite row fields: rename them")
    table = load_table(proto.space, data)
    plan = plan_rows(proto, names, table, targets, sources)
    json_path = _out_paths(out, proto)
    json_path.parent.mkdir(parents=True, exist_ok=True)

    row_extra = {k: v for k, v in opts.items() if v is None or isinstance(v, (str, int, float, bool))}
    frozen_opts = MappingProxyType(opts)
    plan_targets = list(dict.fromkeys(t for _, t, _ in plan))
    thresholds = {t: table.threshold(t, proto.top_k) for t in plan_targets} if proto.name == "lapt-nb201" else {}
    scales = {t: P.CurveScale.of(table, t) for t in plan_targets} if proto.name == P.CURVES else {}

    started = time.perf_counter()
    rows = []
    for i, (name, target, source) in enumerate(plan, start=1):
        t0 = last = time.perf_counter()
        scores = []
        for seed in range(seeds):
            if progress and time.perf_counter() - last > 10.0:  # slow strategies (agents) show life
                last = time.perf_counter()
                progress(f"[{i}/{len(plan)}] {proto.name} {name} {target} <- {source or '-'}: seed {seed}/{seeds}")
            req = StrategyRequest(
                table, proto.space, target, source, seed, proto.budget, proto.population,
                proto.tournament, proto.k, proto.top_n, frozen_opts,
            )
            evals = run_strategy(name, req)
            if proto.name == "lapt-nb201":
                scores.append(P.score_top_hit(evals, thresholds[target], proto.budget))
            elif proto.name == "lapt-tnb101":
                scores.append(P.score_percentile(evals, table, target))
            else:
                scores.append(P.score_curve(evals, table, target, proto.budgets, scales[target]))
        row: dict[str, Any] = {"strategy": name, "space": proto.space, "target": target, "source": source, "seeds": seeds}
        row.update(row_extra)
        if proto.name == "lapt-nb201":
            row["threshold"] = round(thresholds[target], 4)
            row.update(P.aggregate_top_hit(scores))
        elif proto.name == "lapt-tnb101":
            row.update(P.aggregate_percentile(scores, proto.top_percentile))
        else:
            row.update(P.aggregate_curves(scores, proto.budgets))
        row["wall_s"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
        if progress:
            progress(f"[{i}/{len(plan)}] {proto.name} {name} {target} <- {source or '-'}: {_headline(row)} ({row['wall_s']:.1f} s)")

    settings = {
        **proto.settings(),
        "seeds": seeds,
        "strategies": names,
        "targets": plan_targets,
        "sources": sources,
        "options": {k: v for k, v in opts.items() if k in row_extra},
        "table": table.source,
        "wall_s": round(time.perf_counter() - started, 3),
    }
    if thresholds:
        settings["thresholds"] = {t: round(v, 4) for t, v in thresholds.items()}
    payload = {"protocol": proto.name, "description": proto.description, "settings": settings, "rows": rows}
    json_path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    md_path = json_path.with_suffix(".md")
    md_path.write_text(markdown(payload))
    png_path = json_path.with_suffix(".png")
    from . import plots  # matplotlib is slow to import; only runs that write files need it

    plots.plot(payload, png_path)
    log.info("wrote %s, %s, %s", json_path, md_path, png_path)
    return {**payload, "files": {"json": str(json_path), "md": str(md_path), "png": str(png_path)}}


def _headline(row: dict) -> str:
    if "mean_evals_to_top" in row:
        return f"{row['mean_evals_to_top']:.2f} evals, P(hit) {row['p_hit']:.3f}"
    if "mean_percentile" in row:
        return f"percentile {row['mean_percentile']:.2f}, P(top-1%) {row['p_top1']:.3f}"
    return f"valid percentile at {row['budgets'][-1]}: {row['valid_percentile'][-1]:.2f}"


# ---------------------------------------------------------------------------------------------
# markdown
def _f(x: Any, nd: int = 2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _pm(m: Any, ci: Any, nd: int = 2) -> str:
    return "–" if m is None else f"{m:.{nd}f} ± {_f(ci, nd)}"


def _extra_columns(rows: Sequence[dict], known: set[str]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in known and not k.endswith(("_std", "_ci95")) and k not in cols)
    return cols


def _md_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out) + "\n"


def markdown(payload: dict) -> str:
    """The payload's rows as markdown tables (means ± 95% CI half-widths)."""
    s, rows, proto = payload["settings"], payload["rows"], payload["protocol"]
    head = (
        f"### {proto} on {s['space']}: {s['seeds']} seeds, budget {s['budget']}, "
        f"REA({s['population']}, {s['tournament']}), prior k={s['k']} top-{s['top_n']}\n\n"
    )
    base = ["strategy", "target", "source", "seeds"]
    common = {*base, "space", "wall_s"}
    if proto == "lapt-nb201":
        fields = {"threshold", "mean_evals_to_top", "p_hit", "test_at_stop", "test_at_budget"}
        extra = _extra_columns(rows, common | fields)
        header = base + extra + [
            "evals to top-0.1% (mean ± CI)", f"P(hit ≤ {s['budget']})", "test at hit", f"test at {s['budget']}",
        ]
        lines = [
            [r["strategy"], r["target"], r["source"] or "–", str(r["seeds"]), *(str(r.get(c, "–")) for c in extra),
             _pm(r["mean_evals_to_top"], r["evals_ci95"]), _pm(r["p_hit"], r["p_hit_ci95"], 3),
             _f(r["test_at_stop"]), _f(r["test_at_budget"])]
            for r in rows
        ]
        return head + _md_table(header, lines)
    if proto == "lapt-tnb101":
        extra = _extra_columns(rows, common | {"mean_percentile", "p_top1"})
        header = base + extra + ["percentile (mean ± CI)", "P(top-1%)"]
        lines = [
            [r["strategy"], r["target"], r["source"] or "–", str(r["seeds"]), *(str(r.get(c, "–")) for c in extra),
             _pm(r["mean_percentile"], r["percentile_ci95"]), _pm(r["p_top1"], r["p_top1_ci95"], 3)]
            for r in rows
        ]
        return head + _md_table(header, lines)
    curves = ("valid_percentile", "valid_regret", "test_percentile", "test_regret")
    titles = {
        "valid_percentile": "best-so-far validation percentile (100 = best)",
        "valid_regret": "validation regret (best validation of the space minus the best found)",
        "test_percentile": "test percentile of the best-by-validation cell",
        "test_regret": "test regret of the best-by-validation cell (best test of the space minus its test)",
    }
    extra = _extra_columns(rows, common | {"budgets", *curves})
    out = [head]
    for key in curves:
        if not any(r.get(key) for r in rows):
            continue
        nd = 2 if "percentile" in key else 3
        header = base + extra + [f"@{b}" for b in s["budgets"]]
        lines = [
            [r["strategy"], r["target"], r["source"] or "–", str(r["seeds"]), *(str(r.get(c, "–")) for c in extra),
             *(_f(v, nd) for v in (r[key] or [None] * len(s["budgets"])))]
            for r in rows
        ]
        out.append(f"{titles[key]}:\n\n" + _md_table(header, lines))
    return "\n".join(out)
