"""`archlore bench` on a user space (YAML + CSV), and the `archlore experiment` commands."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from archlore.agents.cli_bench import bench, experiment_app

DATA = Path(os.environ.get("ARCHLORE_DATA") or Path(__file__).resolve().parents[1] / "../shared/data").resolve()
HAS_DATA = (DATA / "nb201" / "nb201_all.csv").is_file()
needs_data = pytest.mark.skipif(not HAS_DATA, reason=f"benchmark data not found at {DATA} (set ARCHLORE_DATA)")

app = typer.Typer()
app.command()(bench)
app.add_typer(experiment_app, name="experiment")  # as agents/cli.py mounts them
runner = CliRunner()


def _user_space(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray], list[str]]:
    """A 4-position space (5 x 4 x 3 x 4 = 240 cells) with two correlated tasks and a test column."""
    positions = {"depth": ["1", "2", "3", "4", "5"], "width": ["8", "16", "32", "64"], "act": ["relu", "gelu", "tanh"],
                 "norm": ["none", "batch", "layer", "group"]}
    (tmp_path / "space.yaml").write_text(
        "name: toynet\npositions:\n" + "".join(f"  {k}: [{', '.join(v)}]\n" for k, v in positions.items()))
    rng = np.random.default_rng(7)
    digits = []
    cols: dict[str, list[float]] = {"colA": [], "colB": [], "colB_test": []}
    for d in range(5):
        for w in range(4):
            for a in range(3):
                for n in range(4):
                    base = 0.8 * d + 0.6 * w - 0.4 * abs(a - 1) + 0.3 * (n == 1)
                    digits.append(f"{d}{w}{a}{n}")
                    cols["colA"].append(base + rng.normal(0, 0.4))
                    b = base + rng.normal(0, 0.4)
                    cols["colB"].append(b)
                    cols["colB_test"].append(b + rng.normal(0, 0.2))
    with (tmp_path / "results.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arch", *cols])
        for i, dg in enumerate(digits):
            w.writerow([dg, *(f"{cols[c][i]:.6f}" for c in cols)])
    return tmp_path / "space.yaml", tmp_path / "results.csv", {k: np.array(v) for k, v in cols.items()}, digits


def test_bench_runs_on_a_user_space_with_baselines_and_the_agent(tmp_path):
    space, table, cols, digits = _user_space(tmp_path)
    out = tmp_path / "out" / "toy.json"
    res = runner.invoke(app, [
        "bench", "--space", str(space), "--table", str(table), "--source", "colA", "--target", "colB",
        "--strategy", "rea", "--strategy", "copy-top", "--strategy", "freq-prior-unpadded", "--strategy", "agent",
        "--llm", "none", "--seeds", "3", "--split", "heldout", "--budget", "16", "--out", str(out),
    ])
    assert res.exit_code == 0, res.output
    payload = json.loads(out.read_text())
    assert payload["protocol"] == "custom" and payload["settings"]["budget"] == 16
    assert [(r["strategy"], r["source"]) for r in payload["rows"]] == [
        ("rea", None), ("copy-top", "colA"), ("freq-prior-unpadded", "colA"), ("agent", "colA")]
    # copy-top walks colA's ranking: compute its evaluations to colB's top-5 by hand
    order = np.argsort(-cols["colA"], kind="stable")
    thr = np.sort(cols["colB"])[-5]
    first = next(i + 1 for i, c in enumerate(order) if cols["colB"][c] >= thr)
    copy = next(r for r in payload["rows"] if r["strategy"] == "copy-top")
    assert copy["per_seed"]["evals_to_top5"] == [float(min(first, 16))] * 3
    best16 = int(order[np.argmax(cols["colB"][order[:16]])])
    assert copy["per_seed"]["test_regret@16"][0] == pytest.approx(cols["colB_test"].max() - cols["colB_test"][best16], abs=1e-5)
    # the agent meets the strongest baseline on the protocol's comparison metrics
    comps = [c for c in payload["comparisons"] if c["strategy"] == "agent"]
    assert {c["metric"] for c in comps} == {"evals_to_top5", "valid_regret@16"}
    md = out.with_suffix(".md").read_text()
    assert "seeds 1000..1002 (held-out split" in md and "strongest baseline" in md
    assert out.with_suffix(".png").stat().st_size > 0


def test_bench_user_space_errors_are_one_line(tmp_path):
    space, table, _, _ = _user_space(tmp_path)
    res = runner.invoke(app, ["bench", "--table", str(table), "--target", "colB", "--strategy", "rea", "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "--table needs --space" in res.output
    res = runner.invoke(app, ["bench", "--space", str(space), "--table", str(table), "--target", "colC",
                              "--strategy", "rea", "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "unknown target 'colC'" in res.output
    res = runner.invoke(app, ["bench", "--space", str(space), "--table", str(table), "--target", "colB",
                              "--strategy", "rea", "--seeds", "200", "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "leave the dev split" in res.output


@needs_data
def test_bench_split_and_seed_start_reach_the_output(tmp_path):
    out = tmp_path / "nb.json"
    res = runner.invoke(app, ["bench", "--protocol", "lapt-nb201", "--strategy", "copy-top", "--target", "cifar100",
                              "--source", "cifar10", "--seeds", "2", "--split", "heldout", "--seed-start", "1500",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["settings"]["seeds"] == {"split": "heldout", "first": 1500, "count": 2}
    assert "seeds 1500..1501 (held-out split" in res.output


@needs_data
def test_experiment_transfer_runs_and_records_provenance(tmp_path):
    out = tmp_path / "transfer.json"
    res = runner.invoke(app, ["experiment", "transfer", "--space", "nb201", "--seeds", "2", "--fill-seeds", "1",
                              "--fill-budget", "20", "--embedding", "hash", "--out", str(out)])
    assert res.exit_code == 0, res.output
    payload = json.loads(out.read_text())
    # the memory was filled from cifar10 alone, and its provenance says so
    assert payload["memory_data_tasks"] == ["cifar10"] and payload["fill_seeds"]["split"] == "fill"
    assert {(r["target"], r["condition"]) for r in payload["rows"]} == {
        (t, c) for t in ("cifar100", "imagenet16-120")
        for c in ("memory", "no memory", "source cifar10 + memory", "source cifar10")}
    for r in payload["rows"]:
        assert len(r["per_seed"]["evals_to_top01"]) == 2
        assert bool(r["recalled_tasks"]) == ("memory" in r["condition"] and "no memory" not in r["condition"])
    # memory against no memory, alone and on top of the source table, paired over the same seeds
    assert {(c["target"], c["with"], c["without"]) for c in payload["comparisons"]} == {
        (t, w, wo) for t in ("cifar100", "imagenet16-120")
        for w, wo in (("memory", "no memory"), ("source cifar10 + memory", "source cifar10"))}
    rows = {(r["target"], r["condition"]): r for r in payload["rows"]}
    for c in payload["comparisons"]:
        if c["metric"] == "evals_to_top01":
            a = rows[(c["target"], c["with"])]["per_seed"]["evals_to_top01"]
            b = rows[(c["target"], c["without"])]["per_seed"]["evals_to_top01"]
            assert c["diff"] == pytest.approx(sum(a) / 2 - sum(b) / 2, abs=1e-4)
    md = out.with_suffix(".md").read_text()
    assert "provenance: cifar10" in md and "paired over the same seeds" in md


@pytest.mark.slow
def test_experiment_digits_spread_trains_cells(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "spread.json"
    res = runner.invoke(app, ["experiment", "digits-spread", "--cells", "1", "--epochs", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert [r["kind"] for r in result["rows"]] == ["all-pool", "all-none", "all-conv3x3", "random"]
    none = next(r for r in result["rows"] if r["kind"] == "all-none")
    assert not none["reaches_output"] and none["valid"] < 20  # no path from input to output: chance level
