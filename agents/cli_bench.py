"""`archlore bench` (strategies x targets x sources x seeds on a protocol, any space) and
`archlore experiment ...` (the memory transfer experiment, the digits spread)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from archlore.tools.errors import ArchloreError, ConfigError

from .cli_common import console, err, fail


def _progress(message: str) -> None:
    err.print(message, highlight=False)


def bench(
    strategy: Annotated[list[str], typer.Option(help="random, rea, freq-prior, freq-prior-unpadded, copy-top, rea-seeded, agent, rank (repeatable)")],
    out: Annotated[Path, typer.Option(help="FILE.json (FILE.md and FILE.png are written beside it)")],
    protocol: Annotated[Optional[str], typer.Option(help="lapt-nb201 | lapt-tnb101 | curves | custom (default: custom with --table, else lapt-nb201)")] = None,
    target: Annotated[Optional[list[str]], typer.Option(help="target task(s) (a table column); default: the protocol's")] = None,
    source: Annotated[Optional[list[str]], typer.Option(help="source task(s) (a table column); default: the protocol's")] = None,
    seeds: Annotated[int, typer.Option(help="how many seeds per row")] = 10,
    split: Annotated[str, typer.Option(help="seed split: dev (0..99, for tuning) or heldout (1000.., for reports)")] = "dev",
    seed_start: Annotated[Optional[int], typer.Option(help="first seed (inside the split); default: the split's first")] = None,
    space: Annotated[Optional[str], typer.Option(help="a space file (.yaml/.json) with --table, or nb201/tnb101 for --protocol curves")] = None,
    table: Annotated[Optional[Path], typer.Option(help="a CSV of results for --space (an 'arch' column, one column per task)")] = None,
    budget: Annotated[Optional[int], typer.Option(help="evaluations per run for --protocol custom (default 20)")] = None,
    budgets: Annotated[Optional[list[int]], typer.Option(help="budgets for --protocol curves")] = None,
    data: Annotated[Optional[str], typer.Option(help="benchmark data dir (default $ARCHLORE_DATA, else ../shared/data)")] = None,
    llm: Annotated[Optional[str], typer.Option(help="LLM for strategy agent: none | local | openai:MODEL[@URL], a chain A>B>none, or per role: analyst=local,default=none")] = None,
    memory: Annotated[Optional[str], typer.Option(help="agent strategy: recall from a copy of the memory at PATH, read-only (default: no memory)")] = None,
    agent_strategy: Annotated[Optional[str], typer.Option(help="agent strategy: the search inside its filters, guided-rea (default), rea, random or guided-rank")] = None,
    allow_target_in_memory: Annotated[bool, typer.Option("--allow-target-in-memory", help="run even if the memory's provenance names a target (or is unknown)")] = False,
    cluster: Annotated[Optional[str], typer.Option(help="run the seeds as Ray tasks over a cluster's cores: local, auto or ray://HOST:PORT (pip install 'archlore[ray]')")] = None,
) -> None:
    """Benchmark strategies x targets x sources x seeds; writes JSON, a markdown table and a plot.

    Any space: --space my.yaml --table my.csv --source colA --target colB runs the same strategies,
    baselines, metrics and plots on a user space (protocol `custom`).
    """
    from archlore.benchmarks.harness import run_bench

    options: dict = {k: v for k, v in {"llm": llm, "memory": memory, "agent_strategy": agent_strategy}.items() if v is not None}
    if allow_target_in_memory:
        options["allow_target_in_memory"] = True
    try:
        if cluster is not None:
            from archlore.tools.distributed import check_cluster

            check_cluster(cluster)
        user_table = None
        if table is not None:
            from archlore.tools.spaces import get_space
            from archlore.tools.tables import load_user_csv

            if not space:
                raise ConfigError("--table needs --space FILE.yaml (the space its 'arch' column is written in)")
            user_table = load_user_csv(table, get_space(space))
        name = protocol or ("custom" if table is not None else "lapt-nb201")
        if name == "custom" and user_table is None:
            raise ConfigError("--protocol custom needs --space FILE.yaml and --table FILE.csv")
        payload = run_bench(
            name, strategy, targets=target, sources=source, seeds=seeds, out=out, data=data, table=user_table,
            options=options, space=space, budgets=budgets, budget=budget, split=split, seed_start=seed_start,
            progress=_progress, cluster=cluster,
        )
    except ArchloreError as exc:
        fail(exc)
    files = payload["files"]
    console.print(Path(files["md"]).read_text(), highlight=False)
    console.print(f"wrote {', '.join(files.values())}", highlight=False)


experiment_app = typer.Typer(
    help="Experiments beyond the protocols: memory transfer, the digits spread, the crash suite, memory at scale.", no_args_is_help=True,
)


@experiment_app.command("transfer")
def transfer(
    out: Annotated[Path, typer.Option(help="FILE.json (FILE.md is written beside it)")],
    space: Annotated[str, typer.Option(help="nb201 or tnb101")] = "nb201",
    seeds: Annotated[int, typer.Option(help="held-out runs per (target, condition)")] = 10,
    split: Annotated[str, typer.Option(help="seed split of the held-out runs: dev or heldout")] = "dev",
    seed_start: Annotated[Optional[int], typer.Option(help="first seed (inside the split)")] = None,
    fill_seeds: Annotated[int, typer.Option(help="runs per fill task (seeds from the fill split, 500..)")] = 3,
    fill_budget: Annotated[Optional[int], typer.Option(help="budget of the fill runs (default: the protocol's)")] = None,
    data: Annotated[Optional[str], typer.Option(help="benchmark data dir")] = None,
    embedding: Annotated[str, typer.Option(help="memory embedding: minilm or hash")] = "minilm",
) -> None:
    """Fill a fresh memory from some tasks, then run held-out tasks with the memory on and off."""
    from archlore.benchmarks import protocols as P
    from archlore.benchmarks import transfer as T

    try:
        if space not in T.SETUPS:
            raise ConfigError(f"unknown --space {space!r} for the transfer experiment: use {' or '.join(T.SETUPS)}")
        payload = T.run(space, P.seed_range(seeds, split=split, start=seed_start), fill_seeds=fill_seeds,
                        data=data, embedding=embedding, fill_budget=fill_budget, progress=_progress)
    except ArchloreError as exc:
        fail(exc)
    md = T.write(payload, out)
    console.print(md.read_text(), highlight=False)
    console.print(f"wrote {out}, {md}", highlight=False)


@experiment_app.command("digits-spread")
def digits_spread(
    cells: Annotated[int, typer.Option(help="random cells to train (besides the fixed ones)")] = 20,
    seed: Annotated[int, typer.Option(help="picks the random cells and seeds training")] = 0,
    train_seed: Annotated[Optional[int], typer.Option(help="seed training apart from --seed")] = None,
    space: Annotated[str, typer.Option(help="nb201 or tnb101")] = "nb201",
    task: Annotated[str, typer.Option()] = "digits",
    epochs: Annotated[Optional[int], typer.Option(help="override the executor's default")] = None,
    channels: Annotated[Optional[int], typer.Option(help="override the executor's default")] = None,
    threads: Annotated[int, typer.Option(help="torch threads (1: fastest for these tiny nets; 0: torch's default)")] = 1,
    out: Annotated[Optional[Path], typer.Option(help="write rows and summary as JSON here")] = None,
) -> None:
    """How much the cell matters to the training executor: the spread of accuracies over cells."""
    from archlore.benchmarks import digits_spread as D

    try:
        result = D.run(cells=cells, seed=seed, train_seed=train_seed, space=space, task=task, epochs=epochs,
                       channels=channels, threads=threads or None, progress=_progress)
    except ArchloreError as exc:
        fail(exc)
    console.print(D.markdown(result["rows"], result["summary"]), highlight=False)
    if out is not None:
        D.write(result, out)
        console.print(f"wrote {out}", highlight=False)


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@experiment_app.command("crash-suite", context_settings=_PASS_THROUGH, add_help_option=False)
def crash_suite(ctx: typer.Context) -> None:
    """kill -9 runs at random moments and resume them; throw hostile options at the CLI (`--help` lists its options)."""
    from archlore.benchmarks import crash_suite as C

    raise typer.Exit(C.main(list(ctx.args)) or 0)


@experiment_app.command("memory-scale", context_settings=_PASS_THROUGH, add_help_option=False)
def memory_scale(ctx: typer.Context) -> None:
    """Import, query and recall timings of the principle memory at 10,000+ principles (`--help` lists its options)."""
    from archlore.benchmarks import memory_scale as M

    raise typer.Exit(M.main(list(ctx.args)) or 0)


@experiment_app.command("constrained", context_settings=_PASS_THROUGH, add_help_option=False)
def constrained(ctx: typer.Context) -> None:
    """NB201 under FLOPs and latency limits: random, REA and the agents, single objective and Pareto (`--help` lists its options)."""
    from archlore.benchmarks import constrained as C

    raise typer.Exit(C.main(list(ctx.args)) or 0)
