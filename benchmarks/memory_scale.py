"""How the principle memory scales: import, query and recall times at 10,000 and 30,000 principles,
and the wall time of a cold ``archlore memory query`` and of ``archlore --help``.

The principles are synthetic but shaped like the real ones: NB201 cells (6 edges x 5 ops x 2
directions = 60 distinct principles per task), one task per 60 principles, each with a task
description made of a modality, a problem and a size, each principle stated by 1 to 3 runs with
the sentence the analyst writes ("Prefer nor_conv_3x3 at edge2<-1: 60% of the top cells of ... use
it there, against 20% of all cells."), and full provenance.

    python -m archlore.benchmarks.memory_scale --out benchmarks/results/memory_scale.md

The store is built by ``archlore memory import`` of an export file (first ``--sizes[0]``
principles, then the rest), so the import figure is the real command's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EDGES = ["edge1<-0", "edge2<-0", "edge2<-1", "edge3<-0", "edge3<-1", "edge3<-2"]
OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
MODALITIES = ["colour photos", "greyscale scans", "satellite tiles", "microscopy slides", "x-ray images",
              "spectrograms of speech", "handwritten digits", "street scenes", "product photos", "sketches"]
PROBLEMS = [("image classification", "into {n} classes"), ("object detection", "with {n} object kinds"),
            ("semantic segmentation", "into {n} pixel labels"), ("keyword spotting", "among {n} words"),
            ("fine-grained recognition", "of {n} species"), ("anomaly detection", "over {n} machines")]
SIZES = ["16x16", "28x28", "32x32", "64x64", "96x96", "128x128", "224x224"]
QUERIES = ["which convolution works on the first edge", "avoid pooling on the last edge",
           "skip connections help deep cells", "small images with many classes", "what to prefer for speech",
           "1x1 convolutions on the input edge", "the operations top cells share", "zeroed edges hurt accuracy"]


def task_name(i: int) -> str:
    return f"task{i:04d}"


def task_description(rng: random.Random) -> str:
    problem, tail = rng.choice(PROBLEMS)
    n = rng.choice([2, 10, 100, 120, 1000])
    return f"{problem} of {rng.choice(SIZES)} {rng.choice(MODALITIES)} {tail.format(n=n)}"


def synthetic_export(n: int, *, first_task: int = 0, seed: int = 0) -> dict[str, Any]:
    """An export file (format 2) of exactly ``n`` distinct principles over ceil(n/60) tasks."""
    from archlore.memory.record import archlore_version

    rng = random.Random(seed)
    principles: list[dict[str, Any]] = []
    t = first_task
    while len(principles) < n:
        task, desc = task_name(t), task_description(rng)
        sources = sorted(rng.sample(range(t + 1000, t + 1100), 2))
        runs = [f"{task}-s{s}" for s in range(rng.randint(1, 3))]
        for edge in EDGES:
            for op in OPS:
                for direction in ("prefer", "avoid"):
                    if len(principles) == n:
                        break
                    contribs = []
                    for r, run in enumerate(runs):
                        top, base = rng.randint(30, 95) if direction == "prefer" else rng.randint(0, 10), 20
                        contribs.append({
                            "run_id": run,
                            "text": (f"{direction.capitalize()} {op} at {edge}: {top}% of the top cells of {task} "
                                     f"(run {run}) use it there, against {base}% of all cells."),
                            "confidence": round(rng.uniform(0.3, 0.95), 3),
                            "evidence": f"{task}: {top}% of top-5 vs {base}% uniform",
                            "best_metric": round(rng.uniform(60, 95), 2), "evaluations": 20,
                            "task_description": desc, "metric": "validation accuracy",
                            "created": 1.7e9 + t * 100 + r,
                            "data_tasks": sorted({task, *(task_name(s % 100000) for s in sources)}),
                            "archlore_version": archlore_version(),
                        })
                    principles.append({"space": "nb201", "task": task, "position": edge, "choice": op,
                                       "direction": direction, "text": contribs[0]["text"],
                                       "confidence": contribs[0]["confidence"], "contributions": contribs})
        t += 1
    return {"format": "archlore-memory", "format_version": 2, "encoding_version": 2, "principles": principles}


def _archlore() -> str:
    return str(Path(sys.executable).parent / "archlore")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "ARCHLORE_MEMORY"}


def timed_command(args: list[str], repeats: int) -> list[float]:
    """Wall seconds of a fresh process running ``args``, ``repeats`` times."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = subprocess.run(args, capture_output=True, text=True, env=_env())
        times.append(time.perf_counter() - t0)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {res.stderr[-1000:]}")
    return times


def import_file(memory: Path, path: Path, embedding: str) -> float:
    """Seconds the real ``archlore memory import`` command takes."""
    return timed_command([_archlore(), "memory", "import", str(path), "--memory", str(memory),
                          "--embedding", embedding, "--json"], 1)[0]


def query_times(memory: Path, embedding: str, repeats: int, rng: random.Random) -> dict[str, list[float]]:
    """In-process ``query`` latency, and how much of it is embedding the query text."""
    from archlore.memory.store import open_store

    out: dict[str, list[float]] = {"query": [], "embed": []}
    with open_store(memory, embedding=embedding) as store:
        store.query("warm up the client and the model", k=5)
        for i in range(repeats):
            text = f"{rng.choice(QUERIES)} ({i})"  # distinct: no cached vector
            t0 = time.perf_counter()
            store.embedding([text + " embed only"])
            t1 = time.perf_counter()
            store.query(text, k=5)
            out["embed"].append(t1 - t0)
            out["query"].append(time.perf_counter() - t1)
    return out


def recall_times(memory: Path, embedding: str, repeats: int, rng: random.Random, n_tasks: int) -> list[float]:
    """In-process ``recall`` latency as the agents call it (a new task's description and evidence)."""
    from archlore.memory.store import open_store

    times = []
    with open_store(memory, embedding=embedding) as store:
        store.recall("nb201", "warm up", k=10)
        for i in range(repeats):
            target = task_name(rng.randrange(n_tasks))
            desc = f"{target}: {task_description(rng)} ({i})"
            evidence = f"nor_conv_3x3 at edge{rng.randint(1, 3)} ({i})"
            t0 = time.perf_counter()
            got = store.recall("nb201", desc, evidence, k=10, exclude_tasks=[target], exclude_data=[target])
            times.append(time.perf_counter() - t0)
            assert len(got) == 10 and all(target not in r.data_tasks for r in got)
    return times


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def run(sizes: list[int], embedding: str, repeats: int, cold_repeats: int, workdir: Path) -> dict[str, Any]:
    rng = random.Random(0)
    memory = workdir / "memory"
    results: dict[str, Any] = {"embedding": embedding, "sizes": {}}
    done = 0
    for size in sizes:
        part = synthetic_export(size - done, first_task=(done + 59) // 60, seed=size)
        path = workdir / f"import-{size}.json"
        path.write_text(json.dumps(part))
        row: dict[str, Any] = {"import_principles": size - done, "import_s": import_file(memory, path, embedding)}
        done = size
        q = query_times(memory, embedding, repeats, rng)
        row.update(query_p50_s=pct(q["query"], 0.5), query_p95_s=pct(q["query"], 0.95),
                   embed_p50_s=pct(q["embed"], 0.5))
        rec = recall_times(memory, embedding, repeats, rng, (size + 59) // 60)
        row.update(recall_p50_s=pct(rec, 0.5), recall_p95_s=pct(rec, 0.95))
        cold = timed_command([_archlore(), "memory", "query", "which convolution works on the first edge",
                              "--memory", str(memory), "--space", "nb201", "--json"], cold_repeats)
        row.update(cold_query_p50_s=pct(cold, 0.5), cold_query_max_s=max(cold))
        results["sizes"][size] = row
        print(json.dumps({size: row}), flush=True)
    helps = timed_command([_archlore(), "--help"], cold_repeats)
    results.update(help_p50_s=pct(helps, 0.5), help_max_s=max(helps))
    return results


def markdown(results: dict[str, Any], command: str) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Principle memory at scale",
        "",
        f"Measured with `{command}` on {platform.machine()} with {os.cpu_count()} cores (load average "
        f"{load:.1f} at the end: the machine was shared), Python {platform.python_version()}, "
        f"embedding `{results['embedding']}`. Synthetic NB201 principles (60 per task, 1 to 3 runs each, "
        "full provenance); see `benchmarks/memory_scale.py`.",
        "",
        "| principles | imported (`archlore memory import`) | query p50 / p95 (in-process) "
        "| of which embedding the query (p50) | recall p50 / p95 (in-process, k=10) "
        "| cold `archlore memory query` p50 / max |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, r in results["sizes"].items():
        lines.append(
            f"| {int(size):,} | {r['import_principles']:,} in {r['import_s']:.1f} s | "
            f"{r['query_p50_s'] * 1000:.0f} / {r['query_p95_s'] * 1000:.0f} ms | {r['embed_p50_s'] * 1000:.0f} ms | "
            f"{r['recall_p50_s'] * 1000:.0f} / {r['recall_p95_s'] * 1000:.0f} ms | "
            f"{r['cold_query_p50_s']:.2f} / {r['cold_query_max_s']:.2f} s |"
        )
    lines += ["", f"`archlore --help`: {results['help_p50_s']:.2f} s p50, {results['help_max_s']:.2f} s max.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000],
                    help="store sizes to measure at, ascending (each adds to the previous)")
    ap.add_argument("--embedding", default="minilm", choices=["minilm", "hash"])
    ap.add_argument("--repeats", type=int, default=50, help="queries and recalls per size")
    ap.add_argument("--cold-repeats", type=int, default=5, help="fresh processes per command")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the stores here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = ap.parse_args(argv)
    if args.sizes != sorted(args.sizes):
        ap.error("--sizes must be ascending")
    command = "python -m archlore.benchmarks.memory_scale " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="archlore-memory-scale-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = run(args.sizes, args.embedding, args.repeats, args.cold_repeats, workdir)
    text = markdown(results, command.strip())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
