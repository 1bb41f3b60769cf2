"""Figures of a benchmark payload: a point chart per target for the protocols, lines for curves.

Drawn on matplotlib's Agg canvas directly (no pyplot), so writing a figure never changes the
caller's backend or global state.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def series_label(row: dict) -> str:
    label = row["strategy"] if row["source"] is None else f"{row['strategy']} ← {row['source']}"
    if row.get("llm") is not None:
        label += f" [{row['llm']}]"
    return label


def _targets(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["target"] for r in rows))


def plot(payload: dict, path: str | Path) -> Path:
    if payload["protocol"] == "curves":
        return plot_curves(payload, path)
    return plot_protocol(payload, path)


def plot_protocol(payload: dict, path: str | Path) -> Path:
    """Two rows of panels (main metric, probability), one column per target, one point per series."""
    rows, s = payload["rows"], payload["settings"]
    if payload["protocol"] == "lapt-nb201":
        panels = [
            ("mean_evals_to_top", "evals_ci95", f"evaluations to top-0.1% (≤ {s['budget']}; lower is better)"),
            ("p_hit", "p_hit_ci95", f"P(hit within {s['budget']})"),
        ]
    else:
        panels = [
            ("mean_percentile", "percentile_ci95", f"percentile after {s['budget']} (100 = best)"),
            ("p_top1", "p_top1_ci95", "P(top-1%)"),
        ]
    targets = _targets(rows)
    labels = list(dict.fromkeys(series_label(r) for r in rows))
    colours = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    fig = Figure(figsize=(3.2 * len(targets) + 1.5, 1.2 + 0.35 * len(labels) * 2 + 1.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(targets), squeeze=False, sharey="row")
    for j, target in enumerate(targets):
        mine = [r for r in rows if r["target"] == target]
        for i, (key, ci_key, title) in enumerate(panels):
            ax = axes[i][j]
            for r in mine:
                y = labels.index(series_label(r))
                ax.errorbar(r[key], y, xerr=r.get(ci_key) or 0, fmt="o", color=colours[series_label(r)], capsize=3)
            ax.set_yticks(range(len(labels)), labels)
            ax.set_ylim(len(labels) - 0.5, -0.5)
            ax.grid(axis="x", alpha=0.3)
            ax.set_xlabel(title, fontsize=8)
            if i == 0:
                ax.set_title(target)
    fig.suptitle(f"{payload['protocol']}: {s['seeds']} seeds, mean ± 95% CI")
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_curves(payload: dict, path: str | Path) -> Path:
    """Per target: best-so-far percentile (top) and regret (bottom) vs evaluations, one line per series."""
    rows, s = payload["rows"], payload["settings"]
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
                ax.plot(r["budgets"], r[f"valid_{kind}"], "-o", ms=3, color=c, label=series_label(r))
                if r.get(f"test_{kind}"):
                    ax.plot(r["budgets"], r[f"test_{kind}"], "--", color=c, alpha=0.7)
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
        f"curves on {s['space']}: best-so-far by validation, {s['seeds']} seeds "
        "(solid: validation; dashed: test of that cell, where the table has one)"
    )
    fig.savefig(path, dpi=110)
    return Path(path)
