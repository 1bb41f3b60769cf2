"""The agents search a user's own task with real training, end to end, through the CLI.

Everything is generated in tmp_path (a few dozen tiny images as .npz, a user YAML space, tiny
recipes); one torch thread, `--llm none`, a training cache of the test's own. Covered: a user
space trained with the cnn family; successive halving (fidelity recorded, budget exact); the
DARTS space with its principles stored in a fresh memory and recalled by the next run; a kill -9
in the middle of training and `--resume`.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from archlore.agents.cli import app
from archlore.tools.darts import DartsSpace, parse_genotype

torch.set_num_threads(1)

SPACE = """name: tinycnn
description: a small CNN family for 8x8 images
positions:
  depth: [1, 2]
  width: [4, 8]
  kernel: [3, 5]
  activation: [relu, gelu]
"""
RECIPE = "base: proxy\nepochs: 2\nbatch_size: 16\nlr: 0.1\n"
DARTS_RECIPE = "base: darts-proxy\nepochs: 1\nbatch_size: 16\nmodel: {channels: 4, layers: 3}\n"


def images(path: Path, *, n: int = 90, classes: int = 3, channels_last: bool = False, seed: int = 0) -> Path:
    """Tiny images whose class is a bright band: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, 3, 8, 8)).astype(np.float32)
    for c in range(classes):
        x[y == c, :, 2 * c : 2 * c + 3, :] += 2.0
    np.savez(path, x=x.transpose(0, 2, 3, 1) if channels_last else x, y=y)
    return path


@pytest.fixture
def task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARCHLORE_TRAIN_CACHE", str(tmp_path / "train-cache.db"))
    monkeypatch.setenv("ARCHLORE_TRAIN_THREADS", "1")
    images(tmp_path / "data.npz")
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "tiny.yaml").write_text(RECIPE)
    return tmp_path


def cli(*args: str) -> dict:
    res = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def record(root: Path, run_id: str) -> dict:
    return json.loads((root / "runs" / run_id / "record.json").read_text())


RUN = ("run", "--space", "space.yaml", "--executor", "train", "--dataset", "npz:data.npz", "--model", "cnn",
       "--source", "none", "--llm", "none", "--memory", "off", "--runs-dir", "runs", "-q")


def test_user_space_end_to_end(task: Path) -> None:
    cli(*RUN, "--budget", "6", "--recipe", "tiny.yaml", "--run-id", "mine")
    rec = record(task, "mine")
    evs = rec["evaluations"]
    assert rec["used"] == 6 and len({e["arch"] for e in evs}) == 6
    assert all(e["status"] == "ok" and 0 <= e["valid"] <= 100 and e["fidelity"] == 2 for e in evs)
    tr = rec["training"]
    assert tr["builder"] == "cnn" and tr["recipe"]["name"] == "proxy+tiny" and len(tr["recipe"]["hash"]) == 16
    assert tr["data"]["name"] == "npz:data" and tr["data"]["sizes"] == {"train": 54, "valid": 18, "test": 18}
    assert len(tr["data"]["fingerprint"]) == 24 and tr["data"]["split_seed"] == 0
    best = max(evs, key=lambda e: e["valid"])
    assert tr["final"]["valid"] == best["valid"] and tr["final"]["test"] == best["test"] is not None
    assert best["valid"] > 100 / 3  # the bands are learnable: the best beats chance
    assert rec["target"] == "npz:data" and rec["failed"] == []
    # --resume needs no recipe file: the recipe is kept in settings.json
    saved = json.loads((task / "runs" / "mine" / "settings.json").read_text())
    assert saved["recipe_spec"]["epochs"] == 2 and saved["dataset"].startswith("npz:")
    # a second run of the same candidates trains nothing again: every result comes from the cache
    cli(*RUN, "--budget", "6", "--recipe", "tiny.yaml", "--run-id", "again")
    again = record(task, "again")["evaluations"]
    assert [(e["arch"], e["valid"]) for e in again] == [(e["arch"], e["valid"]) for e in evs]
    assert all("train_seconds" in e["cost"] for e in again)
    shown = cli("show", "mine", "--runs-dir", "runs").output
    assert "training: builder cnn on npz:data (54/18/18 train/valid/test" in shown
    assert f"best: valid {best['valid']:.2f}%" in shown


def test_successive_halving_through_the_agents(task: Path) -> None:
    cli(*RUN, "--budget", "6", "--recipe", "tiny.yaml", "--fidelity", "--min-epochs", "1", "--max-epochs", "3",
        "--warmup", "3", "--check-every", "3", "--run-id", "sh")
    rec = record(task, "sh")
    evs = rec["evaluations"]
    archs = {e["arch"] for e in evs}
    assert rec["used"] == 6 and len(archs) == 6  # rungs cost nothing extra: one evaluation per architecture
    by_round: dict[int, list[dict]] = {}
    for e in evs:
        by_round.setdefault(e["round"], []).append(e)
    for rnd, rows in by_round.items():
        first = [e for e in rows if e["fidelity"] == 1]
        top = [e for e in rows if e["fidelity"] == 3]
        # eta 3: the best third (at least one) climbs; a round can be smaller than check-every when
        # its filter holds fewer new cells (then the search widens it)
        assert 1 <= len(first) <= 3 and len(top) == max(1, len(first) // 3)
        assert top[0]["arch"] == max(first, key=lambda e: e["valid"])["arch"]
    halving = [e for e in rec["events"] if e["event"] == "successive_halving"]
    assert [h["round"] for h in halving] == sorted(by_round)
    # the best is compared at the highest fidelity only, and its test accuracy is reported
    at3 = [e for e in evs if e["fidelity"] == 3]
    assert rec["best"]["arch"] == max(at3, key=lambda e: e["valid"])["arch"]
    assert rec["training"]["final"]["epochs"] == 3 and rec["training"]["fidelity"]["rungs"] == [1, 3]


def test_darts_through_the_agents_with_memory(task: Path) -> None:
    images(task / "img.npz", n=48, classes=2, channels_last=True)
    (task / "darts.yaml").write_text(DARTS_RECIPE)
    common = ("run", "--space", "darts", "--executor", "train", "--dataset", "npz:img.npz", "--recipe", "darts.yaml",
              "--llm", "none", "--budget", "3", "--warmup", "2", "--check-every", "1", "--memory", str(task / "mem"),
              "--embedding", "hash", "--runs-dir", "runs", "-q")
    cli(*common, "--run-id", "d1")
    first = record(task, "d1")
    assert first["space"] == "darts" and first["used"] == 3 and first["training"]["builder"] == "darts"
    space = DartsSpace()
    for e in first["evaluations"]:  # the ledger keys DARTS candidates by their genotype
        assert space.to_string(space.from_genotype(parse_genotype(e["arch"]))) == e["arch"]
    assert first["remembered"], "the run's principles go into the memory"
    cli(*common, "--run-id", "d2")
    second = record(task, "d2")
    assert second["recalled"] and {r["run_id"] for r in second["recalled"]} == {"d1"}
    assert all(r["principle"]["position"].startswith(("normal.", "reduce.")) for r in second["recalled"])


@pytest.mark.parametrize("fidelity", [(), ("--fidelity", "--max-epochs", "3", "--warmup", "3", "--check-every", "3")],
                         ids=["plain", "successive-halving"])
def test_kill_9_during_training_then_resume(tmp_path: Path, fidelity: tuple[str, ...]) -> None:
    """SIGKILL a real training run after two evaluations: the ledger keeps every finished one,
    --resume finishes the budget exactly, and nothing finished is trained again (with successive
    halving, the killed step resumes with the same candidates)."""
    images(tmp_path / "data.npz", n=300)
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "slow.yaml").write_text("base: proxy\nepochs: 6\nbatch_size: 8\nlr: 0.05\n")
    env = {**os.environ, "ARCHLORE_TRAIN_CACHE": "off", "ARCHLORE_TRAIN_THREADS": "1"}
    cmd = [sys.executable, "-m", "archlore.agents.cli", *RUN, "--budget", "6", "--recipe", "slow.yaml", "--run-id", "k", *fidelity]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ledger = tmp_path / "runs" / "k" / "ledger.db"

    def rows() -> list[tuple]:
        if not ledger.exists():
            return []
        try:
            with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as db:
                return db.execute("SELECT seq, arch, valid, fidelity, status FROM evaluations ORDER BY seq").fetchall()
        except sqlite3.OperationalError:
            return []

    deadline = time.monotonic() + 240
    while len(rows()) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = rows()
    assert 2 <= len(before) < 6
    res = subprocess.run([sys.executable, "-m", "archlore.agents.cli", "run", "--resume", "k", "--runs-dir", "runs", "-q"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-800:]
    after = rows()
    assert after[: len(before)] == before  # every finished evaluation kept, unchanged
    archs = [r[1] for r in after]
    assert len(set(archs)) == 6  # the budget exactly: nothing lost, no extra candidate
    assert len({(r[1], r[3]) for r in after}) == len(after)  # nothing trained twice
    rec = json.loads((tmp_path / "runs" / "k" / "record.json").read_text())
    assert rec["used"] == 6 and [e["arch"] for e in rec["evaluations"]] == archs
    if fidelity:  # the killed step went on with the candidates it had journaled before training
        first = next(e for e in rec["events"] if e["event"] == "successive_halving" and e["round"] == 0)
        assert {r[1] for r in before} <= set(first["rungs"][0]["evaluated"])
        assert len(first["rungs"][0]["evaluated"]) == 3 and len(first["rungs"][-1]["evaluated"]) == 1
    else:
        assert len(after) == 6
