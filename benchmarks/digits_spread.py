"""How much the cell matters to `TrainingExecutor` on digits: train random cells and a few
fixed ones (all avg_pool_3x3, all none, all nor_conv_3x3) and report the spread of accuracies.

    archlore experiment digits-spread --cells 20 --seed 0 --out spread.json

`--seed` picks the random cells and seeds the training of every cell (common random numbers,
so differences between rows come from the cells); `--train-seed` retrains the same cells from
another seed, to see how much of the spread is training noise. Prints a markdown table and a
summary; writes the rows, the settings and the summary as JSON when `--out` is given.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from archlore.tools.spaces import Arch, SearchSpace, get_space
from archlore.tools.nets.nb201 import edge_ops, reaches_output
from archlore.tools.training import TrainingExecutor


def fixed_cells(space: SearchSpace) -> dict[str, Arch]:
    """The uniform reference cells the space can express."""
    out = {}
    for label, op in (("all-pool", "avg_pool_3x3"), ("all-none", "none"), ("all-conv3x3", "nor_conv_3x3")):
        if all(op in p.choices for p in space.positions):
            out[label] = tuple(p.choices.index(op) for p in space.positions)
    return out


def random_cells(space: SearchSpace, n: int, seed: int, exclude: set[Arch]) -> list[Arch]:
    rng = np.random.default_rng(seed)
    cells: list[Arch] = []
    while len(cells) < n:
        arch = space.sample(rng)
        if arch not in exclude and arch not in cells:
            cells.append(arch)
    return cells


def measure(
    executor: TrainingExecutor, cells: list[tuple[str, Arch]], progress: Callable[[str], None] | None = None,
) -> list[dict]:
    rows = []
    for i, (kind, arch) in enumerate(cells, 1):
        m = executor.evaluate(arch)
        if not m.ok:
            raise RuntimeError(f"{executor.space.to_string(arch)} failed to train: {m.reason}")
        ops = edge_ops(executor.space.describe(arch))
        row = {
            "arch": executor.space.to_string(arch),
            "kind": kind,
            "valid": m.valid,
            "test": m.test,
            "params": int(m.cost["params"]),
            "flops": int(m.cost["flops"]),
            "seconds": m.wall_time,
            "train_seconds": m.cost["train_seconds"],
            "reaches_output": reaches_output(ops),
        }
        rows.append(row)
        if progress:
            progress(f"[{i}/{len(cells)}] {row['arch']} valid {m.valid:.2f} ({m.wall_time:.1f}s)")
    return rows


def summarise(rows: list[dict]) -> dict:
    valid = [r["valid"] for r in rows]
    connected = [r["valid"] for r in rows if r["reaches_output"]]
    out = {
        "cells": len(rows),
        "valid_min": min(valid),
        "valid_median": statistics.median(valid),
        "valid_max": max(valid),
        "connected_cells": len(connected),
        "connected_valid_min": min(connected, default=float("nan")),
        "connected_valid_median": statistics.median(connected) if connected else float("nan"),
        "seconds_mean": statistics.fmean(r["seconds"] for r in rows),
        "seconds_max": max(r["seconds"] for r in rows),
        "seconds_total": sum(r["seconds"] for r in rows),
    }
    for r in rows:
        if r["kind"] == "random":
            continue
        kind = r["kind"]
        # rank 1 is best; a tie takes the worst rank it shares, so "last" is never flattered
        out[f"{kind}_valid"] = r["valid"]
        out[f"{kind}_rank"] = sum(1 for v in valid if v >= r["valid"])
        if r["reaches_output"]:  # its rank among cells whose output depends on the input
            out[f"{kind}_rank_connected"] = sum(1 for v in connected if v >= r["valid"])
    return out


def markdown(rows: list[dict], summary: dict) -> str:
    lines = [
        "| # | arch | kind | valid % | test % | params | seconds |",
        "|---|------|------|--------:|-------:|-------:|--------:|",
    ]
    for i, r in enumerate(sorted(rows, key=lambda r: -r["valid"]), 1):
        kind = r["kind"] + ("" if r["reaches_output"] else " (no path in->out)")
        lines.append(
            f"| {i} | `{r['arch']}` | {kind} | {r['valid']:.2f} | {r['test']:.2f} | "
            f"{r['params']:,} | {r['seconds']:.1f} |"
        )
    s = summary
    lines += [
        "",
        f"valid accuracy over {s['cells']} cells: min {s['valid_min']:.2f}, median "
        f"{s['valid_median']:.2f}, max {s['valid_max']:.2f}",
        f"over the {s['connected_cells']} cells with a path from input to output: min "
        f"{s['connected_valid_min']:.2f}, median {s['connected_valid_median']:.2f}",
    ]
    for kind in ("all-pool", "all-none", "all-conv3x3"):
        if f"{kind}_rank" in s:
            extra = (
                f" ({s[f'{kind}_rank_connected']} of {s['connected_cells']} connected cells)"
                if f"{kind}_rank_connected" in s else ""
            )
            lines.append(f"{kind}: valid {s[f'{kind}_valid']:.2f}, rank {s[f'{kind}_rank']} of {s['cells']}{extra}")
    lines.append(
        f"seconds per candidate: mean {s['seconds_mean']:.1f}, max {s['seconds_max']:.1f}, "
        f"total {s['seconds_total']:.0f}"
    )
    return "\n".join(lines)


def run(
    *, cells: int = 20, seed: int = 0, train_seed: int | None = None, space: str = "nb201", task: str = "digits",
    epochs: int | None = None, channels: int | None = None, threads: int | None = 1,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Train `cells` random cells plus the fixed ones; the rows, the settings and a summary.

    `seed` picks the random cells and seeds training (unless `train_seed` is given); `threads`
    sets torch's threads (1 is fastest for these tiny nets; None for torch's default).
    """
    sp = get_space(space)
    train_seed = seed if train_seed is None else train_seed
    executor = TrainingExecutor(sp, task, seed=train_seed, threads=threads, epochs=epochs,
                                model_options={"channels": channels} if channels is not None else None)
    fixed = fixed_cells(sp)
    todo = list(fixed.items()) + [("random", a) for a in random_cells(sp, cells, seed, set(fixed.values()))]
    start = time.perf_counter()
    rows = measure(executor, todo, progress)
    return {
        "settings": {
            "space": sp.name, "task": executor.task, "seed": seed,
            "train_seed": train_seed, "cells": cells,
            "epochs": executor.epochs, "channels": executor.options.get("channels"),
            "cells_per_stage": executor.options.get("cells_per_stage"), "batch_size": executor.batch_size,
            "lr": executor.lr, "threads": threads, "device": str(executor.device),
            "recipe": executor.recipe.to_record(), "data": executor.data.record(),
        },
        "rows": rows,
        "summary": summarise(rows),
        "elapsed_seconds": time.perf_counter() - start,
    }


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
