"""Runs never lose a user's data: hostile run ids, cleanup of a failed start, records that never
shrink, damaged run files, bounded checkpoints, the budget cap, --resume's options and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archlore.agents.context import RunSettings
from archlore.agents.runner import KEEP_CHECKPOINTS, check_run_id, run_persistent, write_record
from archlore.tools.errors import ArchloreError, ConfigError, DataError

from .conftest import DATA, needs_data

CLI = [sys.executable, "-m", "archlore.agents.cli"]


def _settings(run_id: str, **kw) -> RunSettings:
    kw = {"target": "cifar100", "source": "cifar10", "budget": 6, "memory": "off", "data": str(DATA), **kw}
    return RunSettings(run_id=run_id, **kw)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("run_id", ["..", ".", "/tmp", "a/b", "../x", "", ".hidden", "x" * 101, "a b", "a\nb"])
def test_a_path_like_run_id_is_refused_and_nothing_is_deleted(tmp_path, run_id):
    runs = tmp_path / "work" / "runs"
    runs.mkdir(parents=True)
    (runs / "keep.txt").write_text("mine")
    (tmp_path / "work" / "also-mine.txt").write_text("mine")
    before = _tree(tmp_path)
    with pytest.raises(ConfigError, match="not allowed"):
        run_persistent(_settings(run_id, data=str(tmp_path / "missing")), root=runs)
    assert _tree(tmp_path) == before


def test_safe_run_ids_pass():
    for rid in ("nb201-cifar100-s0-20261129-101010", "A.b_c-1", "x" * 100):
        assert check_run_id(rid) == rid


@needs_data
def test_a_failed_start_removes_only_what_it_created(tmp_path):
    runs = tmp_path / "runs"
    (tmp_path / "a-file").write_text("x")
    # a folder of the same name already holds a file of the user's: it and the folder stay
    (runs / "r1").mkdir(parents=True)
    (runs / "r1" / "notes.txt").write_text("mine")
    with pytest.raises(ArchloreError):  # the memory cannot be opened: fails after the run's files exist
        run_persistent(_settings("r1", memory=str(tmp_path / "a-file"), embedding="hash"), root=runs)
    assert sorted(p.name for p in (runs / "r1").iterdir()) == ["notes.txt"]
    # a folder this call made is removed again, so the same command works once fixed
    with pytest.raises(ArchloreError):
        run_persistent(_settings("r2", data=str(tmp_path / "missing")), root=runs)
    assert not (runs / "r2").exists()


@needs_data
def test_a_failure_after_setup_leaves_no_half_run(tmp_path):
    (tmp_path / "file-not-folder").write_text("x")
    runs = tmp_path / "runs"
    with pytest.raises(ArchloreError):
        run_persistent(_settings("r", memory=str(tmp_path / "file-not-folder" / "mem"), embedding="hash"), root=runs)
    assert not (runs / "r").exists()
    rec, _ = run_persistent(_settings("r"), root=runs)  # the same id works afterwards
    assert rec["used"] == 6


@needs_data
def test_resume_with_a_lost_ledger_keeps_the_record(tmp_path):
    runs = tmp_path / "runs"
    rec, run_dir = run_persistent(_settings("done"), root=runs)
    good = (run_dir / "record.json").read_text()
    for damage in ("missing", "empty"):
        (run_dir / "ledger.db").unlink(missing_ok=True)
        for extra in ("ledger.db-wal", "ledger.db-shm"):
            (run_dir / extra).unlink(missing_ok=True)
        if damage == "empty":
            sqlite3.connect(run_dir / "ledger.db").close()
        with pytest.raises(DataError, match="ledger"):
            run_persistent(_settings("done"), root=runs, resume=True)
        assert (run_dir / "record.json").read_text() == good
        assert len(json.loads(good)["evaluations"]) == 6


def test_a_record_is_never_replaced_by_a_shorter_one(tmp_path):
    write_record(tmp_path, {"evaluations": [1, 2, 3]})
    with pytest.raises(DataError, match="kept the old record"):
        write_record(tmp_path, {"evaluations": []})
    assert json.loads((tmp_path / "record.json").read_text())["evaluations"] == [1, 2, 3]
    write_record(tmp_path, {"evaluations": [1, 2, 3, 4]})
    assert json.loads((tmp_path / "record.prev.json").read_text())["evaluations"] == [1, 2, 3]
    assert not list(tmp_path.glob("*.tmp"))


@needs_data
@pytest.mark.parametrize("which", ["checkpoints.db", "settings.json"])
def test_damaged_run_files_are_refused_without_changes(tmp_path, which):
    runs = tmp_path / "runs"
    _, run_dir = run_persistent(_settings("d"), root=runs)
    (run_dir / which).write_bytes(b"\x00garbage{")
    ledger = (run_dir / "ledger.db").read_bytes()
    p = subprocess.run(CLI + ["run", "--resume", "d", "--runs-dir", str(runs), "-q"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and which in p.stderr, p.stderr
    assert (run_dir / "ledger.db").read_bytes() == ledger


@needs_data
def test_checkpoints_stay_bounded_and_history_is_in_the_ledger(tmp_path):
    runs = tmp_path / "runs"
    rec, run_dir = run_persistent(_settings("long", budget=80), root=runs)
    with sqlite3.connect(run_dir / "checkpoints.db") as db:
        (n,) = db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()
    assert n <= KEEP_CHECKPOINTS
    rounds = 1 + (80 - 5) // 5  # warm-up 5, a check every 5
    assert [h["round"] for h in rec["principles_history"]] == list(range(rounds))
    assert [f["round"] for f in rec["filters"]] == list(range(rounds))
    # resuming a finished run rebuilds the same record from the ledger's journal
    again, _ = run_persistent(_settings("long"), root=runs, resume=True)
    assert again["principles_history"] == rec["principles_history"] and again["evaluations"] == rec["evaluations"]


@needs_data
def test_a_budget_above_the_space_is_capped(tmp_path, caplog):
    s = _settings("cap", budget=10**20)
    from archlore.agents.runner import preflight

    preflight(s)
    assert s.budget == 15625 and "capped at 15625" in caplog.text


@needs_data
def test_resume_refuses_other_options(tmp_path):
    runs = tmp_path / "runs"
    run_persistent(_settings("o"), root=runs)
    p = subprocess.run(CLI + ["run", "--resume", "o", "--budget", "9", "--runs-dir", str(runs), "-q"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "--budget" in p.stderr and p.stderr.count("\n") == 1


@needs_data
def test_ctrl_c_says_how_to_resume_and_loses_nothing(tmp_path):
    runs = tmp_path / "runs"
    args = ["run", "--run-id", "int", "--budget", "400", "--memory", "off", "--data", str(DATA), "--runs-dir", str(runs), "-q"]
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ledger = runs / "int" / "ledger.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if ledger.exists():
            try:
                with sqlite3.connect(ledger) as db:
                    if db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] >= 3:
                        break
            except sqlite3.Error:
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt landed")
    assert proc.returncode == 130, err
    assert f"archlore run --resume int --runs-dir {runs}" in err
    with sqlite3.connect(ledger) as db:
        done = db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
    assert done >= 3
    p = subprocess.run(CLI + ["run", "--resume", "int", "--runs-dir", str(runs), "-q"], capture_output=True, text=True,
                       env={**os.environ})
    assert p.returncode == 0, p.stderr
    assert len(json.loads((runs / "int" / "record.json").read_text())["evaluations"]) == 400
