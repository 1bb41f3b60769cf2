"""The benchmark harness: a registry of strategies and `run_bench`, which runs a protocol.

A strategy is a function of a `StrategyRequest`. It never gets the benchmark table: it gets the
source task's `SourceView` (copies of its validation values) and the target's executor, which is
the only path to target metrics and answers only for the cells it evaluates (`access`). The
harness logs those cells and scores them itself (thresholds, percentiles, regret: `protocols`), so
what a strategy returns is not used. Strategies that need a table to build their own executor (the
agents' runner) get `request.sealed_table()`: the source's validation copy and the metered target.

The baselines (`baselines`) register themselves here; other strategies register on import:
asking for an unregistered name imports `archlore.benchmarks.strategies_<name>` (dashes as
underscores), which is expected to call `register_strategy`; that is how the agents add `agent`.
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

import numpy as np

from archlore.tools.errors import ArchloreError, ConfigError
from archlore.tools.evaluator import Evaluator
from archlore.tools.executors import Executor
from archlore.tools.ledger import Ledger
from archlore.tools.source_view import SourceView
from archlore.tools.spaces import SearchSpace
from archlore.tools.tables import Table, load_table

from . import protocols as P
from .access import TargetAccess, missing_masks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StrategyRequest:
    """What one run of a strategy gets: the source's view, the target's executor, seed, settings."""

    space: SearchSpace
    space_name: str  # what archlore.tools.spaces.get_space accepts: a built-in name or a space file
    target: str  # the target's name only; its metrics come through `executor()`
    source: str | None
    view: SourceView | None  # the source's validation values (copies); None without a source
    seed: int
    budget: int
    population: int
    tournament: int
    k: int
    top_n: int
    options: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"llm": "none"}
    access: TargetAccess | None = field(default=None, repr=False, compare=False)

    @property
    def run_id(self) -> str:
        return f"{self.target}<-{self.source or '-'}/seed{self.seed}"

    def _access(self) -> TargetAccess:
        if self.access is None:
            raise ConfigError("this request has no target access: build requests with make_request")
        return self.access

    def executor(self) -> Executor:
        """The target's executor: each new cell it evaluates is logged and charged to the budget."""
        return self._access().executor()

    def evaluator(self, ledger: Ledger) -> Evaluator:
        return Evaluator(self.executor(), ledger, self.run_id, self.budget)

    def sealed_table(self) -> Table:
        """For code that builds its own executor from a table (the agents' runner): the source's
        validation copy and the metered target column, nothing else."""
        return self._access().sealed_table()


StrategyFn = Callable[[StrategyRequest], object]
Preflight = Callable[[str, Sequence[tuple[str, str | None]], Mapping[str, Any]], None]


@dataclass(frozen=True)
class StrategyInfo:
    fn: StrategyFn
    needs_source: bool
    baseline: bool = False  # a baseline the others are compared with
    preflight: Preflight | None = None  # (space name, [(target, source)], options): checks before any run


STRATEGIES: dict[str, StrategyInfo] = {}

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def register_strategy(
    name: str, fn: StrategyFn, *, needs_source: bool, baseline: bool = False, preflight: Preflight | None = None,
) -> None:
    """Add (or replace) a strategy under `name`."""
    if not _NAME.match(name):
        raise ConfigError(f"strategy name {name!r} is invalid: use lower-case letters, digits, '-' or '_'")
    if name in STRATEGIES:
        log.debug("strategy %s replaced", name)
    STRATEGIES[name] = StrategyInfo(fn, needs_source, baseline, preflight)


def plugin_module(name: str) -> str:
    return f"{__package__}.strategies_{name.replace('-', '_')}"


def get_strategy(name: str) -> StrategyInfo:
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


def make_request(
    table: Table, proto: P.Protocol, target: str, source: str | None, seed: int, *,
    options: Mapping[str, Any] = MappingProxyType({}), view: SourceView | None = None,
    source_valid: np.ndarray | None = None, space_name: str | None = None,
    missing: dict[str, np.ndarray] | None = None,
) -> StrategyRequest:
    """A request with a fresh metered access to the target (pass `view`/`source_valid` to share
    the source's read-only copies between seeds)."""
    if source is not None:
        if view is None:
            view = SourceView(table, [source], target=target)
        if source_valid is None:
            source_valid = _readonly_copy(table, source)
    access = TargetAccess(table, target, proto.budget, source=source, source_valid=source_valid, missing=missing)
    return StrategyRequest(
        table.space, space_name or proto.space, target, source, view, seed, proto.budget, proto.population,
        proto.tournament, proto.k, proto.top_n, MappingProxyType(dict(options)), access,
    )


def _readonly_copy(table: Table, task: str) -> np.ndarray:
    v = np.array(table.valid[task], dtype=np.float64, copy=True)
    v.setflags(write=False)
    return v


def run_strategy(name: str, request: StrategyRequest, usage: list | None = None) -> list[int]:
    """Run one strategy once; returns the indices of the cells it evaluated, in order.

    A strategy that returns `{"usage": {...}}` (the agents: LLM tokens, seconds, cost) has it
    appended to `usage`; the harness averages it into the row's `llm_usage`.
    """
    info = get_strategy(name)
    if info.needs_source and request.source is None:
        raise ConfigError(f"strategy {name!r} needs a source task: pass --source")
    result = info.fn(request)
    if usage is not None and isinstance(result, Mapping) and isinstance(result.get("usage"), Mapping):
        usage.append(result["usage"])
    cells = request._access().evaluated
    if not cells:
        raise ArchloreError(f"strategy {name!r} evaluated no cell for {request.run_id}: it must evaluate at least one")
    return cells


# ---------------------------------------------------------------------------------------------
# running a protocol
_RESERVED = {
    "strategy", "space", "target", "source", "seeds", "wall_s", "baseline", "per_seed", "options", "llm_usage",
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
    proto: P.Protocol, strategies: Sequence[str], table: Table,
    targets: Sequence[str] | None, sources: Sequence[str] | None,
) -> list[tuple[str, str, str | None]]:
    """The (strategy, target, source) rows to run, in order."""
    if targets is None and not proto.targets:
        raise ConfigError(f"protocol {proto.name} has no default targets: pass --target (one of {', '.join(table.tasks)})")
    tgts = _check_tasks("target", targets if targets is not None else proto.targets, table, proto.space)
    srcs = _check_tasks("source", sources, table, proto.space) if sources is not None else None
    rows: list[tuple[str, str, str | None]] = []
    for name in strategies:
        if not get_strategy(name).needs_source:
            rows.extend((name, t, None) for t in tgts)
            continue
        pairs = [(t, s) for t in tgts for s in (srcs if srcs is not None else proto.default_sources(t, table.tasks)) if s != t]
        if not pairs:
            raise ConfigError(
                f"strategy {name!r} needs a source other than its target, but every source given is a "
                f"target ({', '.join(tgts)}): pass other --source or --target"
            )
        rows.extend((name, t, s) for t, s in pairs)
    return rows


def _out_path(out: Path, proto: P.Protocol) -> Path:
    out = Path(out)
    if out.suffix == ".json":
        return out
    return out / f"{proto.file_stem}.json"


def _json_value(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if v is None:
        return None
    return round(float(v), 6)


def run_bench(
    protocol: str | P.Protocol,
    strategies: list[str],
    *,
    targets: list[str] | None,
    sources: list[str] | None,
    seeds: int,
    out: Path,
    data: str | Path | None = None,
    table: Table | None = None,
    options: Mapping[str, Any] = {},
    space: str | None = None,
    budgets: list[int] | None = None,
    budget: int | None = None,
    split: str = "dev",
    seed_start: int | None = None,
    progress: Callable[[str], None] | None = None,
    cluster: str | None = None,
) -> dict:
    """Run a protocol for each strategy over `seeds` seeds of a split; write FILE.json, .md, .png.

    With `cluster` (local, auto, ray://HOST:PORT) each seed's run is a Ray task, so many seeds
    spread over the cluster's cores; the results are the same as run here, seed by seed.

    `table` replaces the built-in table of the protocol's space (a user space's CSV, or a test's
    table); `space` names the space for `curves` and `custom` (a built-in name or a space file).
    `out` is the JSON path or a folder (then FILE is the protocol's name, or curves-<space>).
    Returns the written payload plus `files`.
    """
    proto = protocol if isinstance(protocol, P.Protocol) else P.get_protocol(protocol, space=space, budgets=budgets, budget=budget)
    seed_info = P.seed_range(seeds, split=split, start=seed_start)
    if not strategies:
        raise ConfigError(f"no strategies given: name at least one of {', '.join(STRATEGIES)}")
    names = list(dict.fromkeys(strategies))
    infos = {name: get_strategy(name) for name in names}
    opts = dict(options)
    clash = sorted(set(opts) & (_RESERVED | {m.key for m in proto.metrics}))
    if clash:
        raise ConfigError(f"option(s) {', '.join(clash)} would overwrite row fields: rename them")
    if table is None:
        table = load_table(proto.space, data)
    plan = plan_rows(proto, names, table, targets, sources)
    for name, info in infos.items():
        if info.preflight is not None:
            info.preflight(proto.space, [(t, s) for n, t, s in plan if n == name], MappingProxyType(opts))
    json_path = _out_path(out, proto)
    json_path.parent.mkdir(parents=True, exist_ok=True)

    row_extra = {k: v for k, v in opts.items() if v is None or isinstance(v, (str, int, float, bool))}
    plan_targets = list(dict.fromkeys(t for _, t, _ in plan))
    facts, missing = {}, {}
    for t in plan_targets:  # the harness reads whole target columns; strategies never do
        facts[t] = proto.facts(table, t)
        if facts[t].n < table.space.size():
            raise ConfigError(
                f"target {t!r} has results for {facts[t].n} of the space's {table.space.size()} cells: a "
                "benchmark needs every cell of the target (fill the table or shrink the space)"
            )
        missing[t] = missing_masks(table, t)
    views: dict[tuple[str, str], tuple[SourceView, np.ndarray]] = {}

    started = time.perf_counter()
    rows = []
    for i, (name, target, source) in enumerate(plan, start=1):
        t0 = last = time.perf_counter()
        per_seed: dict[str, list] = {m.key: [] for m in proto.metrics}
        usage: list[dict] = []
        if source is not None and (target, source) not in views:
            views[(target, source)] = (SourceView(table, [source], target=target), _readonly_copy(table, source))
        view, source_valid = views.get((target, source), (None, None)) if source is not None else (None, None)
        if cluster:
            from archlore.tools.distributed import map_tasks

            done = map_tasks(_one_seed, [(seed,) for seed in seed_info.values], cluster=cluster, common=(
                table, proto, name, target, source, opts, view, source_valid, missing[target], facts[target]))
        else:
            done = []
            for j, seed in enumerate(seed_info.values):
                if progress and time.perf_counter() - last > 10.0:  # slow strategies (agents) show life
                    last = time.perf_counter()
                    progress(f"[{i}/{len(plan)}] {proto.name} {name} {target} <- {source or '-'}: seed {j}/{seed_info.count}")
                done.append(_one_seed(table, proto, name, target, source, opts, view, source_valid, missing[target],
                                      facts[target], seed))
        for scores, seed_usage in done:
            for key, v in scores.items():
                per_seed[key].append(_json_value(v))
            usage.extend(seed_usage)
        row: dict[str, Any] = {
            "strategy": name, "space": proto.space, "target": target, "source": source, "seeds": seed_info.count,
            "baseline": infos[name].baseline,
        }
        row.update(row_extra)
        row.update(proto.aggregate(per_seed))
        row["per_seed"] = per_seed
        if usage:
            row["llm_usage"] = mean_usage(usage)
        row["wall_s"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
        if progress:
            progress(f"[{i}/{len(plan)}] {proto.name} {name} {target} <- {source or '-'}: {proto.headline(row)} ({row['wall_s']:.1f} s)")

    baselines = [n for n in names if infos[n].baseline]
    settings = {
        **proto.settings(),
        "seeds": seed_info.to_json(),
        "strategies": names,
        "targets": plan_targets,
        "sources": sources,
        "options": {k: v for k, v in opts.items() if k in row_extra},
        "table": table.source,
        "wall_s": round(time.perf_counter() - started, 3),
    }
    payload = {
        "protocol": proto.name, "description": proto.description, "settings": settings, "baselines": baselines,
        "rows": rows, "comparisons": P.baseline_comparisons(proto, rows, set(baselines)),
        "tally": P.baseline_tally(proto, rows, baselines),
    }
    json_path.write_text(dumps(payload) + "\n")
    md_path = json_path.with_suffix(".md")
    md_path.write_text(proto.markdown(payload))
    png_path = json_path.with_suffix(".png")
    from . import plots  # matplotlib is slow to import; only runs that write files need it

    plots.plot(payload, proto, png_path)
    log.info("wrote %s, %s, %s", json_path, md_path, png_path)
    return {**payload, "files": {"json": str(json_path), "md": str(md_path), "png": str(png_path)}}


def _one_seed(table: Table, proto: P.Protocol, name: str, target: str, source: str | None, opts: Mapping[str, Any],
              view: SourceView | None, source_valid: np.ndarray | None, missing: Any, facts: Any,
              seed: int) -> tuple[dict, list]:
    """One strategy run on one seed, scored: (scores, LLM usage); here or as a Ray task."""
    usage: list = []
    req = make_request(table, proto, target, source, seed, options=opts, view=view,
                       source_valid=source_valid, missing=missing)
    cells = run_strategy(name, req, usage)
    return proto.score(P.Trace.from_table(table, target, cells), facts), usage


def mean_usage(runs: Sequence[Mapping]) -> dict:
    """Per-run LLM use averaged over a row's seeds: `mean` of the totals, `per_role` means, and
    the switches summed."""
    def mean(dicts: list[Mapping]) -> dict:
        keys = sorted({k for d in dicts for k in d})
        return {k: round(sum(float(d.get(k, 0)) for d in dicts) / len(runs), 6) for k in keys}

    roles = sorted({r for u in runs for r in u.get("per_role", {})})
    return {
        "runs": len(runs),
        "mean": mean([u.get("total", {}) for u in runs]),
        "per_role": {r: mean([u.get("per_role", {}).get(r, {}) for u in runs]) for r in roles},
        "switches": int(sum(u.get("switches", 0) for u in runs)),
    }


def dumps(payload: dict) -> str:
    """JSON with two-space indents, except that a list of numbers or strings stays on one line
    (per-seed values would otherwise take a line each)."""
    flat: dict[str, str] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            if all(not isinstance(v, (dict, list)) for v in x):
                key = f"\x00{len(flat)}\x00"
                flat[key] = json.dumps(x, allow_nan=False)
                return key
            return [walk(v) for v in x]
        return x

    text = json.dumps(walk(payload), indent=2, allow_nan=False)
    for key, value in flat.items():
        text = text.replace(json.dumps(key), value, 1)
    return text


def protocol_of(payload: dict) -> P.Protocol:
    """The protocol object a written payload was produced by (for re-rendering it)."""
    s = payload["settings"]
    name = payload["protocol"]
    if name in P.PROTOCOLS:
        return P.PROTOCOLS[name]
    return P.get_protocol(name, space=s["space"], budgets=s.get("budgets"),
                          budget=None if s.get("budgets") else s["budget"])


def markdown(payload: dict) -> str:
    """A written payload's rows (and comparisons) as markdown tables."""
    return protocol_of(payload).markdown(payload)


from . import baselines as _baselines  # noqa: E402,F401  (registers the built-in baselines)
