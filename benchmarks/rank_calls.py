"""Per-call figures of the LLM in run records: `python -m archlore.benchmarks.rank_calls RECORD.json ...`.

For each record: the rank chooser's calls (prompt tokens, output tokens, seconds; how each answer
was taken; the share of calls whose choice differs from the surrogate's, i.e. from `--llm none`),
the other nodes' LLM use from `tokens.per_node`, the best validation value, and (NB201 and TransNAS
records, when the benchmark data is found: `ARCHLORE_DATA`) the run's scores under the space's
LAPT protocol, as `archlore bench` computes them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean


def summarize(record: dict) -> dict:
    steps = [e for e in record.get("events", []) if e.get("event") == "rank_choice"]
    calls = [e for e in steps if e.get("attempts")]
    hows: dict[str, int] = {}
    for e in steps:
        hows[e.get("how", "?")] = hows.get(e.get("how", "?"), 0) + 1
    per_node = (record.get("tokens") or {}).get("per_node", {})
    return {
        "run_id": record.get("run_id"), "strategy": record.get("strategy"), "llm": record.get("llm"),
        "evaluations": record.get("used"), "best_valid": (record.get("best") or {}).get("valid"),
        "rank_steps": len(steps), "rank_calls": len(calls),
        "prompt_tokens_per_call": round(mean(e["prompt_tokens"] for e in calls), 1) if calls else None,
        "output_tokens_per_call": round(mean(e["output_tokens"] for e in calls), 1) if calls else None,
        "seconds_per_call": round(mean(e["seconds"] for e in calls), 2) if calls else None,
        "changed_share_of_calls": round(mean(bool(e.get("changed")) for e in calls), 3) if calls else None,
        "how": hows,
        "llm_per_node": {k: {x: v.get(x) for x in ("calls", "input_tokens", "output_tokens", "seconds")} for k, v in per_node.items()},
        "choose": choose_summary(record),
    }


def choose_summary(record: dict) -> dict:
    """The analyst's and the planner's "choose" answers (agents/choosing.py) and how many of them
    changed a decision against `--llm none`: an analyst answer that dropped a shown principle or
    took a runner-up the statistics did not state, a planner answer other than option 1 (the
    statistics' own filter)."""
    out = {}
    for node in ("analyze", "plan"):
        answers = [e for e in record.get("events", []) if e.get("event") == "chosen" and e.get("node") == node]
        if node == "analyze":
            changed = [bool(e.get("dropped")) or bool(e.get("alternatives_taken")) for e in answers]
        else:
            changed = [bool(e.get("changed")) for e in answers]
        if answers:
            out[node] = {"answers": len(answers), "changed": sum(changed)}
            if node == "analyze" and all("filter_changed" in e for e in answers):
                # the analyst's answer changed the round's statistical filter (what --llm none searches)
                out[node]["filter_changed"] = sum(bool(e["filter_changed"]) for e in answers)
    return out


def protocol_scores(record: dict) -> dict:
    from archlore.benchmarks import protocols as P
    from archlore.tools.errors import ArchloreError
    from archlore.tools.tables import load_table

    name = {"nb201": "lapt-nb201", "tnb101": "lapt-tnb101"}.get(record.get("space", ""))
    if name is None:
        return {}
    try:
        table = load_table(record["space"], None)
    except ArchloreError:
        return {}
    proto = P.get_protocol(name)
    target = record["target"]
    cells = [table.space.index(table.space.parse(e["arch"])) for e in record["evaluations"]]
    scores = proto.score(P.Trace.from_table(table, target, cells), proto.facts(table, target))
    return {k: (round(float(v), 3) if v is not None else None) for k, v in scores.items()}


def main(paths: list[str]) -> None:
    for p in paths:
        record = json.loads(Path(p).read_text())
        print(json.dumps({**summarize(record), **protocol_scores(record)}))


if __name__ == "__main__":
    main(sys.argv[1:])
