"""The memory transfer experiment: does recalling principles from past tasks help a new task?

For each space: fill a fresh principle memory from agent runs on some tasks (those runs use no
source table, so nothing they store was learned from a held-out task's data), then run the
held-out tasks with the memory on and off under LAPT's protocol. Hygiene: one new store per
experiment (in a temporary folder), recall excludes the target task, and the fill runs never read
a held-out task's data.

    python -m archlore.benchmarks.transfer --space nb201 --seeds 10 --out benchmarks/results/transfer-nb201.json
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from archlore.agents.context import RunSettings
from archlore.agents.runner import execute
from archlore.memory.store import open_store
from archlore.tools.ledger import Ledger
from archlore.tools.tables import load_table

SETUPS = {
    # space: (fill tasks, held-out targets, budget, a source table for LAPT's setting)
    "nb201": (["cifar10"], ["cifar100", "imagenet16-120"], 20, "cifar10"),
    "tnb101": (["class_scene", "class_object", "segmentsemantic", "normal"], ["room_layout", "autoencoder"], 50, "jigsaw"),
}


def _score(space: str, table, target: str, evaluations: list) -> tuple[float, bool]:
    if space == "nb201":
        thr = table.threshold(target, 16)
        best = -np.inf
        for i, e in enumerate(evaluations, start=1):
            best = max(best, e.valid)
            if best >= thr:
                return float(i), True
        return float(len(evaluations)), False
    pct = table.percentile(target, max(e.valid for e in evaluations))
    return pct, pct >= 99.0


def run(space: str, seeds: int, fill_seeds: int, data: str | None, embedding: str, fill_budget: int | None = None) -> dict:
    fill, held_out, budget, fixed_source = SETUPS[space]
    table = load_table(space, data)
    rows = []
    with tempfile.TemporaryDirectory(prefix="archlore-transfer-") as tmp:
        store = open_store(Path(tmp) / "memory", embedding=embedding)
        t0 = time.perf_counter()
        for task in fill:
            for seed in range(fill_seeds):
                s = RunSettings(run_id=f"fill-{task}-s{seed}", space=space, target=task, source=None,
                                budget=fill_budget or budget, seed=1000 + seed, memory="off")
                execute(s, table=table, memory=store, use_llm_spec=False)
        fill_s = time.perf_counter() - t0
        conditions = [("memory", None, store), ("no memory", None, None)]
        if fixed_source:  # LAPT's setting (a source table) with and without the memory on top
            conditions += [(f"source {fixed_source} + memory", fixed_source, store),
                           (f"source {fixed_source}", fixed_source, None)]
        for target in held_out:
            for name, source, mem in conditions:
                scores, hits, recalled = [], [], collections.Counter()
                for seed in range(seeds):
                    # held-out runs only read: nothing one seed learns reaches another seed or target
                    s = RunSettings(run_id=f"{target}-{name}-s{seed}", space=space, target=target, source=source,
                                    budget=budget, seed=seed, memory="off", remember=False)
                    ledger = Ledger(None)
                    rec = execute(s, ledger=ledger, table=table, memory=mem, use_llm_spec=False)
                    assert all(r["task"] != target for r in rec["recalled"]), "leakage: recalled the target's own principles"
                    recalled.update(r["task"] for r in rec["recalled"])
                    sc, hit = _score(space, table, target, ledger.evaluations(s.run_id))
                    scores.append(sc)
                    hits.append(hit)
                row = {"space": space, "target": target, "condition": name, "seeds": seeds,
                       "recalled_tasks": dict(recalled.most_common())}
                if space == "nb201":
                    row.update(mean_evals_to_top=float(np.mean(scores)), p_hit=float(np.mean(hits)))
                else:
                    row.update(mean_percentile=float(np.mean(scores)), p_top1=float(np.mean(hits)))
                rows.append(row)
        store.close()
    return {"experiment": "memory-transfer", "space": space, "fill_tasks": fill, "fill_seeds": fill_seeds, "fill_budget": fill_budget or budget,
            "held_out": held_out, "budget": budget, "fill_seconds": round(fill_s, 1), "rows": rows}


def markdown(payload: dict) -> str:
    nb = payload["space"] == "nb201"
    head = "| target | condition | seeds | " + ("mean evals to top-0.1% | P(hit)" if nb else "mean percentile | P(top-1%)") + " | recalled tasks |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        a, b = (r["mean_evals_to_top"], r["p_hit"]) if nb else (r["mean_percentile"], r["p_top1"])
        lines.append(f"| {r['target']} | {r['condition']} | {r['seeds']} | {a:.2f} | {b:.3f} | "
                     f"{', '.join(f'{k} ({v})' for k, v in r['recalled_tasks'].items()) or '-'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", choices=sorted(SETUPS), default="nb201")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--fill-seeds", type=int, default=3)
    ap.add_argument("--fill-budget", type=int, default=None, help="budget of the fill runs (default: the protocol's)")
    ap.add_argument("--data", default=None)
    ap.add_argument("--embedding", default="minilm", choices=["minilm", "hash"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    payload = run(args.space, args.seeds, args.fill_seeds, args.data, args.embedding, args.fill_budget)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    md = markdown(payload)
    args.out.with_suffix(".md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
