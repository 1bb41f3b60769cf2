"""A user's own space, as a new user meets it: a YAML file and a partial CSV of results.

The space: 5 layers x 3 block types (243 cells); the table has rows for about half of them, the
arch column mixes choice names, JSON lists and digit strings, the metric is an error (lower is
better) and params / flops are costs. Everything runs through the CLI.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from archlore.agents.cli import _evidence_label, app
from archlore.agents.context import RunSettings
from archlore.tools.spaces import load_space_file
from archlore.tools.tables import load_user_csv
from typer.testing import CliRunner

BLOCKS = ("identity", "mb_k3_e3", "mb_k5_e6")
LAYERS = 5
SPACE_YAML = """name: tinymacro
description: five layers of identity or MobileNet blocks
positions:
{positions}columns:
  error: min
  params: cost
  flops: cost
  notes: ignore
"""


def _cell_numbers(arch: tuple[int, ...]) -> tuple[float, float, float]:
    """A made-up but structured world: big blocks help (less error) and cost more."""
    gain = sum((0.0, 1.0, 1.6)[c] * (1.0 + 0.1 * j) for j, c in enumerate(arch))
    params = 100_000 + sum((0, 150_000, 400_000)[c] for c in arch)
    flops = 5e6 + sum((0.0, 6e6, 14e6)[c] * (1 + (j == 0)) for j, c in enumerate(arch))
    return 30.0 - 2.5 * gain, float(params), flops


@pytest.fixture
def user_space(tmp_path: Path) -> tuple[Path, Path, dict[tuple[int, ...], tuple[float, float, float]]]:
    space = tmp_path / "my_blocks.yaml"  # the file's name differs from the space's `name:`
    space.write_text(SPACE_YAML.format(positions="".join(f"  layer{i}: [{', '.join(BLOCKS)}]\n" for i in range(LAYERS))))
    rng = np.random.default_rng(0)
    rows = {}
    table = tmp_path / "results.csv"
    with table.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arch", "error", "params", "flops", "notes"])
        for i in range(3 ** LAYERS):
            arch = tuple(int(d) for d in np.base_repr(i, 3).zfill(LAYERS))
            if rng.random() < 0.5:
                continue  # a partial table: about half the combinations have a row
            rows[arch] = _cell_numbers(arch)
            names = [BLOCKS[c] for c in arch]
            form = len(rows) % 3
            text = "-".join(names) if form == 0 else json.dumps(names) if form == 1 else "".join(map(str, arch))
            w.writerow([text, *rows[arch], "free text"])
    return space, table, rows


def _run(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    return res.exit_code, res.output


def _record(runs: Path, run_id: str) -> dict:
    return json.loads((runs / run_id / "record.json").read_text())


def test_table_reads_every_arch_form_roles_and_directions(user_space):
    space_file, table_file, rows = user_space
    space = load_space_file(space_file)
    assert space.name == "tinymacro" and space.columns["error"] == "min"
    table = load_user_csv(table_file, space)
    assert table.tasks == ("error",) and set(table.cost) == {"params", "flops"}  # notes ignored
    assert table.n_known("error") == len(rows)
    arch, (err, params, flops) = next(iter(rows.items()))
    i = space.index(arch)
    # stored negated (searches maximise), shown as the user's own number
    assert table.valid["error"][i] == -err and table.user_value("error", table.valid["error"][i]) == err
    assert table.cost["params"][i] == params and table.cost["flops"][i] == flops


def test_run_with_defaults_partial_table_lower_is_better_and_cost_limit(user_space, tmp_path):
    space_file, table_file, rows = user_space
    runs, mem = tmp_path / "runs", tmp_path / "mem"
    limit = 900_000
    code, out = _run(["run", "--space", str(space_file), "--table", str(table_file), "--budget", "30", "--llm", "none",
                      "--memory", str(mem), "--embedding", "hash", "--runs-dir", str(runs), "-q",
                      "--max", "params=0.9M"])
    assert code == 0, out
    run_id = next(runs.iterdir()).name
    assert run_id.startswith("tinymacro-error-")  # one name: the space's, not the file's
    rec = _record(runs, run_id)
    assert rec["space"] == "tinymacro" and rec["target"] == "error" and rec["source"] is None
    assert rec["direction"] == "min" and rec["limits"] == {"params": limit}
    space = load_space_file(space_file)
    evaluated = [space.from_string(e["arch"]) for e in rec["evaluations"]]
    assert len(evaluated) == 30 and all(a in rows for a in evaluated)  # only rows that exist
    assert all(rows[a][1] <= limit for a in evaluated)  # never over the limit
    for a, e in zip(evaluated, rec["evaluations"]):
        assert e["valid"] == pytest.approx(rows[a][0])  # the user's own numbers
    assert rec["best"]["valid"] == pytest.approx(min(rows[a][0] for a in evaluated))
    # adaptive, recorded defaults: 3 choices per position -> keep 2, so the filter narrows
    assert rec["settings"]["max_choices"] == 2 and "max_choices" in rec["defaults"]
    assert min(f["size"] for f in rec["filters"]) < 3 ** LAYERS
    code, shown = _run(["show", run_id, "--runs-dir", str(runs)])
    assert code == 0 and "lower is better" in shown and "params <= 900K" in shown
    assert "defaults:" in shown and "none (no" in shown
    # round 0 had neither a source nor recalled principles: its label says so
    assert _evidence_label(rec["principles_history"][0], rec) == "none (no source table, nothing recalled)"
    # the memory knows the space by the same name, whether asked by name or by file
    for space_arg in ("tinymacro", str(space_file)):
        code, found = _run(["memory", "query", "identity", "--space", space_arg, "--memory", str(mem),
                            "--embedding", "hash", "--json"])
        assert code == 0 and json.loads(found), found


def test_budget_capped_at_feasible_rows_and_the_tasks_are_named(user_space, tmp_path):
    space_file, table_file, _rows = user_space
    code, out = _run(["run", "--space", str(space_file), "--table", str(table_file), "--target", "error",
                      "--source", "error", "--runs-dir", str(tmp_path / "r")])
    assert code == 2 and "--source none" in out
    code, out = _run(["run", "--space", str(space_file), "--table", str(table_file), "--max", "params=1G=2",
                      "--runs-dir", str(tmp_path / "r")])
    assert code == 2 and "NAME=VALUE" in out
    code, out = _run(["run", "--space", str(space_file), "--table", str(table_file), "--max", "latency=3",
                      "--runs-dir", str(tmp_path / "r")])
    assert code == 2 and "no cost 'latency'" in out


def test_same_task_recall_on_by_default_off_on_request(user_space, tmp_path):
    space_file, table_file, _ = user_space
    runs, mem = tmp_path / "runs", tmp_path / "mem"
    base = ["run", "--space", str(space_file), "--table", str(table_file), "--budget", "20", "--llm", "none",
            "--memory", str(mem), "--embedding", "hash", "--runs-dir", str(runs), "-q"]
    assert _run([*base, "--run-id", "first"])[0] == 0
    assert _run([*base, "--run-id", "again", "--seed", "1"])[0] == 0
    again = _record(runs, "again")
    assert again["recalled"] and all("error" in r["data_tasks"] for r in again["recalled"])
    assert {r["run_id"] for r in again["recalled"]} == {"first"}
    assert _run([*base, "--run-id", "bench-like", "--seed", "2", "--no-recall-same-task"])[0] == 0
    assert _record(runs, "bench-like")["recalled"] == []
    # settings built in code, as the benchmark harness builds them, keep excluding the target's data
    from archlore.agents.runner import execute
    from archlore.memory.store import open_store

    settings = RunSettings(run_id="harness", space=str(space_file), table=str(table_file), target="error", source=None,
                           budget=10, memory="off", remember=False)
    assert settings.recall_same_task is False
    with open_store(mem, embedding="hash") as store:
        assert execute(settings, memory=store, use_llm_spec=False)["recalled"] == []


def test_builtin_schedule_whatever_the_spelling():
    for name in ("nb201", "NB201", "NAS-Bench-201"):
        s = RunSettings(run_id="x", space=name)
        assert (s.warmup, s.check_every, s.top_k, s.max_choices) == (5, 5, 5, 2)
    assert RunSettings(run_id="x", space="TNB101", target="autoencoder", source="jigsaw").max_choices == 3


def test_known_cost_and_error_names_get_their_roles_without_a_columns_entry(tmp_path):
    space_file = tmp_path / "s.yaml"
    space_file.write_text("name: s\npositions:\n  a: [x, y]\n  b: [x, y]\n")
    table_file = tmp_path / "t.csv"
    table_file.write_text("arch,val_loss,acc,params,latency\nx-x,0.5,80,100,1.0\nx-y,0.4,82,200,2.0\ny-x,0.3,85,300,3.0\n")
    table = load_user_csv(table_file, load_space_file(space_file))
    assert table.tasks == ("val_loss", "acc") and set(table.cost) == {"params", "latency"}
    assert table.lower_is_better == {"val_loss"}
    code, out = _run(["run", "--space", str(space_file), "--table", str(table_file), "--target", "acc",
                      "--source", "params", "--runs-dir", str(tmp_path / "r")])
    assert code == 2 and "'params' is a cost column" in out and "--max params=VALUE" in out
    code, out = _run(["run", "--space", str(space_file), "--table", str(table_file), "--runs-dir", str(tmp_path / "r")])
    assert code == 2 and "val_loss, acc: pick one with --target" in out


@pytest.mark.parametrize("radix,budget,expected", [
    ((3,) * 8, 30, (6, 6, 7, 7, 3, 2)),
    ((3,) * 8, 100, (10, 10, 10, 10, 5, 2)),
    ((2, 2, 2), 12, (3, 3, 3, 3, 2, 1)),
    ((6, 6, 2), 40, (8, 8, 10, 10, 5, 3)),
])
def test_adaptive_schedule_scales_with_the_budget_and_keeps_fewer_choices(radix, budget, expected):
    from archlore.agents.context import adaptive_schedule

    sched, why = adaptive_schedule(radix, budget)
    assert sched == expected and set(why) == {"warmup", "check_every", "top_k", "population", "tournament", "max_choices"}
    assert sched[-1] < sorted(radix)[len(radix) // 2] or sched[-1] == 1
