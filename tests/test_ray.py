"""The Ray backend on a real local cluster of 2 workers (CPU): parallel candidates, a worker killed
mid-way, failures recorded once, the driver killed and resumed; the budget exact throughout.

Skips, saying why, when Ray is not installed (pip install 'archlore[ray]').
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'archlore[ray]')")

from archlore.tools.distributed import (  # noqa: E402
    RayExecutor,
    connect,
    shutdown,
    worker_pids,
)
from archlore.tools.errors import BudgetExhausted  # noqa: E402
from archlore.tools.evaluator import Evaluator  # noqa: E402
from archlore.tools.ledger import Ledger  # noqa: E402
from archlore.tools.spaces import NB201Space  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ARCHLORE_DATA") or ROOT.parent / "shared" / "data")
TAG = f"archlore-test-ray-{uuid.uuid4().hex[:8]}"
pytestmark = pytest.mark.slow


def _kill_tagged(tag: str = "", folder: str | None = None) -> None:
    """Ray processes a killed driver (or `ray start`) leaves behind: those with the env mark set
    below, and, since Ray's agents overwrite their environment with their title, those with a
    file open under `folder` (the RAY_TMPDIR their cluster was started with)."""
    mark = f"ARCHLORE_TEST_TAG={tag or TAG}\0".encode()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as fh:
                mine = mark in fh.read()
            if not mine and folder:
                mine = any(os.readlink(f"/proc/{d}/fd/{fd}").startswith(folder) for fd in os.listdir(f"/proc/{d}/fd"))
            if mine:
                os.kill(int(d), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


@pytest.fixture(scope="module")
def cluster():
    os.environ["ARCHLORE_TEST_TAG"] = TAG  # inherited by every Ray process this module starts
    connect("local", num_cpus=2, object_store_mb=100)
    yield
    shutdown()
    _kill_tagged()


def _trainer(**kw):
    from archlore.tools.training import TrainingExecutor

    return TrainingExecutor(NB201Space(), "digits", recipe="proxy", epochs=kw.pop("epochs", 2), seed=0, threads=1, **kw)


def _distinct(space, n, seed=0):
    rng = np.random.default_rng(seed)
    out: list = []
    while len(out) < n:
        a = space.sample(rng)
        if a not in out:
            out.append(a)
    return out


def test_a_worker_killed_mid_way_loses_nothing_and_the_budget_is_exact(cluster):
    space = NB201Space()
    ex = RayExecutor(_trainer(), cluster="local")
    assert ex.parallelism == 2
    ev = Evaluator(ex, Ledger(None), "r", budget=5)
    archs = _distinct(space, 7)
    killed: list[int] = []

    def kill_one(_e) -> None:
        deadline = time.time() + 5
        while not killed and time.time() < deadline:  # the next candidate may take a moment to start
            busy = worker_pids()
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
                return
            time.sleep(0.05)

    with pytest.raises(BudgetExhausted):  # 7 new candidates, 5 evaluations left: refused, nothing run
        ev.evaluate_many(archs)
    assert ev.ledger.evaluations("r") == [] and ev.remaining == 5
    recorded: list = []

    def on_eval(e) -> None:
        recorded.append(e)
        assert len(ev.ledger.evaluations("r")) == len(recorded)  # in the ledger the moment it arrives
        kill_one(e)

    got = ev.evaluate_many(archs[:5] + archs[:2], proposed_by="test", on_eval=on_eval)
    assert killed, "no worker was running a candidate to kill"
    rows = ev.ledger.evaluations("r")
    assert len(recorded) == len(rows) == 5 and ev.remaining == 0  # the budget, exactly
    assert [e.arch for e in got] == [space.to_string(a) for a in archs[:5] + archs[:2]]  # in the order asked
    assert sorted(e.arch for e in rows) == sorted(space.to_string(a) for a in archs[:5])  # each once
    assert all(e.ok for e in rows) and [e.seq for e in rows] == list(range(5))
    # a retried candidate's result is the one a local run gets (same seed, one thread)
    local = _trainer().evaluate(space.from_string(rows[-1].arch))
    assert rows[-1].valid == pytest.approx(local.valid)
    assert ev.evaluate_many(archs[:5]) == got[:5] and len(ev.ledger.evaluations("r")) == 5  # a repeat is free, never run again
    with pytest.raises(BudgetExhausted):  # a new one is over the budget
        ev.evaluate_many(archs)


def test_a_candidate_failing_for_its_own_reasons_is_recorded_once(cluster):
    space = NB201Space()
    # 100,000 channels ask a few hundred GB for the first cell: the allocation fails at once
    ex = RayExecutor(_trainer(epochs=1, model_options={"channels": 100_000}), cluster="local", max_retries=3)
    ev = Evaluator(ex, Ledger(None), "f", budget=4)
    archs = _distinct(space, 3, seed=1)
    new = ev.evaluate_many(archs)
    assert len(new) == 3 and all(not e.ok for e in new)
    assert all("memory" in e.reason.lower() for e in new), [e.reason for e in new]
    assert ev.used == 3 and ev.remaining == 1  # failed ones count, as set, and are never run again
    assert ev.evaluate_many(archs) == new and len(ev.ledger.evaluations("f")) == 3


@pytest.mark.skipif(not (DATA / "nb201").is_dir(), reason=f"no NB201 table under {DATA}")
def test_table_lookups_run_through_the_same_backend(cluster):
    from archlore.tools.executors import TabularExecutor
    from archlore.tools.tables import load_table

    table = load_table("nb201", str(DATA))
    local = TabularExecutor(table, "cifar10")
    ex = RayExecutor(local, cluster="local", num_gpus=0)
    archs = _distinct(table.space, 8, seed=2)
    got = ex.evaluate_many(archs)
    assert [m.valid for m in got] == [local.evaluate(a).valid for a in archs]


RUN = [sys.executable, "-m", "archlore.agents.cli", "run", "--space", "nb201", "--executor", "train",
       "--target", "digits", "--source", "none", "--budget", "6", "--warmup", "2", "--check-every", "2",
       "--train-epochs", "2", "--memory", "off", "--cluster", "local", "--run-id", "k9", "-q"]


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT COUNT(*) FROM evaluations WHERE run_id = 'k9'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_the_driver_killed_and_resumed_spends_the_budget_exactly(tmp_path: Path):
    import tempfile

    db = tmp_path / "team.db"
    short = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    tag = f"{TAG}-driver"  # never the module's own cluster, which this process still uses
    env = {**os.environ, "ARCHLORE_TEST_TAG": tag, "ARCHLORE_TRAIN_THREADS": "1", "ARCHLORE_TRAIN_CACHE": "off",
           "RAY_TMPDIR": short}
    cmd = [*RUN, "--storage", f"sqlite:///{db}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while _count(db) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no evaluation recorded in time"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        _kill_tagged(tag, short)
    before = _count(db)
    assert 2 <= before < 6
    resumed = subprocess.run([sys.executable, "-m", "archlore.agents.cli", "run", "--resume", "k9", "--storage",
                              f"sqlite:///{db}", "--cluster", "local", "-q"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=400)
    _kill_tagged(tag, short)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT arch, status FROM evaluations WHERE run_id = 'k9' ORDER BY seq").fetchall()
    assert len(rows) == 6 and len({a for a, _ in rows}) == 6  # every candidate once, the budget exact
    listed = subprocess.run([sys.executable, "-m", "archlore.agents.cli", "runs", "--storage", f"sqlite:///{db}", "--json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert '"status": "finished"' in listed.stdout and '"used": 6' in listed.stdout
    import shutil

    shutil.rmtree(short, ignore_errors=True)


@pytest.mark.skipif(not (DATA / "nb201").is_dir(), reason=f"no NB201 table under {DATA}")
def test_a_benchmarks_seeds_spread_over_the_cluster_with_the_same_results(cluster, tmp_path: Path):
    from archlore.benchmarks.harness import run_bench

    kw = dict(targets=["cifar100"], sources=["cifar10"], seeds=4, data=str(DATA))
    here = run_bench("lapt-nb201", ["random", "rea"], out=tmp_path / "here.json", **kw)
    there = run_bench("lapt-nb201", ["random", "rea"], out=tmp_path / "ray.json", cluster="local", **kw)
    assert [r["per_seed"] for r in here["rows"]] == [r["per_seed"] for r in there["rows"]]


JOIN = """
import sys
from archlore.tools.distributed import RayExecutor, shutdown
from archlore.tools.evaluator import Evaluator
from archlore.tools.ledger import Ledger
from archlore.tools.spaces import NB201Space
from archlore.tools.training import TrainingExecutor
import numpy as np
space = NB201Space()
ex = RayExecutor(TrainingExecutor(space, "digits", recipe="proxy", epochs=1, seed=0, threads=1), cluster=sys.argv[1])
ev = Evaluator(ex, Ledger(None), "j", budget=3)
rng = np.random.default_rng(0)
new = ev.evaluate_many([space.sample(rng) for _ in range(3)])
print(ex.parallelism, len(new), all(e.ok for e in new))
shutdown()
"""


def test_joining_a_running_cluster_by_address(tmp_path: Path):
    """`ray start --head` (what a team runs), then --cluster auto and ray://HOST:PORT join it."""
    import socket

    def free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    tag = f"{TAG}-join"
    import shutil
    import tempfile

    short = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    # the token a team shares (Ray authenticates every client of a cluster it started)
    env = {**os.environ, "ARCHLORE_TEST_TAG": tag, "RAY_TMPDIR": short, "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": uuid.uuid4().hex + uuid.uuid4().hex,
           # a ray:// client's server process starts within Ray's 30 s on an idle machine, but not
           # always on 2 cores busy with the rest of the suite ("Initialization failure from server")
           "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "180"}
    gcs, client = free(), free()
    ray_bin = Path(sys.executable).parent / "ray"
    head = subprocess.run([str(ray_bin), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
                           "--ray-client-server-port", str(client), "--num-cpus", "2", "--include-dashboard", "false",
                           "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert head.returncode == 0, head.stderr[-2000:]
        for address in ("auto", f"ray://127.0.0.1:{client}"):
            got = subprocess.run([sys.executable, "-c", JOIN, address], env={**env, "RAY_ADDRESS": f"127.0.0.1:{gcs}"},
                                 capture_output=True, text=True, timeout=300)
            assert got.returncode == 0, got.stderr[-2000:]
            assert got.stdout.split()[-3:] == ["2", "3", "True"], (address, got.stdout)
    finally:
        _kill_tagged(tag, short)
        shutil.rmtree(short, ignore_errors=True)


def test_asking_for_a_gpu_the_cluster_lacks_is_refused_at_once(cluster):
    from archlore.tools.errors import ConfigError

    if ray.cluster_resources().get("GPU", 0):
        pytest.skip("this cluster has a GPU")
    with pytest.raises(ConfigError, match="--candidate-gpus 0"):
        RayExecutor(_trainer(epochs=1), cluster="local", num_gpus=0.25)
