"""Figures of a benchmark payload: a point chart per target for the protocols, lines for curves.

The protocol object says what to draw (`plot_metrics`, `budgets`). Drawn on matplotlib's Agg
canvas directly (no pyplot), so writing a figure never changes the caller's backend or state.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .protocols import Protocol, Seeds


def series_label(row: dict) -> str:
    label = row["strategy"] if row["source"] is None else f"{row['strategy']} ← {row['source']}"
    if row.get("llm") is not None and not row.get("baseline"):  # baselines ignore the options
        label += f" [{row['llm']}]"
    return label


def _targets(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["target"] for r in rows))


def _seeds_text(payload: dict) -> str:
    s = payload["settings"]["seeds"]
    return Seeds(**s).describe() if isinstance(s, dict) else f"{s} seeds"


def plot(payload: dict, proto: Protocol, path: str | Path) -> Path:
    if proto.budgets:
        return plot_curves(payload, path)
    return plot_protocol(payload, proto, path)


def plot_protocol(payload: dict, proto: Protocol, path: str | Path) -> Path:
    """One row of panels per plotted metric, one column per target, one point per series with its
    95% interval (bootstrap for means, Wilson for proportions)."""
    rows = payload["rows"]
    panels = [proto.metric(k) for k in proto.plot_metrics]
    targets = _targets(rows)
    labels = list(dict.fromkeys(series_label(r) for r in rows))
    colours = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    fig = Figure(figsize=(3.2 * len(targets) + 2.0, 1.0 + len(panels) * (0.3 * len(labels) + 1.0)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), len(targets), squeeze=False, sharey="row")
    for j, target in enumerate(targets):
        mine = [r for r in rows if r["target"] == target]
        for i, m in enumerate(panels):
            ax = axes[i][j]
            for r in mine:
                v = r.get(m.key)
                if v is None:
                    continue
                y = labels.index(series_label(r))
                err = [[v - r[f"{m.key}_lo"]], [r[f"{m.key}_hi"] - v]]
                ax.errorbar(v, y, xerr=err, fmt="o", color=colours[series_label(r)], capsize=3)
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.set_ylim(len(labels) - 0.5, -0.5)
            ax.grid(axis="x", alpha=0.3)
            ax.set_xlabel(f"{m.label} ({m.better} is better)", fontsize=8)
            if i == 0:
                ax.set_title(target)
    fig.suptitle(f"{payload['protocol']}: {_seeds_text(payload)}; 95% intervals")
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_curves(payload: dict, path: str | Path) -> Path:
    """Per target: best-so-far percentile (top) and regret (bottom) vs evaluations, one line per series."""
    rows, s = payload["rows"], payload["settings"]
    budgets = s["budgets"]
    targets = _targets(rows)
    labels = list(dict.fromkeys(series_label(r) for r in rows))
    colours = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    fig = Figure(figsize=(3.6 * len(targets) + 0.5, 7), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(targets), squeeze=False)
    for j, target in enumerate(targets):
        for r in (r for r in rows if r["target"] == target):
            c = colours[series_label(r)]
            for i, kind in enumerate(("percentile", "regret")):
                ax = axes[i][j]
                ax.plot(budgets, [r.get(f"valid_{kind}@{b}") for b in budgets], "-o", ms=3, color=c, label=series_label(r))
                test = [r.get(f"test_{kind}@{b}") for b in budgets]
                if any(v is not None for v in test):
                    ax.plot(budgets, test, "--", color=c, alpha=0.7)
        for i, kind in enumerate(("percentile (100 = best)", "regret")):
            ax = axes[i][j]
            ax.set_xscale("log")
            ax.set_xlabel("evaluations")
            ax.set_ylabel(kind)
            ax.grid(alpha=0.3)
        axes[0][j].set_title(target)
    handles = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(len(handles), 5), fontsize=8)
    fig.suptitle(
        f"curves on {s['space']}: best-so-far by validation, {_seeds_text(payload)} "
        "(solid: validation; dashed: test of that cell, where the table has one)", fontsize=9,
    )
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_front(record: dict, path: Path) -> Path:
    """A Pareto run's evaluations and its front (`record["front"]`), first two objectives, in the
    user's own numbers (costs and lower-is-better metrics as they are)."""
    names = record.get("objectives") or []
    if len(names) < 2 or not record.get("front"):
        raise ValueError("the record has no Pareto front: run with --objective TARGET,COST")
    x, y = names[1], names[0]
    fig = Figure(figsize=(6, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    pts = [e["objectives"] for e in record["evaluations"] if e.get("objectives")]
    ax.scatter([p[x] for p in pts], [p[y] for p in pts], s=12, color="0.6", label=f"evaluated ({len(pts)})")
    front = sorted(record["front"], key=lambda f: f[x])
    ax.plot([f[x] for f in front], [f[y] for f in front], "o-", color="C3", ms=5, label=f"front ({len(front)})")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{record['run_id']}: {y} vs {x}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
