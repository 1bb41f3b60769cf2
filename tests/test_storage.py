"""Run storage by URL: one suite over SQLite and a real Postgres server that the tests start.

The Postgres server is a throw-away cluster (initdb + pg_ctl from Debian's `postgresql` package)
on a free loopback port in a temporary folder; the Postgres tests skip, saying why, when the
binaries or psycopg are absent.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from archlore.tools.errors import ArchloreError, ConfigError
from archlore.tools.storage import RunLocked, RunStore, parse_url, redact

ROOT = Path(__file__).resolve().parents[1]
PG_BIN = [Path(p) for p in ("/usr/lib/postgresql", "/usr/local/pgsql")]


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    for root in PG_BIN:
        for cand in sorted(root.glob("*/bin/pg_ctl"), reverse=True) if root.exists() else ():
            return cand.parent
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A real Postgres server on a free loopback port, stopped and removed after the module."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'archlore[postgres]')")
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("no Postgres server binaries (initdb, pg_ctl): apt-get install -y postgresql")
    folder = Path(tempfile.mkdtemp(prefix="archlore-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the package's user
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(folder, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = folder / "data"
    run = lambda *cmd: subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)  # noqa: E731
    init = run(str(bindir / "initdb"), "-D", str(data), "-U", "archlore", "--auth=trust", "-E", "UTF8")
    if init.returncode:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr[-300:]}")
    opts = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40"
    start = run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-o", opts, "-w", "start")
    if start.returncode:
        log = (folder / "server.log").read_text()[-300:] if (folder / "server.log").exists() else start.stderr
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"the Postgres server did not start: {log}")
    try:
        yield f"postgresql://archlore@127.0.0.1:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


_db_counter = iter(range(10**6))


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    """A fresh, empty storage of each kind (a new database per test on the shared server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'team.db'}"
    base = request.getfixturevalue("postgres_url")
    import psycopg

    name = f"t{os.getpid()}_{next(_db_counter)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + "/" + name


def test_urls_are_parsed_and_passwords_hidden():
    assert parse_url("sqlite:///runs.db") == ("sqlite", "runs.db")
    assert parse_url("sqlite:////tmp/x/runs.db") == ("sqlite", "/tmp/x/runs.db")
    assert parse_url("postgres://u:p@h:5/db") == ("postgresql", "postgresql://u:p@h:5/db")
    assert redact("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"
    with pytest.raises(ConfigError, match="sqlite:///PATH.db or postgresql://") as exc:
        parse_url("mysql://u:secret@h/db")
    assert "secret" not in str(exc.value)


def test_an_unreachable_server_is_one_clear_error():
    pytest.importorskip("psycopg")
    with pytest.raises(ArchloreError, match="cannot reach the Postgres storage") as exc:
        RunStore(f"postgresql://u:secret@127.0.0.1:{_free_port()}/db")
    assert "secret" not in str(exc.value)


def test_ledger_runs_and_records(storage_url):
    with RunStore(storage_url) as store:
        store.create_run("a", {"budget": 3, "space": "nb201", "target": "digits", "executor": "train"})
        with pytest.raises(ConfigError, match="pass --resume a"):
            store.create_run("a", {"budget": 9})
        led = store.ledger
        v = 0.1 + 1e-12  # a double survives the round trip (Postgres REAL would round it)
        ev = led.record("a", "arch-1", v, 0.5, cost={"params": 12.0}, wall_time=1.5, proposed_by="rea", round=1)
        assert ev.seq == 0 and led.get("a", "arch-1") == ev
        led.record("a", "arch-2", 0.7, None, round=2)
        assert [e.arch for e in led.evaluations("a")] == ["arch-1", "arch-2"]
        assert led.evaluations("a")[0].valid == v and led.evaluations("a")[0].cost == {"params": 12.0}
        led.write_journal("a", 1, "analyze", {"principles": [{"x": 1}], "event": [{"e": 1}, {"e": 2}]})
        led.write_journal("a", 1, "analyze", {"principles": [{"x": 2}]})  # a re-run node replaces its entries
        assert led.journal("a", "principles") == [{"x": 2}] and led.journal("a", "event") == []
        assert store.settings("a")["budget"] == 3 and store.settings("missing") is None
        store.save_record("a", {"evaluations": [1, 2]})
        with pytest.raises(ArchloreError, match="kept the old record"):
            store.save_record("a", {"evaluations": [1]})
        assert store.record("a") == {"evaluations": [1, 2]}
        store.create_run("b", {"budget": 5, "space": "nb201", "target": "cifar10", "executor": "tabular"})
        runs = {r.run_id: r for r in store.runs()}
        assert runs["a"].used == 2 and runs["a"].best == 0.7 and runs["a"].status == "finished"
        assert runs["b"].used == 0 and runs["b"].status == "running" and runs["b"].budget == 5
        assert not store.delete_run("a") and store.delete_run("b")
        assert [r.run_id for r in store.runs()] == ["a"]
    with RunStore(storage_url) as again:  # persisted, and the schema is created only once
        assert len(again.ledger.evaluations("a")) == 2


HOLD = textwrap.dedent("""
    import sys, time
    from archlore.tools.storage import RunStore
    with RunStore(sys.argv[1]) as s, s.lock("r1"):
        print("held", flush=True)
        time.sleep(120)
""")


def test_the_run_lock_is_exclusive_and_dies_with_its_holder(storage_url):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, storage_url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with RunStore(storage_url) as store:
            with pytest.raises(RunLocked, match="in use by another archlore process"):
                with store.lock("r1"):
                    pass
            with store.lock("r2"):  # another run is not blocked
                pass
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            deadline = time.time() + 20  # the server notices the dead connection
            while True:
                try:
                    with store.lock("r1"):
                        break
                except RunLocked:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()


WRITER = textwrap.dedent("""
    import sys
    from archlore.tools.storage import RunStore
    url, run_id, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with RunStore(url) as s:
        s.create_run(run_id, {"budget": n})
        for i in range(n):
            s.ledger.record(run_id, f"{run_id}-arch-{i}", i / n, None, round=i // 5)
            s.ledger.write_journal(run_id, i // 5, "search", {"event": [{"i": j} for j in range(i % 5 + 1)]})
        s.save_record(run_id, {"evaluations": list(range(n))})
""")


def test_two_concurrent_runs_lose_no_write(storage_url):
    n = 60
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, storage_url, rid, str(n)], stderr=subprocess.PIPE, text=True)
             for rid in ("alice", "bob")]
    for p in procs:
        _, errs = p.communicate(timeout=240)
        assert p.returncode == 0, errs[-2000:]
    with RunStore(storage_url) as store:
        for rid in ("alice", "bob"):
            evs = store.ledger.evaluations(rid)
            assert [e.seq for e in evs] == list(range(n))
            assert {e.arch for e in evs} == {f"{rid}-arch-{i}" for i in range(n)}
            # the last write of each round's journal wins, whole: 5 entries per full round
            assert len(store.ledger.journal(rid, "event")) == 5 * (n // 5)
            assert len(store.record(rid)["evaluations"]) == n
        assert sorted(r.run_id for r in store.runs()) == ["alice", "bob"]


AGENT = [sys.executable, "-m", "archlore.agents.cli", "run", "--space", "nb201", "--executor", "train",
         "--target", "digits", "--source", "none", "--budget", "5", "--warmup", "2", "--check-every", "2",
         "--train-epochs", "1", "--memory", "off", "-q"]


def _cli(*args: str, url: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archlore.agents.cli", *args, "--storage", url], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "ARCHLORE_TRAIN_THREADS": "1", "ARCHLORE_TRAIN_CACHE": "off"})


@pytest.mark.slow
def test_two_agent_runs_at_once_one_killed_and_resumed(storage_url, tmp_path: Path):
    """Two runs share one storage at the same time; one is killed -9 mid-way and resumed."""
    env = {**os.environ, "ARCHLORE_TRAIN_THREADS": "1", "ARCHLORE_TRAIN_CACHE": "off"}
    procs = {rid: subprocess.Popen([*AGENT, "--run-id", rid, "--storage", storage_url], cwd=tmp_path, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rid in ("alice", "bob")}
    with RunStore(storage_url) as store:
        deadline = time.time() + 240
        while len(store.ledger.evaluations("alice")) < 2:
            assert procs["alice"].poll() is None, procs["alice"].stderr.read()[-2000:]
            assert time.time() < deadline, "alice recorded no evaluation in time"
            time.sleep(0.2)
        procs["alice"].send_signal(signal.SIGKILL)
        procs["alice"].wait(timeout=30)
        _, errs = procs["bob"].communicate(timeout=300)
        assert procs["bob"].returncode == 0, errs[-2000:]
        killed_at = len(store.ledger.evaluations("alice"))
        assert 2 <= killed_at < 5
        assert {r.run_id: r.status for r in store.runs()} == {"alice": "running", "bob": "finished"}
    shown = _cli("show", "alice", url=storage_url, cwd=tmp_path)  # a killed run is shown from the ledger
    assert shown.returncode == 0 and f"{killed_at}/5 evaluations" in shown.stdout, shown.stderr
    again = _cli("run", "--run-id", "alice", "--space", "nb201", "--executor", "train", "--target", "digits",
                 "--source", "none", url=storage_url, cwd=tmp_path)
    assert again.returncode == 2 and "pass --resume alice" in again.stderr
    resumed = _cli("run", "--resume", "alice", "-q", url=storage_url, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with RunStore(storage_url) as store:
        for rid in ("alice", "bob"):
            archs = [e.arch for e in store.ledger.evaluations(rid)]
            assert len(archs) == 5 and len(set(archs)) == 5  # every candidate once, the budget exact
            assert len(store.record(rid)["evaluations"]) == 5
    listed = _cli("runs", url=storage_url, cwd=tmp_path)
    assert listed.returncode == 0 and "alice" in listed.stdout and "bob" in listed.stdout
    assert "5/5" in listed.stdout


# --------------------------------------------------------------------------- a team's Chroma server

from tests.test_memory import WRITER as MEMORY_WRITER  # noqa: E402
from tests.test_memory import chroma_server  # noqa: E402,F401 - the `chroma run` fixture

READER = """
import sys, time
from archlore.memory.store import open_store
store = open_store(sys.argv[1], embedding="hash")
counts = []
deadline = time.time() + float(sys.argv[2])
while time.time() < deadline:
    counts.append(store.count())
    store.query("prefer op1 at edge1", k=5)
    time.sleep(0.05)
print(counts[0], max(counts), len(counts), all(a <= b for a, b in zip(counts, counts[1:])))
"""


@pytest.mark.slow
def test_chroma_server_two_writers_and_a_reader_lose_nothing(chroma_server: str):
    env = {k: v for k, v in os.environ.items() if k != "ARCHLORE_MEMORY"}
    start = lambda *a: subprocess.Popen([sys.executable, "-c", *a], stdout=subprocess.PIPE,  # noqa: E731
                                        stderr=subprocess.PIPE, text=True, env=env)
    reader = start(READER, chroma_server, "25")
    writers = [start(MEMORY_WRITER, chroma_server, w, "3", "2", "4") for w in ("team-a", "team-b")]
    for p in writers:
        _, errs = p.communicate(timeout=240)
        assert p.returncode == 0, errs[-2000:]
    out, errs = reader.communicate(timeout=240)
    assert reader.returncode == 0, errs[-2000:]
    _, _, reads, monotonic = out.split()
    assert int(reads) > 10 and monotonic == "True"  # reads overlapped the writes and never went back
    from archlore.memory.store import open_store

    with open_store(chroma_server, embedding="hash") as s:
        records = [r for r in s.list() if any(src.startswith("team-") for src in r["sources"])]
        shared = [r for r in records if r["choice"].startswith("op")]
        own = [r for r in records if not r["choice"].startswith("op")]
        runs = {f"{w}-{r}" for w in ("team-a", "team-b") for r in range(4)}
        assert len(shared) == 3 and all(set(r["sources"]) == runs for r in shared), [sorted(runs - set(r["sources"])) for r in shared]  # no lost write
        assert len(own) == 4 and all(len(r["sources"]) == 4 for r in own)


# --------------------------------------------------------------------------- a chat session's runs


from tests.conftest import DATA, needs_data  # noqa: E402


@needs_data
def test_a_chat_session_runs_into_shared_storage_with_approval(storage_url, tmp_path: Path):
    """A chat session with --storage: its run is stored there, waits for approval, is approved
    and finishes; another process lists and shows it from the storage; the session reopens."""
    from archlore.agents.chat import ChatSession

    root = tmp_path / "runs"
    chat = ChatSession(root=root, data=str(DATA), memory="off", storage=storage_url)
    try:
        started = chat.reply("/run target=cifar100 budget=12")
        assert started.startswith("started run") and "wait for /approve" in started, started
        run_id = started.split()[2].rstrip(":")
        chat.runs.wait(120)
        assert "waits for approval" in chat.reply("/status")
        assert not (root / run_id).exists()  # the run is in the storage, not in a run folder
        with RunStore(storage_url) as store:
            assert {r.run_id: (r.status, r.used) for r in store.runs()} == {run_id: ("waiting", 0)}
        listed = _cli("runs", "--json", url=storage_url, cwd=tmp_path, timeout=120)
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert '"status": "waiting"' in listed.stdout and run_id in listed.stdout
        assert chat.reply("/approve").startswith("approved the round-0 filter")
        chat.runs.wait(120)
        assert chat.runs.waiting() and chat.runs.waiting()["round"] == 1  # approval still on: the next round asks
        assert chat.reply("/approve off").startswith("approval off")  # the waiting one approved, the rest as planned
        chat.runs.wait(120)
        assert f"{run_id}: done, 12/12 evaluations" in chat.reply("/status")
        assert chat.reply("/plot curve").startswith("figure:")
        sid = chat.id
    finally:
        chat.close()
    with RunStore(storage_url) as store:
        archs = [e.arch for e in store.ledger.evaluations(run_id)]
        assert len(archs) == 12 and len(set(archs)) == 12  # every candidate once, the budget exact
        assert {r.run_id: r.status for r in store.runs()} == {run_id: "finished"}
        events = {e["event"] for e in store.record(run_id)["events"]}
        assert "approved" in events
    shown = _cli("show", run_id, url=storage_url, cwd=tmp_path, timeout=120)
    assert shown.returncode == 0 and "12/12 evaluations" in shown.stdout, shown.stdout[-2000:] + shown.stderr[-2000:]
    listed = _cli("runs", "--json", url=storage_url, cwd=tmp_path, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert [(r["run_id"], r["status"], r["used"], r["budget"]) for r in json.loads(listed.stdout)] == [(run_id, "finished", 12, 12)]
    # the session reopens with its own storage (no --storage needed) and refuses another
    again = ChatSession(session_id=sid, root=root, data=str(DATA), create=False)
    try:
        assert again.storage == storage_url and f"{run_id}: done, 12/12" in again.reply("/status")
    finally:
        again.close()
    with pytest.raises(ConfigError, match="keeps its runs in"):
        ChatSession(session_id=sid, root=root, data=str(DATA), create=False, storage=f"sqlite:///{tmp_path / 'other.db'}")
