"""A user's own builder (`--model module:function`, or the space file's `model:`), good and
broken, and what a user takes home: `archlore train RUN --best` and `archlore export`.

Tiny generated data in tmp_path, tiny recipes, one torch thread, `--llm none`.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from archlore.agents.cli import app
from archlore.tools.darts import DartsSpace, parse_genotype

torch.set_num_threads(1)

# positions the built-in cnn family does not know (`pool`): only the user's builder can build them
SPACE = """name: usernet
description: a user's own network family
positions:
  width: [4, 8]
  pool: [avg, max]
"""
BUILDERS = '''
from torch import nn


def build(arch, shape, hidden=8):
    c = shape.input[0]
    width = int(arch["width"])
    pool = nn.AdaptiveAvgPool2d(1) if arch["pool"] == "avg" else nn.AdaptiveMaxPool2d(1)
    return nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), pool, nn.Flatten(),
                         nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, shape.num_classes))


def picky(arch, shape):
    if arch["width"] == "8":
        raise ValueError("width 8 is not supported here")
    return build(arch, shape)


def wrong(arch):
    return build(arch, None)


def always(arch, shape):
    raise RuntimeError("this builder is broken")
'''
RECIPE = "base: proxy\nepochs: 2\nbatch_size: 16\nlr: 0.1\n"


def images(path: Path, *, n: int = 60, classes: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, 3, 8, 8)).astype(np.float32)
    for c in range(classes):
        x[y == c, :, 2 * c : 2 * c + 3, :] += 2.0
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """tmp_path as the working folder, with data, a space, a recipe and a builder module of a
    unique name (modules stay imported between tests)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARCHLORE_TRAIN_CACHE", "off")
    monkeypatch.setenv("ARCHLORE_TRAIN_THREADS", "1")
    module = f"usernets_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(BUILDERS)
    images(tmp_path / "data.npz")
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "tiny.yaml").write_text(RECIPE)
    return tmp_path, module


def invoke(*args: str) -> object:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def ok(*args: str) -> str:
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    return res.output


RUN = ("run", "--space", "space.yaml", "--executor", "train", "--dataset", "npz:data.npz", "--recipe", "tiny.yaml",
       "--source", "none", "--llm", "none", "--memory", "off", "--runs-dir", "runs", "-q")


def record(root: Path, run_id: str) -> dict:
    return json.loads((root / "runs" / run_id / "record.json").read_text())


# -- a user's builder -----------------------------------------------------------------------------


def test_user_builder_runs_the_search(user: tuple[Path, str]) -> None:
    root, module = user
    ok(*RUN, "--model", f"{module}:build", "--budget", "4", "--run-id", "u1")
    rec = record(root, "u1")
    assert rec["used"] == 4 and rec["failed"] == [] and rec["training"]["builder"] == f"{module}:build"
    assert all(e["status"] == "ok" for e in rec["evaluations"])
    # the same builder named by the space file's model: entry, with an option
    (root / "space2.yaml").write_text(SPACE + f"model: {{builder: '{module}:build', options: {{hidden: 4}}}}\n")
    ok(*[a if a != "space.yaml" else "space2.yaml" for a in RUN], "--budget", "2", "--run-id", "u2")
    tr = record(root, "u2")["training"]
    assert tr["builder"] == f"{module}:build" and tr["model_options"] == {"hidden": 4}
    params = {e["arch"]: e["cost"]["params"] for e in record(root, "u2")["evaluations"]}
    first = {e["arch"]: e["cost"]["params"] for e in rec["evaluations"]}
    assert all(params[a] < first[a] for a in params)  # hidden=4 made the networks smaller


@pytest.mark.parametrize(("function", "said"), [
    ("wrong", "cannot take (arch, shape)"),
    ("always", "building candidate 00 failed: RuntimeError: this builder is broken"),
    ("missing", "has no attribute 'missing'"),
])
def test_a_broken_builder_is_one_clear_line_before_anything_is_created(user: tuple[Path, str], function: str, said: str) -> None:
    root, module = user
    res = invoke(*RUN, "--model", f"{module}:{function}", "--budget", "3", "--run-id", "broken")
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert text.startswith("error:") and f"{module}:{function}" in text and said in text
    assert "Traceback" not in res.output
    assert not (root / "runs" / "broken").exists()


def test_a_builder_failing_some_candidates_never_stops_the_run(user: tuple[Path, str]) -> None:
    root, module = user
    ok(*RUN, "--model", f"{module}:picky", "--budget", "4", "--run-id", "p1")
    rec = record(root, "p1")
    failed = {f["arch"]: f["reason"] for f in rec["failed"]}
    assert rec["used"] == 4 and len(failed) == 2  # every width-8 candidate, each counted against the budget
    for arch, reason in failed.items():
        assert reason == f"building candidate {arch} failed: ValueError: width 8 is not supported here"
    assert rec["best"]["arch"] not in failed and rec["training"]["final"]["arch"] == rec["best"]["arch"]
    shown = " ".join(ok("show", "p1", "--runs-dir", "runs").split())
    assert "failed candidates (2, each counted against the budget):" in shown and "width 8 is not supported here" in shown
    # --no-count-failed: a failed candidate is free, so the budget buys the two that can be built
    ok(*RUN, "--model", f"{module}:picky", "--budget", "2", "--no-count-failed", "--run-id", "p2")
    rec2 = record(root, "p2")
    assert rec2["used"] == 2 and sum(e["status"] == "ok" for e in rec2["evaluations"]) == 2


# -- train and export -----------------------------------------------------------------------------


def run_snippet(readme: Path, cwd: Path) -> str:
    code = re.search(r"```python\n(.*?)```", readme.read_text(), re.S).group(1)
    res = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-1500:]
    return res.stdout.strip()


def test_train_best_then_export(user: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    root, module = user
    ok(*RUN, "--model", f"{module}:build", "--budget", "4", "--run-id", "t")
    rec = record(root, "t")
    out = ok("train", "t", "--runs-dir", "runs", "--best", "--top", "2", "--seeds", "2", "--recipe", "tiny.yaml")
    assert "mean ± std over seeds" in out and "±" in out
    final = json.loads((root / "runs" / "t" / "final" / "final.json").read_text())
    ranked = sorted((e for e in rec["evaluations"]), key=lambda e: -e["valid"])
    assert [r["arch"] for r in final["results"]] == [e["arch"] for e in ranked[:2]]
    assert final["recipe"]["name"] == "proxy+tiny" and final["seeds"] == [0, 1]
    for r in final["results"]:
        tests = [x["test"] for x in r["runs"]]
        assert len(tests) == 2 and all(0 <= t <= 100 for t in tests)
        assert r["test_mean"] == pytest.approx(statistics.fmean(tests)) and r["test_std"] == pytest.approx(statistics.stdev(tests))
        assert all((root / "runs" / "t" / "final" / x["weights"]).is_file() for x in r["runs"])
    # export takes train's weights: the seed with the best validation accuracy
    ok("export", "t", "--runs-dir", "runs", "--best", "--out", "model")
    exp = root / "model"
    assert {p.name for p in exp.iterdir()} >= {"architecture.txt", "model.json", "recipe.yaml", "weights.pt", "README.md", f"{module}.py"}
    info = json.loads((exp / "model.json").read_text())
    top = final["results"][0]
    chosen = max(top["runs"], key=lambda x: x["valid"])
    assert info["arch"] == top["arch"] and info["seed"] == chosen["seed"] and info["test"] == chosen["test"]
    saved = torch.load(root / "runs" / "t" / "final" / chosen["weights"])
    exported = torch.load(exp / "weights.pt")
    assert saved.keys() == exported.keys() and all(torch.equal(saved[k], exported[k]) for k in saved)
    from archlore.tools.recipe import load_recipe

    assert load_recipe(exp / "recipe.yaml").hash() == final["recipe"]["hash"]
    # the README's loader works from anywhere, with the user's builder copied beside the weights
    assert run_snippet(exp / "README.md", tmp_path_factory.mktemp("elsewhere")) == "(4, 3)"
    # an earlier export is rewritten; a folder with the user's own README.md is never touched
    ok("export", "t", "--runs-dir", "runs", "--best", "--out", "model")
    mine = root / "project"
    mine.mkdir()
    (mine / "README.md").write_text("my notes\n")
    res = invoke("export", "t", "--runs-dir", "runs", "--best", "--out", "project")
    assert res.exit_code == 2 and "already holds README.md" in res.output
    assert [p.name for p in mine.iterdir()] == ["README.md"] and (mine / "README.md").read_text() == "my notes\n"


def test_export_darts_in_its_own_notation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARCHLORE_TRAIN_CACHE", "off")
    images(tmp_path / "img.npz", n=40, classes=2)
    (tmp_path / "darts.yaml").write_text("base: darts-proxy\nepochs: 1\nbatch_size: 16\nmodel: {channels: 4, layers: 3}\n")
    ok("run", "--space", "darts", "--executor", "train", "--dataset", "npz:img.npz", "--recipe", "darts.yaml",
       "--llm", "none", "--memory", "off", "--budget", "2", "--runs-dir", "runs", "-q", "--run-id", "d")
    best = record(tmp_path, "d")["best"]["arch"]
    out = ok("export", "d", "--runs-dir", "runs", "--best", "--out", "dm")
    assert "exported darts Genotype(" in " ".join(out.split())
    text = (tmp_path / "dm" / "architecture.txt").read_text().strip()
    assert text == best and text.startswith("Genotype(normal=[(")
    space = DartsSpace()
    assert space.to_string(space.from_genotype(parse_genotype(text))) == text
    assert run_snippet(tmp_path / "dm" / "README.md", tmp_path) == "(4, 2)"


def test_train_and_export_refuse_bad_input(user: tuple[Path, str]) -> None:
    res = invoke("train", "nope", "--runs-dir", "runs", "--best")
    assert res.exit_code == 2 and "no run record for 'nope'" in res.output
    res = invoke("export", "nope", "--runs-dir", "runs", "--out", "x")
    assert res.exit_code == 2 and "--best" in res.output
