"""The memory transfer experiment: does recalling principles from past tasks help a new task?

For each space: fill a fresh principle memory from agent runs on some tasks (those runs use no
source table, so what they store was learned from their own task's data only), check from the
memory's provenance that no held-out target's data went into it, then run the held-out targets
with the memory on and off under the space's LAPT protocol.

Hygiene: one new store per experiment (in a temporary folder); every run, fill or held-out, gets a
sealed table (the source's validation copy and the metered target: `access`), so it reads target
metrics only of the cells it evaluates; held-out runs only read the memory (nothing one seed learns
reaches another); recall excludes the target task (asserted for every run); seeds come from the
declared splits (fill runs from the `fill` split, held-out runs from the split asked for).

    archlore experiment transfer --space nb201 --seeds 30 --split heldout --out results/transfer-nb201.json
"""

from __future__ import annotations

import collections
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from archlore.agents.context import RunSettings
from archlore.agents.runner import execute
from archlore.memory.store import open_store
from archlore.tools.ledger import Ledger
from archlore.tools.tables import load_table

from . import protocols as P
from .access import TargetAccess
from .harness import dumps, make_request
from .strategies_agent import check_memory

SETUPS = {
    # space: (fill tasks, held-out targets, a source table for LAPT's setting)
    "nb201": (["cifar10"], ["cifar100", "imagenet16-120"], "cifar10"),
    "tnb101": (["class_scene", "class_object", "segmentsemantic", "normal"], ["room_layout", "autoencoder"], "jigsaw"),
}
# what the markdown shows per space (all metrics are in the JSON)
SHOWN = {"nb201": ("evals_to_top01", "p_top01", "evals_to_top5", "test_regret@20"), "tnb101": ("percentile", "p_top1")}


def run(
    space: str, seeds: P.Seeds, *, fill_seeds: int, data: str | None = None, embedding: str = "minilm",
    fill_budget: int | None = None, progress: Callable[[str], None] | None = None,
) -> dict:
    """Fill a memory, then run the held-out targets with and without it; returns the payload."""
    fill, held_out, fixed_source = SETUPS[space]
    proto = P.PROTOCOLS[f"lapt-{space}"]
    fill_split = P.seed_range(fill_seeds, split="fill")
    fill_budget = fill_budget or proto.budget
    table = load_table(space, data)
    facts = {t: proto.facts(table, t) for t in held_out}
    rows = []
    with tempfile.TemporaryDirectory(prefix="archlore-transfer-") as tmp:
        store = open_store(Path(tmp) / "memory", embedding=embedding)
        try:
            t0 = time.perf_counter()
            for task in fill:
                for seed in fill_split.values:
                    s = RunSettings(run_id=f"fill-{task}-s{seed}", space=space, target=task, source=None,
                                    budget=fill_budget, seed=seed, memory="off")
                    execute(s, table=TargetAccess(table, task, fill_budget).sealed_table(), memory=store,
                            use_llm_spec=False)
            fill_s = time.perf_counter() - t0
            if progress:
                progress(f"filled the memory from {len(fill) * fill_seeds} runs in {fill_s:.0f} s")
            check_memory(store, space, held_out, what="filled for this experiment")  # provenance, not trust
            provenance = sorted(store.data_tasks(space))
            conditions = [("memory", None, store), ("no memory", None, None)]
            if fixed_source:  # LAPT's setting (a source table) with and without the memory on top
                conditions += [(f"source {fixed_source} + memory", fixed_source, store),
                               (f"source {fixed_source}", fixed_source, None)]
            for target in held_out:
                for name, source, mem in conditions:
                    per_seed: dict[str, list] = {m.key: [] for m in proto.metrics}
                    recalled: collections.Counter = collections.Counter()
                    for seed in seeds.values:
                        # held-out runs only read: nothing one seed learns reaches another seed or target
                        req = make_request(table, proto, target, source, seed)
                        s = RunSettings(run_id=f"{target}-{name}-s{seed}", space=space, target=target, source=source,
                                        budget=proto.budget, seed=seed, memory="off", remember=False)
                        ledger = Ledger(None)
                        try:
                            rec = execute(s, ledger=ledger, table=req.sealed_table(), memory=mem, use_llm_spec=False)
                        finally:
                            ledger.close()
                        assert all(r["task"] != target for r in rec["recalled"]), "leakage: recalled the target's own principles"
                        recalled.update(r["task"] for r in rec["recalled"])
                        trace = P.Trace.from_table(table, target, req.access.evaluated)
                        for k, v in proto.score(trace, facts[target]).items():
                            per_seed[k].append(v if v is None or isinstance(v, bool) else round(float(v), 6))
                    row = {"space": space, "target": target, "condition": name, "seeds": seeds.count,
                           "recalled_tasks": dict(recalled.most_common()), **proto.aggregate(per_seed),
                           "per_seed": per_seed}
                    rows.append(row)
                    if progress:
                        progress(f"{target} / {name}: {proto.headline(row)}")
        finally:
            store.close()
    return {"experiment": "memory-transfer", "space": space, "protocol": proto.name, "fill_tasks": fill,
            "fill_seeds": fill_split.to_json(), "fill_budget": fill_budget, "memory_data_tasks": provenance,
            "held_out": held_out, "budget": proto.budget, "seeds": seeds.to_json(),
            "fill_seconds": round(fill_s, 1), "rows": rows, "comparisons": comparisons(space, rows)}


def comparisons(space: str, rows: list[dict]) -> list[dict]:
    """With the memory against without it (alone, and on top of the source table), per target and
    shown metric: the paired-bootstrap difference over the same seeds."""
    proto = P.PROTOCOLS[f"lapt-{space}"]
    src = SETUPS[space][2]
    by = {(r["target"], r["condition"]): r for r in rows}
    out = []
    for target in dict.fromkeys(r["target"] for r in rows):
        for with_, without in (("memory", "no memory"), (f"source {src} + memory", f"source {src}")):
            if (target, with_) not in by or (target, without) not in by:
                continue
            for key in SHOWN[space]:
                d = P.paired_difference(by[(target, with_)], by[(target, without)], proto.metric(key))
                if d is not None:
                    out.append({"target": target, "with": with_, "without": without, "metric": key, **d})
    return out


def markdown(payload: dict) -> str:
    proto = P.PROTOCOLS[payload["protocol"]]
    shown = [proto.metric(k) for k in SHOWN[payload["space"]]]
    head = (f"Memory filled from {', '.join(payload['fill_tasks'])} (its provenance: "
            f"{', '.join(payload['memory_data_tasks'])}); held-out targets {', '.join(payload['held_out'])}; "
            f"{P.Seeds(**payload['seeds']).describe()}.\n\n")
    header = ["target", "condition", "seeds", *(m.label for m in shown), "recalled tasks"]
    lines = [
        [r["target"], r["condition"], str(r["seeds"]), *(P.interval_text(r, m) for m in shown),
         ", ".join(f"{k} ({v})" for k, v in r["recalled_tasks"].items()) or "–"]
        for r in payload["rows"]
    ]
    out = head + P.md_table(header, lines)
    if payload.get("comparisons"):
        header = ["target", "memory", "against", "metric", "difference (paired 95% CI)", "verdict"]
        lines = []
        for c in payload["comparisons"]:
            m = proto.metric(c["metric"])
            nd = 3 if m.kind == "proportion" else m.nd
            lines.append([c["target"], c["with"], c["without"], m.label,
                          f"{c['diff']:+.{nd}f} [{c['diff_lo']:+.{nd}f}, {c['diff_hi']:+.{nd}f}]", c["verdict"]])
        out += "\nWith the memory against without it, paired over the same seeds:\n\n" + P.md_table(header, lines)
    return out


def write(payload: dict, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dumps(payload) + "\n")
    md = out.with_suffix(".md")
    md.write_text(markdown(payload))
    return md
