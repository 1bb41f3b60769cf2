"""The principle memory: retrieval, merging, persistence, safety under concurrency, server mode, CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from archlore.agents.cli_memory import memory_app
from archlore.memory.embeddings import HashEmbedding, MiniLMEmbedding
from archlore.memory.errors import EmbeddingMismatch, MemoryFormatError, MemoryStoreError, PrincipleNotFound
from archlore.memory.record import ENCODING_VERSION, Outcome, Principle, TaskInfo
from archlore.memory.store import default_location, open_store, principle_id
from archlore.tools.errors import ArchloreError

CHROMA = Path(sys.executable).parent / "chroma"

TASKS = {  # space, task -> description
    ("nb201", "cifar10"): "image classification of 32x32 colour photos into 10 object classes",
    ("nb201", "ImageNet16-120"): "image classification of 16x16 downsampled ImageNet photos into 120 classes",
    ("nb201", "speech"): "keyword spotting in short audio clips of spoken command words",
    ("nb201", "segment"): "semantic segmentation of indoor room scenes into pixel labels",
    ("tnb101", "cifar10-like"): "image classification of 32x32 colour photos into 10 object classes",
}


def P(position: str, choice: str, direction: str = "prefer", confidence: float = 0.8,
      text: str | None = None, evidence: str = "") -> Principle:
    return Principle(text=text or f"{direction} {choice} at {position}", position=position, choice=choice,
                     direction=direction, confidence=confidence, evidence=evidence)


def T(space: str, task: str) -> TaskInfo:
    return TaskInfo(space=space, task=task, description=TASKS[(space, task)])


def _fill(store) -> None:
    """Two principles per task, each task with a distinct choice so results show where they came from."""
    for i, (space, task) in enumerate(TASKS):
        store.remember(
            [P("edge1<-0", f"{task}-op", "prefer", 0.8), P("edge2<-1", f"{task}-bad", "avoid", 0.6)],
            T(space, task), Outcome(best_metric=50.0 + i, evaluations=100), run_id=f"run-{task}",
            data_tasks=[task],
        )


@pytest.fixture
def mem(tmp_path: Path) -> Path:
    return tmp_path / "memory"


@pytest.fixture
def store(mem: Path):
    with open_store(mem, embedding="hash") as s:
        yield s


def _py(code: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ARCHLORE_MEMORY"}
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


# A writer process: each round is a new run stating the same shared principles plus its own.
WRITER_LIB = """
from archlore.memory.record import Outcome, Principle, TaskInfo
TASK = TaskInfo(space="nb201", task="cifar10", description="ten classes of small colour images")
def build(writer, n_shared, n_own):
    ps = [Principle(text=f"prefer op{i} at edge{i}", position=f"edge{i}", choice=f"op{i}",
                    direction="prefer", confidence=0.5) for i in range(n_shared)]
    ps += [Principle(text=f"{writer} avoids op{j} at edge{j}", position=f"edge{j}",
                     choice=f"{writer}-op{j}", direction="avoid", confidence=0.4) for j in range(n_own)]
    return ps
def write_round(store, writer, r, n_shared, n_own):
    store.remember(build(writer, n_shared, n_own), TASK, Outcome(best_metric=90.0 + r, evaluations=10),
                   run_id=f"{writer}-{r}", data_tasks=["cifar10"])
"""
WRITER = WRITER_LIB + """
import sys
from archlore.memory.store import open_store
path, writer, n_shared, n_own, rounds = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
store = open_store(path, embedding="hash")
for r in range(rounds):
    write_round(store, writer, r, n_shared, n_own)
    print("round", r, flush=True)
"""


# --------------------------------------------------------------------------- embeddings


def test_hash_embedding_is_deterministic_normalised_and_word_sensitive():
    ef = HashEmbedding()
    a, b, c, empty = ef(["prefer nor_conv_3x3 on edge1", "prefer nor_conv_3x3 on edge1",
                         "avoid pooling everywhere", ""])
    assert a.shape == (256,) and np.allclose(a, b)
    assert np.isclose(np.linalg.norm(a), 1.0) and np.isclose(np.linalg.norm(empty), 1.0)
    assert float(a @ c) < 0.3 < float(a @ ef(["prefer conv 3x3 on edge 1"])[0])
    assert ef.name() == "archlore-hash-256" and HashEmbedding(64).name() == "archlore-hash-64"


def test_minilm_is_named_without_loading_the_model(tmp_path: Path):
    assert MiniLMEmbedding.name() == "all-MiniLM-L6-v2" and MiniLMEmbedding().dimension == 384
    res = _py(
        "import sys; from archlore.memory import embeddings as e; from archlore.memory.store import open_store;"
        "s = open_store(sys.argv[1], embedding='minilm'); print(s.count(), e._model is None,"
        " 'sentence_transformers' in sys.modules)",
        str(tmp_path / "m"),
    )
    assert res.stdout.split() == ["0", "True", "False"]


# --------------------------------------------------------------------------- recall


@pytest.mark.slow
def test_recall_with_minilm_finds_the_most_similar_task(mem: Path):
    with open_store(mem, embedding="minilm") as s:
        _fill(s)
        target = "classify small 32x32 colour images into 100 fine-grained object categories"
        got = s.recall("nb201", target, k=4)
        assert [r.task.task for r in got[:2]] == ["cifar10", "cifar10"]
        assert {r.task.task for r in got[2:4]} == {"ImageNet16-120"}
        assert all(r.task.space == "nb201" for r in got)
        assert got[0].similarity > 0.6 > s.recall("nb201", target, k=10)[-1].similarity
        hits = s.query("which convolution works on the first edge", space="nb201", k=3)
        assert len(hits) == 3 and all(0.0 < h["similarity"] <= 1.0 for h in hits)


def test_recall_ranks_the_similar_task_among_distractors(store):
    _fill(store)
    got = store.recall("nb201", "image classification of 32x32 colour photos into 100 classes", k=4)
    assert [r.task.task for r in got[:2]] == ["cifar10", "cifar10"]
    assert got[0].principle.direction == "prefer"  # higher confidence wins within a task
    assert got[0].score > got[1].score > got[-1].score
    assert all(r.task.space == "nb201" for r in got)  # tnb101 has the same text but another space
    first = got[0]
    assert first.run_ids == ("run-cifar10",) and first.outcome.best_metric == 50.0
    assert first.task.description == TASKS[("nb201", "cifar10")] and not first.conflicts
    assert first.id == principle_id("nb201", "cifar10", "edge1<-0", "cifar10-op", "prefer")


def test_recall_uses_evidence_text_and_excludes_tasks_and_runs(store):
    _fill(store)
    base = store.recall("nb201", "keyword spotting in audio", k=20)
    assert base[0].task.task == "speech"
    with_evidence = store.recall("nb201", "keyword spotting in audio", "avoid speech-bad at edge2<-1", k=1)
    assert with_evidence[0].principle.choice == "speech-bad"
    assert {r.task.task for r in store.recall("nb201", "keyword spotting", exclude_tasks=["speech"])} \
        == {"cifar10", "ImageNet16-120", "segment"}
    assert not any(r.task.task == "speech" for r in store.recall("nb201", "keyword", exclude_runs=["run-speech"]))
    assert store.recall("nb999", "anything") == []


def test_excluding_a_run_recomputes_a_shared_principle_without_it(store):
    task = T("nb201", "cifar10")
    store.remember([P("e", "c", confidence=0.9, text="strong")], task, Outcome(best_metric=95.0), "leak", data_tasks=["cifar10"])
    store.remember([P("e", "c", confidence=0.5, text="weak")], task, Outcome(best_metric=90.0), "clean", data_tasks=["cifar10"])
    (r,) = store.recall("nb201", "image classification", exclude_runs=["leak"])
    assert r.run_ids == ("clean",) and r.principle.confidence == 0.5 and r.principle.text == "weak"
    assert r.outcome.best_metric == 90.0


# --------------------------------------------------------------------------- merging


def test_duplicates_from_repeated_runs_merge_and_retries_are_idempotent(store):
    task = T("nb201", "cifar10")
    (pid,) = store.remember([P("edge1<-0", "nor_conv_3x3", confidence=0.9, evidence="first")], task,
                            Outcome(best_metric=93.0, evaluations=100), "r1", data_tasks=["cifar10"])
    store.remember([P("edge1<-0", "nor_conv_3x3", confidence=0.5, evidence="second")], task,
                   Outcome(best_metric=94.0, evaluations=50), "r2", data_tasks=["cifar10"])
    before = store.get(pid)
    store.remember([P("edge1<-0", "nor_conv_3x3", confidence=0.5, evidence="second")], task,
                   Outcome(best_metric=94.0, evaluations=50), "r2", data_tasks=["cifar10"])  # a retry after a crash
    rec = store.get(pid)
    assert store.count() == 1 and rec == before
    assert rec["count"] == 2 and rec["sources"] == ["r1", "r2"]
    assert rec["confidence"] == pytest.approx(0.7) and rec["confidence_max"] == 0.9
    assert (rec["best_metric"], rec["evaluations"], rec["run_id"], rec["evidence"]) == (94.0, 50, "r2", "second")
    assert rec["encoding_version"] == ENCODING_VERSION and len(rec["contributions"]) == 2
    assert pid == principle_id("nb201", "cifar10", "edge1<-0", "nor_conv_3x3", "prefer")


def test_conflicting_principles_are_both_kept_and_flagged(store):
    task = T("nb201", "cifar10")
    store.remember([P("edge1<-0", "avg_pool_3x3", "prefer", 0.6)], task, Outcome(best_metric=91.0), "r1", data_tasks=["cifar10"])
    store.remember([P("edge1<-0", "avg_pool_3x3", "avoid", 0.7)], task, Outcome(best_metric=92.0), "r2", data_tasks=["cifar10"])
    store.remember([P("edge2<-0", "skip_connect", "prefer", 0.7)], task, Outcome(best_metric=92.0), "r2", data_tasks=["cifar10"])
    assert store.count() == 3
    got = {(r.principle.choice, r.principle.direction): r for r in store.recall("nb201", "image", k=10)}
    assert got[("avg_pool_3x3", "prefer")].conflicts and got[("avg_pool_3x3", "avoid")].conflicts
    assert got[("avg_pool_3x3", "prefer")].run_ids == ("r1",) and got[("avg_pool_3x3", "avoid")].run_ids == ("r2",)
    assert not got[("skip_connect", "prefer")].conflicts


def test_forget_by_run_id_task_and_space(store):
    task = T("nb201", "cifar10")
    a, b = store.remember([P("e1", "x"), P("e2", "y")], task, Outcome(), "r1", data_tasks=["cifar10"])
    store.remember([P("e1", "x")], task, Outcome(), "r2", data_tasks=["cifar10"])
    store.remember([P("e3", "z")], T("nb201", "speech"), Outcome(), "r3", data_tasks=["speech"])
    assert store.forget(run_id="r1", dry_run=True) == sorted([a, b]) and store.count() == 3
    assert store.forget(run_id="r1") == sorted([a, b])
    assert store.count() == 2 and store.get(a)["sources"] == ["r2"]
    with pytest.raises(PrincipleNotFound):
        store.get(b)
    assert store.list(run_id="r2")[0]["id"] == a
    assert store.forget([a]) == [a]
    assert len(store.forget(task="speech", space="nb201")) == 1 and store.count() == 0
    with pytest.raises(MemoryStoreError, match="nothing was forgotten"):
        store.forget()


def test_list_query_and_filters(store):
    _fill(store)
    assert store.count() == 10 and store.count(space="tnb101") == 2 and store.count("nb201", "speech") == 2
    assert [r["task"] for r in store.list("nb201", "segment")] == ["segment", "segment"]
    hits = store.query("avoid speech-bad", space="nb201", k=3)
    assert hits[0]["choice"] == "speech-bad" and hits[0]["similarity"] > hits[1]["similarity"]
    assert {"id", "text", "space", "task", "run_id", "similarity", "position", "choice", "direction",
            "confidence", "evidence"} <= set(hits[0])
    assert all(h["task"] == "cifar10" for h in store.query("op", task="cifar10", k=5))


# --------------------------------------------------------------------------- embedding mismatch


def test_reopening_with_another_embedding_says_how_to_fix_it(mem: Path, store):
    store.remember([P("e", "c")], T("nb201", "cifar10"), Outcome(), "r1", data_tasks=["cifar10"])
    with pytest.raises(EmbeddingMismatch) as err:
        open_store(mem, embedding="minilm")
    msg = str(err.value)
    assert "archlore-hash-256 (256-d)" in msg and "--embedding hash" in msg and "new path" in msg
    with pytest.raises(EmbeddingMismatch):
        open_store(mem, embedding=HashEmbedding(64))
    assert isinstance(err.value, ArchloreError)
    with open_store(mem, embedding="auto") as again:  # "auto" adopts what the memory was built with
        assert again.embedding_name == "archlore-hash-256" and again.count() == 1


# --------------------------------------------------------------------------- export / import


def test_export_import_round_trip_re_embeds_and_is_idempotent(tmp_path: Path, store):
    _fill(store)
    store.remember([P("edge1<-0", "cifar10-op", confidence=0.4)], T("nb201", "cifar10"),
                   Outcome(best_metric=99.0), "second-run", data_tasks=["cifar10"])
    path = tmp_path / "out" / "memory.json"
    assert store.export(path) == 10
    data = json.loads(path.read_text())
    assert data["format"] == "archlore-memory" and len(data["principles"]) == 10
    with open_store(tmp_path / "other", embedding=HashEmbedding(64)) as other:  # another model
        assert other.import_(path) == 10
        assert other.import_(path) == 10  # twice changes nothing
        mine, theirs = store.list(), other.list()
        assert [r["id"] for r in mine] == [r["id"] for r in theirs]
        for a, b in zip(mine, theirs):
            assert {k: v for k, v in a.items()} == b
        assert other.get(theirs[0]["id"])["contributions"] == store.get(mine[0]["id"])["contributions"]
        assert other.query("cifar10-op", k=1)[0]["choice"] == "cifar10-op"


def test_import_rejects_files_that_are_not_exports(tmp_path: Path, store):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MemoryFormatError, match="not JSON"):
        store.import_(bad)
    bad.write_text(json.dumps({"format": "archlore-memory", "format_version": 1,
                               "principles": [{"text": "x", "space": "s", "task": "t", "position": "p",
                                               "choice": "c", "direction": "sideways", "confidence": 1}]}))
    with pytest.raises(MemoryFormatError, match="direction"):
        store.import_(bad)
    with pytest.raises(MemoryFormatError, match="cannot read"):
        store.import_(tmp_path / "missing.json")
    assert store.count() == 0


# --------------------------------------------------------------------------- processes


def test_memory_persists_across_processes_and_open_stores_see_new_writes(mem: Path, store):
    store.remember([P("edge9", "seen-before")], T("nb201", "cifar10"), Outcome(), "parent", data_tasks=["cifar10"])
    store.query("anything", k=1)  # the parent has read the vector index before the child writes
    _py(WRITER, str(mem), "child", "4", "2", "1")
    assert store.count() == 7
    assert len(store.query("op", k=50)) == 7  # a stale in-memory index would return 1
    assert store.recall("nb201", "ten classes of small colour images", k=50)[0].run_ids
    with open_store(mem, embedding="hash") as fresh:  # and a store opened afterwards
        assert fresh.count(space="nb201", task="cifar10") == 7
        assert fresh.get(principle_id("nb201", "cifar10", "edge0", "child-op0", "avoid"))["sources"] == ["child-0"]


@pytest.mark.slow
def test_concurrent_writers_lose_no_update(mem: Path):
    open_store(mem, embedding="hash").close()
    n_shared, n_own, rounds, writers = 6, 3, 4, 3
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(mem), f"w{i}", str(n_shared), str(n_own),
                               str(rounds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(writers)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    with open_store(mem, embedding="hash") as s:
        records = s.list()
        assert len(records) == n_shared + writers * n_own == s.count()
        shared = [r for r in records if r["direction"] == "prefer"]
        expected = {f"w{i}-{r}" for i in range(writers) for r in range(rounds)}
        assert all(set(r["sources"]) == expected and r["count"] == len(expected) for r in shared)
        assert all(r["count"] == rounds for r in records if r["direction"] == "avoid")
        assert len(s.query("op", k=100)) == len(records)


@pytest.mark.slow
def test_a_writer_killed_mid_write_leaves_a_readable_memory_that_converges(mem: Path):
    open_store(mem, embedding="hash").close()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(mem), "k", "12", "4", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = -1
    try:
        while last < 3:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()[-3000:]
            last = int(line.split()[1])
        time.sleep(0.03)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    with open_store(mem, embedding="hash") as s:
        records = s.list()
        assert len(records) == 16 and len(s.query("op", k=100)) == 16
        assert all(r["count"] == len(r["sources"]) for r in records)
        ns: dict = {}
        exec(WRITER_LIB, ns)
        for r in range(last + 3):  # redo every round that may have started; done ones are no-ops
            ns["write_round"](s, "k", r, 12, 4)
        assert all(set(r["sources"]) == {f"k-{i}" for i in range(last + 3)} for r in s.list())


# --------------------------------------------------------------------------- server mode


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory):
    if not CHROMA.exists():
        pytest.skip(f"no chroma CLI at {CHROMA}")
    path, port = tmp_path_factory.mktemp("chroma-server"), _free_port()
    log = open(path / "server.log", "w")
    proc = subprocess.Popen([str(CHROMA), "run", "--path", str(path / "db"), "--port", str(port),
                             "--host", "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.skip(f"`chroma run` did not start: {(path / 'server.log').read_text()[-500:]}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.mark.slow
def test_server_mode_behaves_like_a_folder(chroma_server: str, tmp_path: Path):
    with open_store(chroma_server, embedding="hash") as s:
        _fill(s)
        s.remember([P("edge1<-0", "cifar10-op", confidence=0.4)], T("nb201", "cifar10"), Outcome(), "r2",
                   data_tasks=["cifar10"])
        assert s.count() == 10
        got = s.recall("nb201", "image classification of 32x32 colour photos into 100 classes", k=2)
        assert [r.task.task for r in got] == ["cifar10", "cifar10"]
        assert s.get(got[0].id)["count"] in (1, 2)
        assert s.query("speech-bad", k=1)[0]["task"] == "speech"
        assert s.export(tmp_path / "server.json") == 10
    _py(WRITER, chroma_server, "remote", "2", "1", "1")  # a second client on the same server
    with open_store(chroma_server, embedding="hash") as s:
        assert s.count() == 13
    with pytest.raises(EmbeddingMismatch, match="--embedding hash"):
        open_store(chroma_server, embedding=HashEmbedding(32))


def test_unreachable_server_is_one_clear_error():
    with pytest.raises(ArchloreError, match="cannot reach the Chroma server"):
        open_store(f"http://127.0.0.1:{_free_port()}", embedding="hash")


# --------------------------------------------------------------------------- locations and CLI


def test_default_location_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("ARCHLORE_MEMORY", str(tmp_path / "env"))
    assert default_location() == str(tmp_path / "env")
    monkeypatch.delenv("ARCHLORE_MEMORY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert default_location() == str(tmp_path / "xdg" / "archlore" / "memory")
    with open_store(embedding="hash") as s:  # None -> the default location
        assert Path(s.location) == Path(default_location()).resolve()


def test_cli_json_output_and_errors(mem: Path, store, tmp_path: Path):
    _fill(store)
    runner = CliRunner()
    res = runner.invoke(memory_app, ["query", "avoid speech-bad", "--space", "nb201", "--json",
                                     "--memory", str(mem), "--embedding", "hash", "-k", "3"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)
    assert len(hits) == 3 and hits[0]["choice"] == "speech-bad"
    assert {"id", "text", "space", "task", "run_id", "similarity"} <= set(hits[0])

    res = runner.invoke(memory_app, ["list", "--json", "--task", "cifar10"], env={"ARCHLORE_MEMORY": str(mem)})
    assert res.exit_code == 0 and [r["task"] for r in json.loads(res.stdout)] == ["cifar10", "cifar10"]
    pid = json.loads(res.stdout)[0]["id"]
    res = runner.invoke(memory_app, ["show", pid, "--json", "--memory", str(mem)])
    assert json.loads(res.stdout)["contributions"][0]["run_id"] == "run-cifar10"
    res = runner.invoke(memory_app, ["list", "--memory", str(mem)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "speech-bad" in res.stdout and "10 principle(s)" in res.stdout

    out = tmp_path / "e.json"
    res = runner.invoke(memory_app, ["export", str(out), "--memory", str(mem), "--json"])
    assert json.loads(res.stdout)["exported"] == 10
    res = runner.invoke(memory_app, ["forget", "--task", "speech", "--memory", str(mem)], input="n\n")
    assert res.exit_code == 1 and store.count() == 10
    res = runner.invoke(memory_app, ["forget", "--task", "speech", "--yes", "--json", "--memory", str(mem)])
    assert len(json.loads(res.stdout)["forgotten"]) == 2 and store.count() == 8
    res = runner.invoke(memory_app, ["import", str(out), "--memory", str(mem), "--json"])
    assert json.loads(res.stdout) == {"imported": 10, "total": 10, "file": str(out)}

    for args in (["list", "--memory", str(mem), "--embedding", "minilm"],
                 ["show", "p-nope", "--memory", str(mem)],
                 ["import", str(tmp_path / "missing.json"), "--memory", str(mem)]):
        res = runner.invoke(memory_app, args)
        assert res.exit_code == 2, res.output
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
        assert "Traceback" not in res.output and res.stdout == ""
