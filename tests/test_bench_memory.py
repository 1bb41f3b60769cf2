"""A benchmark refuses a memory that saw a target's data (by its provenance), unless told otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from archlore.agents.cli_bench import bench, experiment_app
from archlore.benchmarks.harness import run_bench
from archlore.benchmarks.strategies_agent import check_memory
from archlore.memory.record import Outcome, Principle, TaskInfo
from archlore.memory.store import open_store
from archlore.tools.errors import ConfigError

DATA = Path(os.environ.get("ARCHLORE_DATA") or Path(__file__).resolve().parents[1] / "../shared/data").resolve()
needs_data = pytest.mark.skipif(not (DATA / "nb201" / "nb201_all.csv").is_file(), reason=f"benchmark data not found at {DATA}")

P1 = Principle(text="3x3 convolutions on the first edge help.", position="edge1<-0", choice="nor_conv_3x3",
               direction="prefer", confidence=0.8)


def _memory(path: Path, *, task: str, data_tasks: list[str]) -> Path:
    with open_store(path, embedding="hash") as store:
        store.remember([P1], TaskInfo(space="nb201", task=task), Outcome(best_metric=70.0, evaluations=20),
                       f"run-{task}-{'-'.join(data_tasks)}", data_tasks=data_tasks)
    return path


def test_check_memory_reads_the_provenance_not_the_task_label(tmp_path):
    # stored for cifar10, but learned from cifar100's data as well: cifar100 is in its provenance
    mem = _memory(tmp_path / "m", task="cifar10", data_tasks=["cifar10", "cifar100"])
    with open_store(mem, embedding="hash") as store:
        with pytest.raises(ConfigError, match="target\\(s\\) cifar100.*--allow-target-in-memory"):
            check_memory(store, "nb201", ["cifar100"])
        check_memory(store, "nb201", ["imagenet16-120"])  # not in its provenance: fine
        check_memory(store, "nb201", ["cifar100"], allow=True)
        check_memory(store, "tnb101", ["cifar100"])  # another space's provenance is its own


@needs_data
def test_bench_refuses_before_running_and_runs_when_allowed(tmp_path):
    mem = _memory(tmp_path / "m", task="cifar10", data_tasks=["cifar100"])
    kw = dict(targets=["cifar100"], sources=["cifar10"], seeds=1, out=tmp_path / "b.json", data=str(DATA))
    with pytest.raises(ConfigError, match="cifar100"):
        run_bench("lapt-nb201", ["rea", "agent"], options={"memory": str(mem)}, **kw)
    assert not (tmp_path / "b.json").exists()  # refused before anything ran
    res = run_bench("lapt-nb201", ["agent"], options={"memory": str(mem), "allow_target_in_memory": True}, **kw)
    assert res["rows"][0]["allow_target_in_memory"] is True  # the row says it was allowed
    assert "allow_target_in_memory" in Path(res["files"]["md"]).read_text()


@needs_data
def test_bench_command_flag(tmp_path):
    mem = _memory(tmp_path / "m", task="imagenet16-120", data_tasks=["imagenet16-120", "cifar100"])
    app = typer.Typer()
    app.command()(bench)
    app.add_typer(experiment_app, name="experiment")  # as agents/cli.py mounts them
    args = ["bench", "--protocol", "lapt-nb201", "--strategy", "agent", "--target", "cifar100", "--source", "cifar10",
            "--seeds", "1", "--memory", str(mem), "--out", str(tmp_path / "c.json")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "--allow-target-in-memory" in res.output
    res = CliRunner().invoke(app, [*args, "--allow-target-in-memory"])
    assert res.exit_code == 0, res.output
