"""Pareto mode: the front against brute force, the hypervolume, and a run that returns its front."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from archlore.agents.cli import app
from archlore.tools.errors import ConfigError
from archlore.tools.pareto import (
    Objectives,
    hypervolume_2d,
    nondominated,
    parse_objectives,
    ranks,
)
from archlore.tools.spaces import load_space_file
from archlore.tools.tables import load_user_csv
from typer.testing import CliRunner


def _dominates(p: np.ndarray, q: np.ndarray) -> bool:
    return bool(np.all(p >= q) and np.any(p > q))


def _brute_front(pts: np.ndarray) -> list[int]:
    return [i for i in range(len(pts)) if not any(_dominates(pts[j], pts[i]) for j in range(len(pts)) if j != i)]


@pytest.mark.parametrize("seed", range(5))
def test_nondominated_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 8, size=(60, 2 + seed % 2)).astype(float)  # small integers: many ties
    assert list(nondominated(pts)) == _brute_front(pts)
    r = ranks(pts)
    assert set(np.flatnonzero(r == 0)) == set(_brute_front(pts))
    for i, j in itertools.permutations(range(len(pts)), 2):  # a dominated cell ranks after its dominator
        if _dominates(pts[i], pts[j]):
            assert r[i] < r[j]


def test_hypervolume_matches_a_grid_count():
    rng = np.random.default_rng(1)
    pts = rng.integers(1, 20, size=(15, 2)).astype(float)
    hv = hypervolume_2d(pts, (0.0, 0.0))
    grid = sum(1 for x in range(20) for y in range(20) if any(p[0] >= x + 1 and p[1] >= y + 1 for p in pts))
    assert hv == pytest.approx(grid)
    assert hypervolume_2d(pts, (100.0, 100.0)) == 0.0


def test_objectives_parse_and_check():
    assert parse_objectives("accuracy, flops") == ["accuracy", "flops"]
    for bad in ("accuracy", "accuracy,accuracy", ""):
        if bad:
            with pytest.raises(ConfigError):
                parse_objectives(bad)


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    space = tmp_path / "s.yaml"
    space.write_text("name: small\npositions:\n" + "".join(f"  l{i}: [a, b, c]\n" for i in range(4))
                     + "columns:\n  loss: min\n  flops: cost\n")
    table = tmp_path / "t.csv"
    rng = np.random.default_rng(3)
    with table.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arch", "loss", "flops"])
        for arch in itertools.product(range(3), repeat=4):
            w.writerow(["".join(map(str, arch)), round(5.0 - 0.4 * sum(arch) + rng.normal(0, 0.3), 4),
                        round(1e6 * (1 + sum(a * a for a in arch)) * rng.uniform(0.8, 1.2))])
    return space, table


def test_pareto_run_returns_the_front_of_its_evaluations(small, tmp_path):
    space_file, table_file = small
    runs = tmp_path / "runs"
    res = CliRunner().invoke(app, ["run", "--space", str(space_file), "--table", str(table_file), "--objective", "loss,flops",
                                   "--budget", "40", "--llm", "none", "--memory", "off", "--runs-dir", str(runs),
                                   "--run-id", "p", "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rec = json.loads((runs / "p" / "record.json").read_text())
    space = load_space_file(space_file)
    table = load_user_csv(table_file, space)
    obj = Objectives.of(table, ["loss", "flops"])
    archs = [space.from_string(e["arch"]) for e in rec["evaluations"]]
    pts = np.array([obj.values(a) for a in archs])
    brute = {rec["evaluations"][i]["arch"] for i in _brute_front(pts)}
    assert {f["arch"] for f in rec["front"]} == brute
    for f in rec["front"]:  # the user's own numbers: the loss as it is in the table, not negated
        i = space.index(space.from_string(f["arch"]))
        assert f["loss"] == pytest.approx(-table.valid["loss"][i]) and f["loss"] > 0
        assert f["flops"] == table.cost["flops"][i]
    res = CliRunner().invoke(app, ["show", "p", "--runs-dir", str(runs)])
    assert res.exit_code == 0 and "Pareto front" in res.output
    from archlore.benchmarks.plots import plot_front

    png = plot_front(rec, tmp_path / "front.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_objective_names_are_checked(small, tmp_path):
    space_file, table_file = small
    base = ["run", "--space", str(space_file), "--table", str(table_file), "--runs-dir", str(tmp_path / "r"), "-q"]
    res = CliRunner().invoke(app, [*base, "--objective", "loss,latency"])
    assert res.exit_code == 2 and "no metric or cost 'latency'" in res.output
    res = CliRunner().invoke(app, [*base, "--objective", "flops,loss"])
    assert res.exit_code == 2 and "must be the target" in res.output


def test_pareto_principles_are_stored_apart_and_recalled_by_the_next_pareto_run(small, tmp_path):
    space_file, table_file = small
    runs, mem = tmp_path / "runs", tmp_path / "mem"
    base = ["run", "--space", str(space_file), "--table", str(table_file), "--budget", "20", "--llm", "none",
            "--memory", str(mem), "--embedding", "hash", "--runs-dir", str(runs), "-q"]
    assert CliRunner().invoke(app, [*base, "--objective", "loss,flops", "--run-id", "p1"]).exit_code == 0
    assert CliRunner().invoke(app, [*base, "--run-id", "plain"]).exit_code == 0
    from archlore.memory.store import open_store

    with open_store(mem, embedding="hash") as store:
        tasks = {r["task"] for r in store.list("small")}
        assert tasks == {"loss/pareto:flops", "loss"}
        tagged = store.list("small", "loss/pareto:flops")
        assert all(r["metric"] == "pareto: loss, flops" and "loss" in r["data_tasks"] for r in tagged)
        assert any("cost:" in r["evidence"] and "flops" in r["evidence"] for r in tagged)  # the trade-off's cost
    assert CliRunner().invoke(app, [*base, "--objective", "loss,flops", "--run-id", "p2", "--seed", "1"]).exit_code == 0
    rec = json.loads((runs / "p2" / "record.json").read_text())
    assert rec["recalled"] and rec["recalled"][0]["task"] == "loss/pareto:flops"


@pytest.mark.parametrize("seed", range(4))
def test_two_objective_front_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(10 + seed)
    pts = rng.integers(0, 5, size=(80, 2)).astype(float)  # many equal first values and equal rows
    pts[:5] = pts[5]  # repeated rows: all kept when on the front
    assert list(nondominated(pts)) == _brute_front(pts)


# -- Pareto mode with trained candidates (--executor train) ---------------------------------------
TRAIN_SPACE = "name: tinynet\npositions:\n  width: [2, 4, 8]\n  hidden: [4, 16]\n  pool: [avg, max]\n"
TRAIN_BUILDER = '''
from torch import nn


def build(arch, shape):
    c, w, h = shape.input[0], int(arch["width"]), int(arch["hidden"])
    pool = nn.AdaptiveAvgPool2d(1) if arch["pool"] == "avg" else nn.AdaptiveMaxPool2d(1)
    return nn.Sequential(nn.Conv2d(c, w, 3, padding=1), nn.ReLU(), pool, nn.Flatten(),
                         nn.Linear(w, h), nn.ReLU(), nn.Linear(h, shape.num_classes))
'''


@pytest.fixture
def trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    import uuid

    import torch

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARCHLORE_TRAIN_CACHE", "off")
    monkeypatch.setenv("ARCHLORE_TRAIN_THREADS", "1")
    module = f"paretonets_{uuid.uuid4().hex[:8]}"  # modules stay imported between tests
    (tmp_path / f"{module}.py").write_text(TRAIN_BUILDER)
    (tmp_path / "space.yaml").write_text(TRAIN_SPACE)
    (tmp_path / "tiny.yaml").write_text("base: proxy\nepochs: 2\nbatch_size: 16\nlr: 0.1\n")
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = rng.normal(size=(90, 3, 6, 6)).astype(np.float32)
    for c in range(3):
        x[y == c, :, 2 * c : 2 * c + 2, :] += 2.0
    np.savez(tmp_path / "data.npz", x=x, y=y)
    return tmp_path, module


def test_pareto_run_with_trained_candidates_returns_the_front_of_its_evaluations(trained):
    root, module = trained
    base = ["run", "--space", "space.yaml", "--executor", "train", "--dataset", "npz:data.npz", "--recipe", "tiny.yaml",
            "--model", f"{module}:build", "--source", "none", "--llm", "none", "--memory", "off", "--runs-dir", "runs", "-q"]
    res = CliRunner().invoke(app, [*base, "--objective", "accuracy,flops", "--budget", "8", "--run-id", "tp"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rec = json.loads((root / "runs" / "tp" / "record.json").read_text())
    assert rec["objectives"] == ["npz:data", "flops"]  # "accuracy" is the trained target's validation accuracy
    evs = [e for e in rec["evaluations"] if e.get("valid") is not None and np.isfinite(e["valid"])]
    assert len({e["arch"] for e in evs}) == 8
    for e in evs:  # the cost is the one counted on the trained candidate (Metrics.cost), as recorded
        assert e["objectives"] == {"npz:data": e["valid"], "flops": e["cost"]["flops"]} and e["cost"]["flops"] > 0
    pts = np.array([[e["valid"], -e["cost"]["flops"]] for e in evs])
    brute = {evs[i]["arch"] for i in _brute_front(pts)}
    assert {f["arch"] for f in rec["front"]} == brute and rec["front"]
    accs = [f["npz:data"] for f in rec["front"]]
    assert accs == sorted(accs, reverse=True)
    res = CliRunner().invoke(app, ["show", "tp", "--runs-dir", "runs"])
    assert res.exit_code == 0 and "Pareto front" in res.output
    res = CliRunner().invoke(app, [*base, "--objective", "accuracy,latency", "--budget", "2", "--run-id", "bad"])
    assert res.exit_code == 2 and "counted on the built model" in res.output


def test_trained_pareto_run_under_a_limit_with_successive_halving(trained):
    root, module = trained
    res = CliRunner().invoke(app, [
        "run", "--space", "space.yaml", "--executor", "train", "--dataset", "npz:data.npz", "--recipe", "tiny.yaml",
        "--model", f"{module}:build", "--source", "none", "--llm", "none", "--memory", "off", "--runs-dir", "runs", "-q",
        "--objective", "accuracy,params", "--max", "flops=5000", "--fidelity", "--min-epochs", "1", "--max-epochs", "2",
        "--budget", "4", "--run-id", "tl"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rec = json.loads((root / "runs" / "tl" / "record.json").read_text())
    assert rec["used"] == 4 and all(e["cost"]["flops"] <= 5000 for e in rec["evaluations"])  # width 8 is over: never trained
    last = {e["arch"]: e for e in rec["evaluations"]}  # a cell's last rung is its result
    evs = list(last.values())
    pts = np.array([[e["valid"], -e["cost"]["params"]] for e in evs])
    assert {f["arch"] for f in rec["front"]} == {evs[i]["arch"] for i in _brute_front(pts)}
