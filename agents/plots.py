"""The figures of one run, for `archlore show RUN --plot FILE.png`, the chat's /plot and the web page.

Three panels, each also drawable alone: best-so-far validation against evaluations beside the
baselines (random search and REA on the same table, target and budget, several seeds), the final
filter as a grid of positions x choices, and the principle history as a timeline of rounds.
Everything is read from a run record (or the same dict built while a run is in progress), so a
figure needs no live run. Drawn on matplotlib's Agg canvas (no pyplot), so it is thread-safe
enough for a web server and never changes the caller's backend.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
from archlore.tools.errors import ArchloreError
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

log = logging.getLogger(__name__)

KINDS = ("all", "curve", "filter", "principles")
BASELINE_SEEDS = 5


def baseline_curves(record: dict[str, Any], *, seeds: int = BASELINE_SEEDS, data: str | None = None) -> dict[str, np.ndarray]:
    """Best-so-far validation of random search and REA (seeds x evaluations) for the record's run.

    Only tabular runs have baselines (they cost a table look-up each); others get none.
    """
    from archlore.tools.evaluator import Evaluator
    from archlore.tools.executors import TabularExecutor
    from archlore.tools.ledger import Ledger
    from archlore.tools.strategies import REA, RandomSearch, run_search

    from .context import RunSettings
    from .runner import preflight

    raw = dict(record.get("settings") or {})
    if not raw or raw.get("executor", "tabular") != "tabular":
        return {}
    if data:
        raw["data"] = data
    try:
        settings = RunSettings.from_json({**raw, "source": None, "run_id": "baseline"})
        _, table = preflight(settings)
    except ArchloreError as exc:
        log.info("no baselines for %s: %s", record.get("run_id"), exc)
        return {}
    budget = int(record.get("budget") or settings.budget)
    out: dict[str, np.ndarray] = {}
    for name, make in (("random", RandomSearch), ("rea", lambda: REA(settings.population, settings.tournament))):
        rows = []
        for seed in range(seeds):
            ev = Evaluator(TabularExecutor(table, settings.target), Ledger(None), f"{name}-{seed}", budget)
            run_search(make(), ev, None, budget, seed=seed)
            rows.append(np.maximum.accumulate([e.valid for e in ev.history]))
        out[name] = np.array(rows)
    return out


def draw_curve(ax: Any, record: dict[str, Any], baselines: dict[str, np.ndarray]) -> None:
    evals = record.get("evaluations") or []
    for i, (name, curves) in enumerate(sorted(baselines.items())):
        x = np.arange(1, curves.shape[1] + 1)
        ax.plot(x, curves.mean(0), "--", color=f"C{i + 1}", label=f"{name} (mean of {len(curves)} seeds)")
        ax.fill_between(x, curves.min(0), curves.max(0), color=f"C{i + 1}", alpha=0.15)
    if evals:
        best = np.maximum.accumulate([e["valid"] for e in evals])
        ax.plot(np.arange(1, len(best) + 1), best, "-o", ms=3, color="C0", label=f"this run ({record.get('llm', '?')})")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best validation so far")
    ax.set_title(f"{record.get('source') or '-'} -> {record.get('target')}: {len(evals)}/{record.get('budget')} evaluations")
    ax.grid(alpha=0.3)
    if evals or baselines:
        ax.legend(fontsize=7, loc="lower right")


def draw_filter(ax: Any, record: dict[str, Any], space: Any = None) -> None:
    """Positions (rows) x choices (columns): allowed cells filled; the best cell's choices ringed."""
    filters = record.get("filters") or []
    if not filters:
        ax.text(0.5, 0.5, "no filter yet", ha="center", va="center")
        ax.set_axis_off()
        return
    last = filters[-1]
    allowed: dict[str, list[str]] = last["allowed"]
    positions = list(allowed)
    if space is None:
        space = _space(record)
    choices = list(space.positions[0].choices) if space is not None and len({p.choices for p in space.positions}) == 1 \
        else list(dict.fromkeys(c for cs in allowed.values() for c in cs))
    grid = np.array([[1.0 if c in allowed[p] else 0.0 for c in choices] for p in positions])
    ax.imshow(grid, cmap="Blues", vmin=0, vmax=1.4, aspect="auto")
    best = (record.get("best") or {}).get("arch")
    if best and space is not None:
        try:
            arch = space.from_string(best)
            for i, p in enumerate(space.positions):
                name = p.choices[arch[i]]
                if p.name in positions and name in choices:
                    ax.plot(choices.index(name), positions.index(p.name), "o", mfc="none", mec="C3", ms=14, mew=2)
        except Exception as exc:  # noqa: BLE001 - a ring is decoration; never fail a figure for it
            log.debug("no ring for the best cell %s: %s", best, exc)
    ax.set_xticks(range(len(choices)), choices, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(positions)), positions, fontsize=7)
    ax.set_title(f"filter of round {last['round']} ({last['how']}): {last['size']} cells; ring = best cell", fontsize=9)


def draw_principles(ax: Any, record: dict[str, Any], *, rows: int = 14) -> None:
    """One row per (position, choice) effect, one column per round: ▲ prefer, ▼ avoid, size = confidence."""
    history = record.get("principles_history") or []
    if not history:
        ax.text(0.5, 0.5, "no principles yet", ha="center", va="center")
        ax.set_axis_off()
        return
    keys: dict[tuple[str, str], int] = {}
    for h in history:
        for p in h["principles"]:
            keys[(p["position"], p["choice"])] = keys.get((p["position"], p["choice"]), 0) + 1
    shown = [k for k, _ in sorted(keys.items(), key=lambda kv: -kv[1])[:rows]]
    for x, h in enumerate(history):
        for p in h["principles"]:
            k = (p["position"], p["choice"])
            if k in shown:
                up = p["direction"] == "prefer"
                ax.scatter(x, shown.index(k), marker="^" if up else "v", color="C2" if up else "C3",
                           s=30 + 120 * float(p.get("confidence", 0.5)), alpha=0.8)
    ax.set_xticks(range(len(history)), [f"r{h['round']}\n{h['mode']}" for h in history], fontsize=7)
    ax.set_yticks(range(len(shown)), [f"{c} @ {p}" for p, c in shown], fontsize=7)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.grid(alpha=0.2)
    ax.set_title("principle history (▲ prefer, ▼ avoid; size = confidence)", fontsize=9)


def _space(record: dict[str, Any]) -> Any:
    from archlore.tools.spaces import get_space

    try:
        return get_space((record.get("settings") or {}).get("space") or record.get("space") or "nb201")
    except ArchloreError:
        return None


def figure(record: dict[str, Any], kind: str = "all", *, baselines: dict[str, np.ndarray] | None = None) -> Figure:
    if kind not in KINDS:
        raise ArchloreError(f"unknown plot {kind!r}: use {', '.join(KINDS)}")
    panels = ["curve", "filter", "principles"] if kind == "all" else [kind]
    fig = Figure(figsize=(5.2 * len(panels), 4.2) if kind == "all" else (7.0, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        if panel == "curve":
            draw_curve(ax, record, baselines or {})
        elif panel == "filter":
            draw_filter(ax, record)
        else:
            draw_principles(ax, record)
    fig.suptitle(f"run {record.get('run_id')}", fontsize=10)
    return fig


def save(record: dict[str, Any], path: str | Path, kind: str = "all", *, baselines: dict[str, np.ndarray] | None = None) -> Path:
    path = Path(path)
    if path.suffix.lower() not in {".png", ".svg", ".pdf"}:
        raise ArchloreError(f"--plot {path}: give a .png, .svg or .pdf file name")
    if path.parent and not path.parent.is_dir():
        raise ArchloreError(f"--plot {path}: the folder {path.parent} does not exist")
    figure(record, kind, baselines=baselines).savefig(path, dpi=100)
    return path


def png_bytes(record: dict[str, Any], kind: str = "all", *, baselines: dict[str, np.ndarray] | None = None) -> bytes:
    buf = io.BytesIO()
    figure(record, kind, baselines=baselines).savefig(buf, format="png", dpi=90)
    return buf.getvalue()
