"""Crash consistency of `archlore run`: kill -9 at seeded random moments, resume, lose nothing.

Each run is a real `archlore run` subprocess (`--llm none --memory off`, NB201 cifar100 <-
cifar10, budget 30). It is killed with SIGKILL when its ledger reaches a chosen row count or at a
chosen time after start, resumed with `archlore run --resume ID` (itself killed again), and the
final record's evaluation sequence must equal an uninterrupted run's with the same seed.
`python -m archlore.benchmarks.crash_suite` does the same with many more kills.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import textwrap
import time

import pytest

from archlore.benchmarks.crash_suite import (
    CLI, Kill, _env, evaluation_sequence, ledger_rows, resume_args, run_args, run_with_kills,
    seeded_kills,
)

from .conftest import DATA, needs_data

pytestmark = [needs_data, pytest.mark.slow]
BUDGET = 30


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run: its evaluation sequence and checkpoint size."""
    runs = tmp_path_factory.mktemp("whole")
    out = run_with_kills("whole", runs, DATA, [], budget=BUDGET)
    assert len(out.sequence) == BUDGET == len(set(out.sequence))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_kill9_at_seeded_moments_then_resume_gives_the_same_sequence(tmp_path, whole, seed):
    kills = seeded_kills(random.Random(seed), 3, BUDGET)
    out = run_with_kills(f"k{seed}", tmp_path, DATA, kills, budget=BUDGET)
    assert out.kills_landed >= 1, out.log  # at least one kill hit a running process
    assert out.sequence == whole.sequence, out.log
    # kills and resumes do not grow the checkpoints without bound
    assert out.checkpoint_bytes <= 2 * whole.checkpoint_bytes + 256 * 1024, (out.checkpoint_bytes, whole.checkpoint_bytes)


def test_kill9_before_the_first_evaluation_and_during_the_last(tmp_path, whole):
    """The edges: start-up (maybe before the run exists on disk) and the final evaluations/record."""
    kills = [Kill(seconds=0.3), Kill(rows=0), Kill(rows=BUDGET - 1), Kill(rows=BUDGET)]
    out = run_with_kills("edges", tmp_path, DATA, kills, budget=BUDGET)
    assert out.sequence == whole.sequence, out.log


# Both resumes are slowed (0.15 s per evaluation) so the winner still runs when the other starts.
SLOW_CLI = textwrap.dedent("""
    import sys, time
    from archlore.tools import executors
    real = executors.TabularExecutor.evaluate
    def slow(self, arch):
        time.sleep(0.15)
        return real(self, arch)
    executors.TabularExecutor.evaluate = slow
    from archlore.agents.cli import main
    sys.argv = ["archlore", *sys.argv[1:]]
    main()
""")


def test_two_resumes_at_once_one_is_refused_in_one_line(tmp_path, whole):
    run = subprocess.Popen(CLI + run_args("race", tmp_path, DATA, budget=BUDGET), env=_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while ledger_rows(tmp_path / "race") < 3 and run.poll() is None:
        time.sleep(0.005)
    run.kill()
    run.communicate()
    assert ledger_rows(tmp_path / "race") < BUDGET, "the run finished before the kill"
    procs = [subprocess.Popen([sys.executable, "-c", SLOW_CLI, *resume_args("race", tmp_path)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert sorted(r[0] for r in results) == [0, 2], [(c, e[-500:]) for c, _, e in results]
    refused = next(e for c, _, e in results if c == 2)
    lines = [line for line in refused.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), refused
    assert re.search(r"lock|another|in use|pid", lines[0], re.I), lines[0]
    assert evaluation_sequence(tmp_path / "race") == whole.sequence


# A kill at the one moment that matters here: right after the `assess` node's writes are on disk
# and before LangGraph writes the next checkpoint. (The random kills above hit it now and then.)
KILL_AFTER_ASSESS_WRITES = textwrap.dedent("""
    import os, signal, sys
    from langgraph.checkpoint.sqlite import SqliteSaver
    real = SqliteSaver.put_writes
    seen = [0]
    def put_writes(self, config, writes, task_id, task_path=""):
        real(self, config, writes, task_id, task_path)
        if "assess" in str(task_path):
            seen[0] += 1
            if seen[0] == int(os.environ["KILL_AT_ASSESS"]):
                os.kill(os.getpid(), signal.SIGKILL)
    SqliteSaver.put_writes = put_writes
    from archlore.agents.cli import main
    sys.argv = ["archlore", *sys.argv[1:]]
    main()
""")


@pytest.mark.parametrize("at_assess", [2, 4])
def test_kill_between_a_nodes_writes_and_the_next_checkpoint(tmp_path, whole, at_assess):
    env = {**_env(), "KILL_AT_ASSESS": str(at_assess)}
    p = subprocess.run([sys.executable, "-c", KILL_AFTER_ASSESS_WRITES, *run_args("w", tmp_path, DATA, budget=BUDGET)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    r = subprocess.run(CLI + resume_args("w", tmp_path), capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert evaluation_sequence(tmp_path / "w") == whole.sequence
