"""Several processes on one memory folder at once: two write (remember), a third reads (query and
recall) all the while. Nothing written is lost, no process sees an exception, and the reader's
reused client does not serve a stale index after the writes. Real Chroma, the hash embedding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archlore.memory.store import open_store

WRITER = """
import os, sys, time
from archlore.memory.record import Outcome, Principle, TaskInfo
from archlore.memory.store import open_store
path, name, rounds, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
while not os.path.exists(ready):  # write while the reader reads
    time.sleep(0.01)
task = TaskInfo(space="nb201", task="cifar10", description="ten classes of small colour images")
with open_store(path, embedding="hash") as store:
    for r in range(rounds):
        shared = [Principle(text=f"prefer op{i} at edge{i}", position=f"edge{i}", choice=f"op{i}",
                            direction="prefer", confidence=0.5) for i in range(4)]
        own = [Principle(text=f"{name} round {r} avoids op{r} at edge{r}", position=f"edge{r}",
                         choice=f"{name}-op{r}", direction="avoid", confidence=0.4)]
        store.remember(shared + own, task, Outcome(best_metric=90.0 + r, evaluations=10), f"{name}-{r}",
                       data_tasks=["cifar10"])
print("ok", flush=True)
"""

READER = """
import os, sys
from archlore.memory.store import open_store
path, ready, stop = sys.argv[1], sys.argv[2], sys.argv[3]
seen, reads = 0, 0
with open_store(path, embedding="hash") as store:  # one store, its Chroma client reused between reads
    while True:
        last = os.path.exists(stop)  # one more round after the writers finished
        hits = store.query("op at edge", k=100)
        rec = store.recall("nb201", "ten classes of small colour images", "avoid op1", k=100)
        assert len(rec) >= seen, (len(rec), seen)  # nothing once read goes missing
        seen, reads = len(rec), reads + 1
        open(ready, "a").close()  # the writers start after the first read
        if last:
            break
print(len(hits), len(rec), reads, flush=True)
"""


@pytest.mark.slow
def test_two_writers_and_a_reader_at_once(tmp_path: Path):
    mem, ready, stop = tmp_path / "memory", tmp_path / "reader-ready", tmp_path / "writers-done"
    open_store(mem, embedding="hash").close()
    env = {k: v for k, v in os.environ.items() if k != "ARCHLORE_MEMORY"}
    rounds = 8

    def start(code: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", code, str(mem), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)

    reader = start(READER, str(ready), str(stop))
    writers = [start(WRITER, name, str(rounds), str(ready)) for name in ("a", "b")]
    for w in writers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0 and out.strip() == "ok", err[-3000:]
    stop.touch()
    out, err = reader.communicate(timeout=300)
    assert reader.returncode == 0, err[-3000:]
    hits, recalled, reads = map(int, out.split())
    expected = 4 + 2 * rounds  # shared principles, plus one of each writer's rounds
    # the reader's last round came after every write: a stale reused client would show fewer
    assert hits == recalled == expected and reads >= 2

    with open_store(mem, embedding="hash") as s:
        records = s.list()
        assert len(records) == expected == s.count()
        runs = {f"{n}-{r}" for n in ("a", "b") for r in range(rounds)}
        shared = [r for r in records if r["direction"] == "prefer"]
        assert all(set(r["sources"]) == runs and r["count"] == 2 * rounds for r in shared)
        assert all(r["count"] == 1 for r in records if r["direction"] == "avoid")
        assert s.data_tasks() == {"cifar10"}
        assert len(s.recall("nb201", "ten classes", k=100)) == expected
        assert json.dumps(records)  # plain data all the way down
