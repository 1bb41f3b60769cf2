"""Wall-clock of a real-training search on a local Ray cluster of 1 vs 2 (or more) workers, and the
speed-up projected for N GPUs from the measured per-candidate time.

The search: `--candidates` distinct NB201 cells proposed by random search and trained for real on
digits (the `proxy` recipe, `--epochs` epochs, one torch thread per candidate), through
`RayExecutor` and the batched search step, exactly as `archlore run --cluster local` runs them.
Each worker count runs in a fresh process (a Ray cluster is sized when it starts). Run:

    python -m archlore.benchmarks.distributed --workers 1 --workers 2 --candidates 40 \
        --out benchmarks/results/distributed.json

The projection: with per-candidate time `t` (the median training time measured inside the
tasks) and per-candidate overhead `o` (measured on 1 worker: wall-clock / candidates - t), `n`
candidates on `N` workers take about ceil(n / N) * (t + o); the speed-up is the 1-worker time
over that. It assumes `t` stays the same on each GPU and the proposals keep N workers busy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def one(workers: int, candidates: int, epochs: int, seed: int) -> dict:
    """One search on a fresh local cluster of `workers` CPUs; returns its timings."""
    from archlore.tools.distributed import RayExecutor, connect, shutdown
    from archlore.tools.evaluator import Evaluator
    from archlore.tools.ledger import Ledger
    from archlore.tools.spaces import NB201Space
    from archlore.tools.strategies import RandomSearch, run_search
    from archlore.tools.training import TrainingExecutor

    space = NB201Space()
    t0 = time.perf_counter()
    connect("local", num_cpus=workers, object_store_mb=200)
    trainer = TrainingExecutor(space, "digits", recipe="proxy", epochs=epochs, seed=seed, threads=1)
    ex = RayExecutor(trainer, cluster="local", num_cpus=1, threads=1)
    startup = time.perf_counter() - t0
    ev = Evaluator(ex, Ledger(None), f"w{workers}", budget=candidates)
    t1 = time.perf_counter()
    out = run_search(RandomSearch(), ev, None, candidates, seed=seed)
    wall = time.perf_counter() - t1
    rows = ev.history
    shutdown()
    return {
        "workers": workers, "candidates": len(rows), "stopped": out.stopped, "wall_s": round(wall, 2),
        "startup_s": round(startup, 2), "failed": sum(1 for e in rows if not e.ok),
        "per_candidate_s": [round(e.wall_time, 3) for e in rows],
        "median_candidate_s": round(statistics.median(e.wall_time for e in rows), 3),
        "best_valid": max((e.valid for e in rows if e.ok), default=None),
    }


def project(runs: list[dict], gpus: tuple[int, ...] = (1, 2, 4, 8, 16, 32)) -> dict:
    base = next(r for r in runs if r["workers"] == 1)
    n, t = base["candidates"], base["median_candidate_s"]
    overhead = max(0.0, base["wall_s"] / n - t)
    return {
        "per_candidate_s": t, "overhead_per_candidate_s": round(overhead, 3), "candidates": n,
        "speedup": {str(g): round(base["wall_s"] / (math.ceil(n / g) * (t + overhead)), 2) for g in gpus},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, action="append", help="worker counts to time (default 1 and 2)")
    ap.add_argument("--candidates", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child: one worker count
    args = ap.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args.one, args.candidates, args.epochs, args.seed)))
        return
    runs = []
    for w in args.workers or [1, 2]:
        proc = subprocess.run(
            [sys.executable, "-m", "archlore.benchmarks.distributed", "--one", str(w), "--candidates",
             str(args.candidates), "--epochs", str(args.epochs), "--seed", str(args.seed)],
            capture_output=True, text=True, env={**os.environ, "ARCHLORE_TRAIN_CACHE": "off"},
        )
        if proc.returncode:
            sys.exit(f"the {w}-worker run failed: {proc.stderr[-1500:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{w} worker(s): {runs[-1]['candidates']} candidates in {runs[-1]['wall_s']} s "
              f"(median {runs[-1]['median_candidate_s']} s per candidate)", flush=True)
    result = {"settings": vars(args) | {"out": str(args.out), "cpus": os.cpu_count()}, "runs": runs}
    if any(r["workers"] == 1 for r in runs):
        result["projection"] = project(runs)
        print("projected speed-up on N GPUs:", result["projection"]["speedup"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":  # pragma: no cover
    main()
