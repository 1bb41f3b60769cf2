"""``archlore memory ...``: look into the principle memory, search it, move it, prune it.

Every command takes ``--memory`` (a folder or ``http://host:port``; env ``ARCHLORE_MEMORY``),
``--embedding`` and ``--json`` (machine-readable output on stdout). Errors are one line on stderr
and a non-zero exit status.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from archlore.memory.store import PrincipleStore, default_location, open_store
from archlore.tools.errors import ArchloreError

memory_app = typer.Typer(
    help="The principle memory: list, show, query, export, import, forget.",
    no_args_is_help=True,
    add_completion=False,
)


class EmbeddingChoice(str, Enum):
    minilm = "minilm"
    hash = "hash"


MemoryOpt = Annotated[
    Optional[str],
    typer.Option(
        "--memory",
        envvar="ARCHLORE_MEMORY",
        help="Memory folder, or http://HOST:PORT of a `chroma run` server. "
        "Default: the per-user data folder.",
        show_default=False,
    ),
]
EmbeddingOpt = Annotated[
    Optional[EmbeddingChoice],
    typer.Option(
        "--embedding",
        envvar="ARCHLORE_EMBEDDING",
        help="Embedding model. Default: the one the memory was built with (minilm for a new one).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
SpaceOpt = Annotated[Optional[str], typer.Option("--space", help="Only this search space, e.g. nb201.")]
TaskOpt = Annotated[Optional[str], typer.Option("--task", help="Only this task, e.g. cifar10.")]

F = TypeVar("F", bound=Callable[..., Any])


def _errors_as_one_line(fn: F) -> F:
    """archlore's own errors become one line on stderr and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ArchloreError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _open(memory: str | None, embedding: EmbeddingChoice | None) -> PrincipleStore:
    return open_store(memory or default_location(), embedding=embedding.value if embedding else "auto")


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _fmt_metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(records: list[dict[str, Any]], *, similarity: bool = False) -> Table:
    table = Table(show_lines=False, header_style="bold")
    table.add_column("id", style="cyan", no_wrap=True)
    if similarity:
        table.add_column("sim", justify="right")
    table.add_column("space/task", no_wrap=True)
    table.add_column("effect", no_wrap=True)
    table.add_column("conf", justify="right")
    table.add_column("runs", justify="right")
    table.add_column("best", justify="right")
    table.add_column("principle")
    for r in records:
        row = [escape(r["id"])]
        if similarity:
            row.append(f"{r['similarity']:.3f}")
        effect_style = "green" if r["direction"] == "prefer" else "red"
        row += [
            escape(f"{r['space']}/{r['task']}"),
            f"[{effect_style}]{r['direction']}[/] " + escape(f"{r['choice']} @ {r['position']}"),
            f"{r['confidence']:.2f}",
            str(r["count"]),
            _fmt_metric(r["best_metric"]),
            escape(r["text"]),
        ]
        table.add_row(*row)
    return table


@memory_app.command("list")
@_errors_as_one_line
def list_(
    space: SpaceOpt = None,
    task: TaskOpt = None,
    run: Annotated[Optional[str], typer.Option("--run", help="Only principles this run stated.")] = None,
    memory: MemoryOpt = None,
    embedding: EmbeddingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the principles in memory."""
    with _open(memory, embedding) as store:
        records = store.list(space, task, run_id=run)
        where = store.location
    if as_json:
        _print_json(records)
        return
    console = Console()
    if not records:
        console.print(f"no principles in {escape(where)}")
        return
    console.print(_table(records))
    console.print(f"{len(records)} principle(s) in {escape(where)}")


@memory_app.command("show")
@_errors_as_one_line
def show(
    id: Annotated[str, typer.Argument(help="Principle id, as `list` prints it.")],
    memory: MemoryOpt = None,
    embedding: EmbeddingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one principle with every run that stated it."""
    with _open(memory, embedding) as store:
        rec = store.get(id)
    if as_json:
        _print_json(rec)
        return
    console = Console()
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    for name in ("id", "text", "space", "task", "task_description", "metric", "position", "choice",
                 "direction", "confidence", "confidence_max", "evidence", "run_id", "best_metric",
                 "evaluations", "count"):
        fields.add_row(name, escape(str(rec[name])))
    fields.add_row("created", _when(rec["created"]))
    fields.add_row("updated", _when(rec["updated"]))
    console.print(fields)
    runs = Table(title="stated by", header_style="bold")
    for col in ("run", "when", "conf", "best", "evals", "evidence"):
        runs.add_column(col)
    for c in rec["contributions"]:
        runs.add_row(escape(c["run_id"]), _when(c["created"]), f"{c['confidence']:.2f}",
                     _fmt_metric(c["best_metric"]), str(c["evaluations"]), escape(c["evidence"]))
    console.print(runs)


def _when(stamp: float | None) -> str:
    return "-" if not stamp else datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")


@memory_app.command("query")
@_errors_as_one_line
def query(
    text: Annotated[str, typer.Argument(help="What to look for, in words.")],
    space: SpaceOpt = None,
    task: TaskOpt = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="How many principles to show.")] = 5,
    memory: MemoryOpt = None,
    embedding: EmbeddingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find the principles closest in meaning to TEXT."""
    with _open(memory, embedding) as store:
        records = store.query(text, space=space, task=task, k=k)
    if as_json:
        _print_json(records)
        return
    console = Console()
    if not records:
        console.print("no principles match")
        return
    console.print(_table(records, similarity=True))


@memory_app.command("export")
@_errors_as_one_line
def export(
    file: Annotated[Path, typer.Argument(help="JSON file to write.")],
    memory: MemoryOpt = None,
    embedding: EmbeddingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write every principle to a JSON file (portable: no embeddings inside)."""
    with _open(memory, embedding) as store:
        n = store.export(file)
    if as_json:
        _print_json({"exported": n, "file": str(file)})
    else:
        typer.echo(f"exported {n} principle(s) to {file}")


@memory_app.command("import")
@_errors_as_one_line
def import_(
    file: Annotated[Path, typer.Argument(help="JSON file made by `archlore memory export`.")],
    memory: MemoryOpt = None,
    embedding: EmbeddingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Merge an exported JSON file into the memory (re-embedding its texts)."""
    with _open(memory, embedding) as store:
        n = store.import_(file)
        total = store.count()
    if as_json:
        _print_json({"imported": n, "total": total, "file": str(file)})
    else:
        typer.echo(f"imported {n} principle(s) from {file}; the memory holds {total}")


@memory_app.command("forget")
@_errors_as_one_line
def forget(
    ids: Annotated[Optional[list[str]], typer.Option("--id", help="A principle id (repeatable).")] = None,
    run: Annotated[Optional[str], typer.Option("--run", help="Forget what this run stated.")] = None,
    task: TaskOpt = None,
    space: SpaceOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    memory: MemoryOpt = None,
    embedding: EmbeddingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove principles by id, run, task or space (filters combine)."""
    with _open(memory, embedding) as store:
        matched = store.forget(ids, run_id=run, task=task, space=space, dry_run=True)
        if not matched:
            if as_json:
                _print_json({"forgotten": []})
            else:
                typer.echo("nothing matched; nothing was forgotten")
            return
        if not yes:
            what = f"{len(matched)} principle(s)" + (f" (only run {run}'s part of each)" if run else "")
            if not typer.confirm(f"forget {what} in {store.location}?", err=True):
                typer.echo("nothing was forgotten", err=True)
                raise typer.Exit(1)
        done = store.forget(ids, run_id=run, task=task, space=space)
    if as_json:
        _print_json({"forgotten": done})
    else:
        typer.echo(f"forgot {len(done)} principle(s)")
