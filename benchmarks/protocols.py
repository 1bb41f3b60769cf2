"""Benchmark protocols as objects: each owns its search settings, its metrics, how they are
aggregated over seeds and which markdown tables and plot panels show them.

A run is scored from its `Trace` (the validation and test values of the cells it evaluated, in
order, as the harness logged them) against the target's `TargetFacts` (the whole target column,
read by the harness only, never by a strategy). Metrics are small frozen objects; a protocol is a
list of them plus settings, so a new protocol is data, not another `if name == ...` branch.

* `lapt-nb201`: LAPT's NAS-Bench-201 protocol (budget 20, REA 5/2): evaluations until the
  best-by-validation cell is in the target's top-0.1% by validation and in its top-5, and the
  simple regret (validation, and test of that cell) at 5, 10 and 20 evaluations.
* `lapt-tnb101`: LAPT's TransNAS-Bench-101 protocol (budget 50, REA 10/5): final rank percentile
  of the best-by-validation cell and P(top-1%).
* `curves`: best-so-far percentile and regret at several budgets, on any space.
* `custom`: any space and table (a user YAML space and CSV): evaluations to the top-1% and the
  top-5, regret at a quarter, half and all of the budget, final percentile.

Proportions get Wilson intervals, means a seeded bootstrap (`stats`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from archlore.tools.errors import ConfigError
from archlore.tools.tables import NB201_TASKS, TNB101_TASKS, Table

from . import stats


# ---------------------------------------------------------------------------------------------
# what a run produced and what it is measured against
@dataclass(frozen=True)
class Trace:
    """The validation and test values of the cells a run evaluated, oldest first (test NaN: none)."""

    valid: np.ndarray
    test: np.ndarray

    @classmethod
    def of(cls, valid: Sequence[float], test: Sequence[float | None] | None = None) -> Trace:
        v = np.asarray(valid, dtype=np.float64)
        t = np.full(v.size, np.nan) if test is None else np.array([np.nan if x is None else x for x in test], dtype=np.float64)
        if v.size == 0:
            raise ConfigError("a run evaluated no cell: a strategy must evaluate at least one")
        return cls(v, t)

    @classmethod
    def from_table(cls, table: Table, task: str, cells: Sequence[int]) -> Trace:
        col = table.valid[task]
        tcol = table.test.get(task)
        return cls.of([float(col[i]) for i in cells], None if tcol is None else [float(tcol[i]) for i in cells])

    @classmethod
    def from_evaluations(cls, evals: Sequence[Any]) -> Trace:
        """From objects with `.valid` and `.test` (tools.ledger.Evaluation)."""
        return cls.of([e.valid for e in evals], [e.test for e in evals])

    def __len__(self) -> int:
        return int(self.valid.size)

    def best_at(self, at: int) -> int:
        """Index of the best-by-validation cell among the first `at` (the first one wins a tie);
        a run that stopped early keeps its last best."""
        return int(np.argmax(self.valid[: max(1, min(at, self.valid.size))]))


@dataclass(frozen=True)
class TargetFacts:
    """A target's whole column, sorted: thresholds, percentiles and the best values."""

    task: str
    sorted_valid: np.ndarray  # known validation values, ascending
    sorted_test: np.ndarray | None  # known test values, ascending (None: the table has none)

    @classmethod
    def of(cls, table: Table, task: str) -> TargetFacts:
        v = np.asarray(table.valid[task], dtype=np.float64)
        v = np.sort(v[~np.isnan(v)])
        if v.size == 0:
            raise ConfigError(f"task {task!r} has no known cells in {table.source}")
        t = table.test.get(task)
        if t is not None:
            t = np.asarray(t, dtype=np.float64)
            t = np.sort(t[~np.isnan(t)])
            t = t if t.size else None
        return cls(task, v, t)

    @property
    def n(self) -> int:
        return int(self.sorted_valid.size)

    @property
    def best_valid(self) -> float:
        return float(self.sorted_valid[-1])

    @property
    def best_test(self) -> float | None:
        return None if self.sorted_test is None else float(self.sorted_test[-1])

    def top_count(self, top: int | float) -> int:
        """`top` as a number of cells: an int is a count, a float below 1 a fraction (rounded up)."""
        if isinstance(top, float) and top < 1:
            return min(self.n, max(1, math.ceil(top * self.n - 1e-9)))
        return min(self.n, int(top))

    def threshold(self, top: int | float) -> float:
        """The validation value a cell needs to be in the top (the k-th best value; ties count)."""
        return float(self.sorted_valid[-self.top_count(top)])

    def percentile(self, value: float) -> float:
        """100 x the fraction of known cells whose validation value is <= `value` (100 = best)."""
        return 100.0 * float(np.searchsorted(self.sorted_valid, value, side="right")) / self.n

    def test_percentile(self, value: float) -> float | None:
        if self.sorted_test is None or math.isnan(value):
            return None
        return 100.0 * np.searchsorted(self.sorted_test, value, side="right") / self.sorted_test.size


# ---------------------------------------------------------------------------------------------
# metrics
Value = float | bool | None


@dataclass(frozen=True)
class Metric:
    """One number per run; `kind` says how seeds are aggregated (mean: bootstrap; proportion: Wilson)."""

    key: str
    label: str
    kind: Literal["mean", "proportion"]
    better: Literal["lower", "higher"]
    nd: int = 2

    def score(self, trace: Trace, facts: TargetFacts, budget: int) -> Value:
        raise NotImplementedError


def _first_reach(trace: Trace, threshold: float) -> int | None:
    hits = np.flatnonzero(trace.valid >= threshold)
    return int(hits[0]) + 1 if hits.size else None


@dataclass(frozen=True)
class EvalsToTop(Metric):
    """Evaluations until the best-by-validation cell is in the top (a miss counts the budget)."""

    top: int | float = 16

    def score(self, trace, facts, budget):
        hit = _first_reach(trace, facts.threshold(self.top))
        return float(budget if hit is None else min(hit, budget))


@dataclass(frozen=True)
class HitTop(Metric):
    """Whether the best-by-validation cell reached the top within the budget."""

    top: int | float = 16

    def score(self, trace, facts, budget):
        hit = _first_reach(trace, facts.threshold(self.top))
        return hit is not None and hit <= budget


@dataclass(frozen=True)
class Regret(Metric):
    """Simple regret after `at` evaluations: the space's best value minus the best-by-validation
    cell's (validation or test; test is None where the table has none)."""

    at: int = 20
    which: Literal["valid", "test"] = "valid"

    def score(self, trace, facts, budget):
        i = trace.best_at(self.at)
        if self.which == "valid":
            return facts.best_valid - float(trace.valid[i])
        if facts.best_test is None or math.isnan(trace.test[i]):
            return None
        return facts.best_test - float(trace.test[i])


@dataclass(frozen=True)
class PercentileAt(Metric):
    """Rank percentile (100 = best) of the best-by-validation cell after `at` evaluations."""

    at: int = 50
    which: Literal["valid", "test"] = "valid"

    def score(self, trace, facts, budget):
        i = trace.best_at(self.at)
        if self.which == "valid":
            return facts.percentile(float(trace.valid[i]))
        return facts.test_percentile(float(trace.test[i]))


@dataclass(frozen=True)
class PercentileAtLeast(Metric):
    """Whether the best-by-validation cell's final percentile is at least `cut` (99: top-1%)."""

    cut: float = 99.0

    def score(self, trace, facts, budget):
        return bool(facts.percentile(float(trace.valid[trace.best_at(budget)])) >= self.cut)


def aggregate(metrics: Sequence[Metric], per_seed: Mapping[str, Sequence[Value]]) -> dict[str, float | int | None]:
    """Per metric: the mean (or proportion), its 95% interval (`_lo`, `_hi`) and `_n` runs."""
    out: dict[str, float | int | None] = {}
    for m in metrics:
        vals = [v for v in per_seed[m.key] if v is not None]
        if not vals:
            out.update({m.key: None, f"{m.key}_lo": None, f"{m.key}_hi": None, f"{m.key}_n": 0})
            continue
        if m.kind == "proportion":
            hits = sum(bool(v) for v in vals)
            centre = hits / len(vals)
            lo, hi = stats.wilson(hits, len(vals))
        else:
            centre, lo, hi = stats.bootstrap_mean([float(v) for v in vals])  # type: ignore[misc]
        out.update({m.key: _r(centre), f"{m.key}_lo": _r(lo), f"{m.key}_hi": _r(hi), f"{m.key}_n": len(vals)})
    return out


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


# ---------------------------------------------------------------------------------------------
# seeds
SEED_SPLITS: dict[str, tuple[int, int | None]] = {
    # dev: any tuning of a constant (schedules, temperatures, k) may look at these
    "dev": (0, 100),
    # fill: runs that fill a memory for an experiment; neither tuned on nor reported
    "fill": (500, 1000),
    # heldout: report seeds; nothing was ever tuned on them
    "heldout": (1000, None),
}


@dataclass(frozen=True)
class Seeds:
    split: str
    first: int
    count: int

    @property
    def values(self) -> range:
        return range(self.first, self.first + self.count)

    def describe(self) -> str:
        what = {"dev": "dev split: seeds constants may be tuned on",
                "heldout": "held-out split: report seeds, never used for tuning",
                "fill": "fill split"}[self.split]
        return f"seeds {self.first}..{self.first + self.count - 1} ({what})"

    def to_json(self) -> dict:
        return {"split": self.split, "first": self.first, "count": self.count}


def seed_range(count: int, *, split: str = "dev", start: int | None = None) -> Seeds:
    """`count` seeds of a declared split, from its first seed or from `start` inside it."""
    if split not in SEED_SPLITS:
        raise ConfigError(f"unknown seed split {split!r}: use one of {', '.join(SEED_SPLITS)}")
    if count < 1:
        raise ConfigError(f"seeds must be at least 1, got {count}")
    lo, hi = SEED_SPLITS[split]
    first = lo if start is None else int(start)
    end = first + count
    if first < lo or (hi is not None and end > hi):
        span = f"{lo}..{hi - 1}" if hi is not None else f"{lo} and up"
        raise ConfigError(
            f"seeds {first}..{end - 1} leave the {split} split ({span}): pass fewer --seeds, another "
            f"--seed-start, or --split {'heldout' if split == 'dev' else 'dev'}"
        )
    return Seeds(split, first, count)


# ---------------------------------------------------------------------------------------------
# protocols
Table_ = tuple[str, tuple[str, ...]]  # (title, metric keys): one markdown table


@dataclass(frozen=True)
class Protocol:
    """Fixed settings of one protocol, its metrics and how they are shown."""

    name: str
    space: str  # a built-in space name or a space file's path
    budget: int  # evaluations per run
    population: int  # REA population
    tournament: int  # REA tournament size
    k: int  # the prior's choices kept per position
    top_n: int  # the prior's source cells
    targets: tuple[str, ...]  # default targets (empty: the user names them)
    source: str | None  # default source of strategies that need one; None: every other task
    description: str
    metrics: tuple[Metric, ...]
    tables: tuple[Table_, ...]  # markdown tables of the rows
    compare: tuple[str, ...]  # metrics on which non-baselines meet the strongest baseline
    plot_metrics: tuple[str, ...]  # metrics of the point chart (one row of panels each)
    heldout_pairs: tuple[tuple[str, str], ...] = ()  # (target, source) pairs no constant was tuned on
    budgets: tuple[int, ...] = ()  # curves: where the curves are read
    notes: tuple[str, ...] = ()  # printed under the tables' heading

    def default_sources(self, target: str, tasks: Sequence[str]) -> list[str]:
        if self.source is not None:
            return [self.source] if self.source != target else []
        return [t for t in tasks if t != target]

    @property
    def file_stem(self) -> str:
        """The name of its result files when `out` is a folder."""
        return f"{self.name}-{Path(self.space).stem}" if self.budgets else self.name

    def metric(self, key: str) -> Metric:
        for m in self.metrics:
            if m.key == key:
                return m
        raise KeyError(key)

    def facts(self, table: Table, target: str) -> TargetFacts:
        return TargetFacts.of(table, target)

    def score(self, trace: Trace, facts: TargetFacts) -> dict[str, Value]:
        return {m.key: m.score(trace, facts, self.budget) for m in self.metrics}

    def aggregate(self, per_seed: Mapping[str, Sequence[Value]]) -> dict:
        return aggregate(self.metrics, per_seed)

    def is_heldout(self, target: str, source: str | None) -> bool:
        return source is not None and (target, source) in self.heldout_pairs

    def settings(self) -> dict:
        out = {
            "space": self.space, "budget": self.budget, "population": self.population,
            "tournament": self.tournament, "k": self.k, "top_n": self.top_n,
            "metrics": [m.key for m in self.metrics],
            "heldout_pairs": [list(p) for p in self.heldout_pairs],
        }
        if self.budgets:
            out["budgets"] = list(self.budgets)
        return out

    def headline(self, row: dict) -> str:
        return ", ".join(f"{self.metric(k).label} {_fmt(row.get(k), self.metric(k).nd)}" for k in self.compare)

    # -- markdown -----------------------------------------------------------------------------
    def markdown(self, payload: dict) -> str:
        s, rows = payload["settings"], payload["rows"]
        seeds = Seeds(**s["seeds"]) if isinstance(s.get("seeds"), dict) else None
        head = (
            f"### {self.name} on {s['space']}: {seeds.describe() if seeds else s.get('seeds')}; budget "
            f"{s['budget']}, REA({s['population']}, {s['tournament']}), prior k={s['k']} top-{s['top_n']}\n\n"
        )
        notes = list(self.notes)
        if self.heldout_pairs:
            pairs = ", ".join(f"{t} ← {src}" for t, src in self.heldout_pairs)
            notes.append(f"Held-out pair(s), marked †: {pairs} (no constant is tuned on them).")
        notes.append("Means with 95% seeded-bootstrap intervals, proportions with 95% Wilson intervals.")
        out = [head + "\n".join(notes) + "\n"]
        extra = list(s.get("options") or {})
        base = ["strategy", "target", "source", "seeds"]
        for title, keys in self.tables:
            keys = tuple(k for k in keys if any(r.get(k) is not None for r in rows))
            if not keys:
                continue
            header = base + extra + [self.metric(k).label for k in keys]
            lines = [
                [r["strategy"], r["target"], _source_cell(self, r), str(r["seeds"]), *(_option_cell(r, c) for c in extra),
                 *(interval_text(r, self.metric(k)) for k in keys)]
                for r in rows
            ]
            out.append(f"{title}:\n\n" + md_table(header, lines))
        used = [r for r in rows if (r.get("llm_usage") or {}).get("mean")]
        if used:
            out.append("LLM use, mean per run (tokens, model seconds; per role where more than one role called a model):\n\n"
                       + md_table(["strategy", "target", "source", *extra, "role", "calls", "prompt tokens", "answer tokens",
                                   "seconds", "prompt tokens / evaluation"], _usage_lines(self, used, s["budget"], extra)))
        comps = payload.get("comparisons") or []
        if comps:
            header = ["strategy", "target", "source", "metric", "value", "strongest baseline", "its value",
                      "strategy − strongest (paired 95% CI)", "verdict"]
            lines = []
            for c in comps:
                m = self.metric(c["metric"])
                lines.append([
                    c["strategy"], c["target"], _source_cell(self, c), m.label, _fmt(c["value"], m.nd),
                    c["baseline"] + (f" ← {c['baseline_source']}" if c.get("baseline_source") else ""),
                    _fmt(c["baseline_value"], m.nd),
                    f"{_fmt(c['diff'], m.nd, signed=True)} [{_fmt(c['diff_lo'], m.nd, signed=True)}, {_fmt(c['diff_hi'], m.nd, signed=True)}]",
                    c["verdict"],
                ])
            out.append("Against the strongest baseline of the same pair, per metric (the baseline with the best "
                       "mean there, picked after the fact among " + ", ".join(payload.get("baselines", []))
                       + "; paired over seeds):\n\n" + md_table(header, lines))
        tally = payload.get("tally") or []
        if tally:
            header = ["strategy", "against", "metric", "pairs better", "no clear difference", "pairs worse"]
            lines = [[t["strategy"], t["baseline"], self.metric(t["metric"]).label, str(t["better"]),
                      str(t["no clear difference"]), str(t["worse"])] for t in tally]
            out.append("Against each baseline on its own (pairs where the paired 95% interval of the "
                       "difference excludes 0):\n\n" + md_table(header, lines))
        return "\n".join(out)


def _usage_lines(proto: Protocol, rows: list[dict], budget: int, extra: list[str]) -> list[list[str]]:
    lines = []
    for r in rows:
        u = r["llm_usage"]
        roles = {k: v for k, v in (u.get("per_role") or {}).items() if v.get("calls")}
        parts = [("all", u["mean"])] + (sorted(roles.items()) if len(roles) > 1 else [])
        for role, m in parts:
            lines.append([
                r["strategy"], r["target"], _source_cell(proto, r), *(_option_cell(r, c) for c in extra), role,
                f"{m.get('calls', 0):.1f}", f"{m.get('input_tokens', 0):,.0f}", f"{m.get('output_tokens', 0):,.0f}",
                f"{m.get('seconds', 0):.1f}", f"{m.get('input_tokens', 0) / budget:.0f}",
            ])
    return lines


def _source_cell(proto: Protocol, row: dict) -> str:
    src = row.get("source")
    if src is None:
        return "–"
    return f"{src} †" if proto.is_heldout(row["target"], src) else src


def _option_cell(row: dict, key: str) -> str:
    if row.get("baseline"):  # baselines take no options: an option shown there would mislead
        return "–"
    return str(row.get(key, "–"))


def _fmt(x: Any, nd: int = 2, *, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.{nd}f}" if signed else f"{x:.{nd}f}"


def interval_text(row: dict, m: Metric) -> str:
    v = row.get(m.key)
    if v is None:
        return "–"
    nd = 3 if m.kind == "proportion" else m.nd
    return f"{v:.{nd}f} [{row[m.key + '_lo']:.{nd}f}, {row[m.key + '_hi']:.{nd}f}]"


def md_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# the protocols
def _regret(at: int, which: str) -> Regret:
    return Regret(f"{which}_regret@{at}", f"{which} regret @{at}", "mean", "lower", 3, at=at, which=which)  # type: ignore[arg-type]


def _hitting(top: int | float, name: str, budget: int) -> tuple[EvalsToTop, HitTop]:
    return (
        EvalsToTop(f"evals_to_{name}", f"evals to {_top_label(top)}", "mean", "lower", top=top),
        HitTop(f"p_{name}", f"P({_top_label(top)} ≤ {budget})", "proportion", "higher", top=top),
    )


def _top_label(top: int | float) -> str:
    if isinstance(top, float) and top < 1:
        return f"top-{100 * top:g}%"
    return f"top-{top}"


def lapt_nb201() -> Protocol:
    budget = 20
    at = (5, 10, 20)
    metrics = (
        *_hitting(0.001, "top01", budget), *_hitting(5, "top5", budget),
        *(_regret(a, "valid") for a in at), *(_regret(a, "test") for a in at),
    )
    return Protocol(
        "lapt-nb201", "nb201", budget=budget, population=5, tournament=2, k=2, top_n=50,
        targets=tuple(NB201_TASKS), source=None,
        description="LAPT's NAS-Bench-201 protocol: evaluations until the top-0.1% and the top-5, simple regret",
        metrics=metrics,
        tables=(
            ("evaluations until the best-by-validation cell is in the target's top-0.1% (16 cells) / top-5, by "
             "validation (a miss counts 20)", ("evals_to_top01", "p_top01", "evals_to_top5", "p_top5")),
            ("simple regret: best validation (test) of the space minus that of the best-by-validation cell",
             tuple(f"{w}_regret@{a}" for w in ("valid", "test") for a in at)),
        ),
        compare=("evals_to_top01", "evals_to_top5", "test_regret@20"),
        plot_metrics=("evals_to_top01", "evals_to_top5", "test_regret@20"),
        heldout_pairs=(("imagenet16-120", "cifar100"),),
    )


def lapt_tnb101() -> Protocol:
    budget = 50
    metrics = (
        PercentileAt("percentile", f"final rank percentile @{budget}", "mean", "higher", 2, at=budget),
        PercentileAtLeast("p_top1", "P(top-1%)", "proportion", "higher", cut=99.0),
    )
    return Protocol(
        "lapt-tnb101", "tnb101", budget=budget, population=10, tournament=5, k=3, top_n=50,
        targets=tuple(t for t in TNB101_TASKS if t != "jigsaw"), source="jigsaw",
        description="LAPT's TransNAS-Bench-101 protocol: rank percentile of the best cell after 50 evaluations",
        metrics=metrics,
        tables=(("rank percentile (100 = best) of the best-by-validation cell after 50 evaluations",
                 ("percentile", "p_top1")),),
        compare=("p_top1", "percentile"),
        plot_metrics=("percentile", "p_top1"),
        heldout_pairs=(("autoencoder", "jigsaw"),),
        notes=("TransNAS-Bench-101 micro has validation values only: no test columns.",),
    )


def custom(space: str, *, budget: int = 20, population: int = 10, tournament: int = 5, k: int = 3,
           top_n: int = 50) -> Protocol:
    """Any space with a results table: the union of the two LAPT protocols' metrics."""
    if budget < 4:
        raise ConfigError(f"--budget must be at least 4 for the custom protocol, got {budget}")
    population = min(population, budget)
    tournament = min(tournament, population)
    at = tuple(sorted({max(1, budget // 4), max(1, budget // 2), budget}))
    metrics = (
        *_hitting(0.01, "top1pct", budget), *_hitting(5, "top5", budget),
        *(_regret(a, "valid") for a in at), *(_regret(a, "test") for a in at),
        PercentileAt("percentile", f"final rank percentile @{budget}", "mean", "higher", 2, at=budget),
    )
    return Protocol(
        "custom", space, budget=budget, population=population, tournament=tournament, k=k, top_n=top_n,
        targets=(), source=None,
        description=f"any space with a results table ({space}): evaluations to the top-1% and top-5, regret, percentile",
        metrics=metrics,
        tables=(
            ("evaluations until the best-by-validation cell is in the top-1% / top-5 by validation "
             f"(a miss counts {budget}), and its final rank percentile",
             ("evals_to_top1pct", "p_top1pct", "evals_to_top5", "p_top5", "percentile")),
            ("simple regret of the best-by-validation cell", tuple(f"{w}_regret@{a}" for w in ("valid", "test") for a in at)),
        ),
        compare=("evals_to_top5", f"valid_regret@{budget}"),
        plot_metrics=("evals_to_top5", f"valid_regret@{budget}"),
    )


def curves(base: Protocol, budgets: Sequence[int]) -> Protocol:
    points = tuple(sorted(set(int(b) for b in budgets)))
    if not points or points[0] < 1:
        raise ConfigError(f"budgets must be positive integers, got {list(budgets)}")
    fam = {
        "valid_percentile": ("best-so-far validation percentile (100 = best)", "higher", 2),
        "valid_regret": ("validation regret (best validation of the space minus the best found)", "lower", 3),
        "test_percentile": ("test percentile of the best-by-validation cell", "higher", 2),
        "test_regret": ("test regret of the best-by-validation cell (best test of the space minus its test)", "lower", 3),
    }
    metrics: list[Metric] = []
    for key, (_, better, nd) in fam.items():
        which = key.split("_")[0]
        for b in points:
            cls = PercentileAt if key.endswith("percentile") else Regret
            metrics.append(cls(f"{key}@{b}", f"@{b}", "mean", better, nd, at=b, which=which))  # type: ignore[arg-type]
    return replace(
        base, name="curves", budget=points[-1], budgets=points, metrics=tuple(metrics),
        description=f"budget curves on {base.space} ({base.name} search settings)",
        tables=tuple((title, tuple(f"{key}@{b}" for b in points)) for key, (title, _, _) in fam.items()),
        compare=(f"valid_regret@{points[-1]}",), plot_metrics=(),
    )


CUSTOM = "custom"
CURVES = "curves"
PROTOCOLS = {"lapt-nb201": lapt_nb201(), "lapt-tnb101": lapt_tnb101()}
PROTOCOL_NAMES = (*PROTOCOLS, CURVES, CUSTOM)
DEFAULT_BUDGETS = (10, 20, 50, 100, 200)
_SPACE_PROTOCOL = {"nb201": "lapt-nb201", "tnb101": "lapt-tnb101"}


def get_protocol(
    name: str, *, space: str | None = None, budgets: Sequence[int] | None = None, budget: int | None = None,
) -> Protocol:
    """A protocol by name. `curves` takes its search settings from the space's LAPT protocol (or
    `custom`'s for a user space); `custom` needs a space and takes an optional budget."""
    if name not in PROTOCOL_NAMES:
        raise ConfigError(f"unknown protocol {name!r}: use one of {', '.join(PROTOCOL_NAMES)}")
    if name in PROTOCOLS:
        proto = PROTOCOLS[name]
        if space is not None and space != proto.space:
            raise ConfigError(f"protocol {name} runs on space {proto.space}: drop --space {space} (or use --protocol custom)")
        if budgets:
            raise ConfigError(f"protocol {name} has a fixed budget of {proto.budget}: --budgets is for curves")
        if budget is not None and budget != proto.budget:
            raise ConfigError(f"protocol {name} has a fixed budget of {proto.budget}: --budget is for --protocol custom")
        return proto
    if name == CUSTOM:
        if not space:
            raise ConfigError("protocol custom needs a space: pass --space FILE.yaml (and --table FILE.csv)")
        if budgets:
            raise ConfigError("--budgets is for --protocol curves")
        return custom(space, budget=budget or 20)
    space = space or "nb201"
    base = PROTOCOLS[_SPACE_PROTOCOL[space]] if space in _SPACE_PROTOCOL else custom(space, budget=budget or 20)
    return curves(base, budgets or DEFAULT_BUDGETS)


def paired_difference(r: dict, b: dict, m: Metric) -> dict | None:
    """The paired-bootstrap difference r - b over seeds on metric m, and which way it points."""
    a = [None if v is None else float(v) for v in r["per_seed"][m.key]]
    c = [None if v is None else float(v) for v in b["per_seed"][m.key]]
    diff = stats.paired_bootstrap_diff(a, c)
    if diff is None:
        return None
    d, lo, hi = diff
    sign = 1 if m.better == "higher" else -1
    good_lo, good_hi = sorted((sign * lo, sign * hi))  # the interval, oriented so > 0 is better
    verdict = "better" if good_lo > 0 else "worse" if good_hi < 0 else "no clear difference"
    return {"diff": _r(d), "diff_lo": _r(lo), "diff_hi": _r(hi), "verdict": verdict}


def _pair_baselines(r: dict, rows: Sequence[dict], baselines: set[str]) -> list[dict]:
    """Baseline rows of r's pair: the same target, and r's source or none."""
    return [b for b in rows if b["strategy"] in baselines and b["target"] == r["target"]
            and b["source"] in (None, r["source"])]


def baseline_comparisons(proto: Protocol, rows: Sequence[dict], baselines: set[str]) -> list[dict]:
    """For every non-baseline row and every `compare` metric: the strongest baseline of the same
    pair (best mean, chosen after the fact, which favours the baselines), and the paired-bootstrap
    difference over seeds."""
    out = []
    for r in rows:
        if r["strategy"] in baselines:
            continue
        for key in proto.compare:
            m = proto.metric(key)
            scored = [b for b in _pair_baselines(r, rows, baselines) if b.get(key) is not None]
            if r.get(key) is None or not scored:
                continue
            sign = 1 if m.better == "higher" else -1
            best = max(scored, key=lambda b: sign * b[key])  # the first of equals wins: baselines' order
            diff = paired_difference(r, best, m)
            if diff is None:
                continue
            out.append({
                "strategy": r["strategy"], "target": r["target"], "source": r["source"], "metric": key,
                "value": r[key], "baseline": best["strategy"], "baseline_source": best["source"],
                "baseline_value": best[key], **diff,
            })
    return out


def baseline_tally(proto: Protocol, rows: Sequence[dict], baselines: Sequence[str]) -> list[dict]:
    """For every non-baseline strategy, baseline and `compare` metric: on how many pairs the
    strategy is better, worse, or not clearly different (paired 95% bootstrap interval)."""
    out = []
    strategies = list(dict.fromkeys(r["strategy"] for r in rows if r["strategy"] not in baselines))
    for name in strategies:
        mine = [r for r in rows if r["strategy"] == name]
        for base in baselines:
            for key in proto.compare:
                m = proto.metric(key)
                counts = {"better": 0, "no clear difference": 0, "worse": 0}
                for r in mine:
                    b = next((b for b in _pair_baselines(r, rows, {base}) if b.get(key) is not None), None)
                    res = paired_difference(r, b, m) if b is not None and r.get(key) is not None else None
                    if res is not None:
                        counts[res["verdict"]] += 1
                if sum(counts.values()):
                    out.append({"strategy": name, "baseline": base, "metric": key, **counts})
    return out


__all__ = [
    "CURVES", "CUSTOM", "DEFAULT_BUDGETS", "PROTOCOLS", "PROTOCOL_NAMES", "SEED_SPLITS", "EvalsToTop", "HitTop",
    "Metric", "PercentileAt", "PercentileAtLeast", "Protocol", "Regret", "Seeds", "TargetFacts", "Trace",
    "aggregate", "baseline_comparisons", "baseline_tally", "get_protocol", "paired_difference", "seed_range",
]
