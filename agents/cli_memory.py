"""``archlore memory ...``: look into the principle memory, search it, move it, prune it, migrate it.

Every command takes ``--memory`` (a folder or ``http://host:port``; env ``ARCHLORE_MEMORY``),
``--embedding`` and ``--json`` (machine-readable output on stdout). Errors are one line on stderr
and exit status 2 (bad input, as everywhere in the CLI).

``archlore`` imports this module at startup, so it imports nothing heavy itself: Chroma, NumPy and
the embedding model load inside the commands that need them, and ``archlore --help`` stays fast.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar

import typer
from archlore.memory.location import default_location
from archlore.tools.errors import ArchloreError

if TYPE_CHECKING:
    from archlore.memory.store import PrincipleStore
    from rich.table import Table

memory_app = typer.Typer(
    help="The principle memory: list, show, query, export, import, forget, migrate.",
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
    """archlore's own errors become one line on stderr and exit status 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ArchloreError as exc:
            typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _open(memory: str | None, embedding: EmbeddingChoice | None) -> PrincipleStore:
    from archlore.memory.store import open_store

    return open_store(memory or default_location(), embedding=embedding.value if embedding else "auto")


def _console() -> Any:
    from rich.console import Console

    return Console()


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _fmt_metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _from_data(tasks: list[str]) -> str:
    return "from data: " + ", ".join(tasks)


def _table(records: list[dict[str, Any]], *, similarity: bool = False) -> Table:
    from rich.table import Table

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
        row = [_esc(r["id"])]
        if similarity:
            row.append(f"{r['similarity']:.3f}")
        effect_style = "green" if r["direction"] == "prefer" else "red"
        row += [
            _esc(f"{r['space']}/{r['task']}"),
            f"[{effect_style}]{r['direction']}[/] " + _esc(f"{r['choice']} @ {r['position']}"),
            f"{r['confidence']:.2f}",
            str(r["count"]),
            _fmt_metric(r["best_metric"]),
            _esc(r["text"]) + f"\n[dim]{_esc(_from_data(r['data_tasks']))}[/]",
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
    """List the principles in memory, each with the tasks whose data produced it."""
    from archlore.memory.conflicts import find_conflicts

    with _open(memory, embedding) as store:
        records = store.list(_space_name(space), task, run_id=run)
        where = store.location
        conflicts = find_conflicts(records) if run is None else store.conflicts(_space_name(space), task)
    if as_json:
        _print_json(records)
        return
    console = _console()
    if not records:
        console.print(f"no principles in {_esc(where)}")
        return
    console.print(_table(records))
    console.print(f"{len(records)} principle(s) in {_esc(where)}")
    for c in conflicts:
        s, w = c["stronger"], c["weaker"]
        console.print(_esc(f"conflict on {s['space']}/{s['task']}: {s['direction']} {s['choice']} @ {s['position']} "
                           f"outweighs {w['direction']} it ({c['reason']}); recall hands out only the former"),
                      highlight=False)


def _space_name(space: str | None) -> str | None:
    """A space file's path names its space (the one name the runs and the memory use)."""
    if space is None or not space.endswith((".yaml", ".yml", ".json")):
        return space
    from archlore.agents.runner import space_name

    return space_name(space)


def _print_conflicts(console: Any, records: list[dict[str, Any]]) -> None:
    for r in records:
        c = r["conflict"]
        console.print(_esc(f"conflict: {r['direction']} {r['choice']} @ {r['position']} ({r['id']}) is the "
                           f"{c['status']} side against {c['opposite']} ({c['with']}): {c['reason']}"), highlight=False)


@memory_app.command("show")
@_errors_as_one_line
def show(
    id: Annotated[str, typer.Argument(help="Principle id, as `list` prints it.")],
    memory: MemoryOpt = None,
    embedding: EmbeddingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one principle with every run that stated it and where its data came from."""
    from rich.table import Table

    with _open(memory, embedding) as store:
        rec = store.get(id)
    if as_json:
        _print_json(rec)
        return
    console = _console()
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    for name in ("id", "text", "space", "task", "task_description", "metric", "position", "choice",
                 "direction", "confidence", "confidence_max", "evidence", "run_id", "best_metric",
                 "evaluations", "count"):
        fields.add_row(name, _esc(str(rec[name])))
    fields.add_row("provenance", _esc(_from_data(rec["data_tasks"])))
    fields.add_row("archlore", _esc(", ".join(rec["archlore_versions"])))
    fields.add_row("created", _when(rec["created"]))
    fields.add_row("updated", _when(rec["updated"]))
    console.print(fields)
    runs = Table(title="stated by", header_style="bold")
    for col in ("run", "when", "conf", "best", "evals", "data", "archlore", "evidence"):
        runs.add_column(col)
    for c in rec["contributions"]:
        runs.add_row(_esc(c["run_id"]), _when(c["created"]), f"{c['confidence']:.2f}",
                     _fmt_metric(c["best_metric"]), str(c["evaluations"]),
                     _esc(", ".join(c.get("data_tasks") or ["unknown"])),
                     _esc(c.get("archlore_version") or "unknown"), _esc(c["evidence"]))
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
    position: Annotated[Optional[str], typer.Option(help="Only principles about this position, e.g. layer0.")] = None,
    choice: Annotated[Optional[str], typer.Option(help="Only principles about this choice, e.g. identity.")] = None,
    direction: Annotated[Optional[str], typer.Option(help="Only prefer or only avoid principles.")] = None,
    memory: MemoryOpt = None,
    embedding: EmbeddingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find the principles closest in meaning to TEXT (filters narrow exactly before ranking)."""
    with _open(memory, embedding) as store:
        records = store.query(text, space=_space_name(space), task=task, k=k, position=position, choice=choice,
                              direction=direction)
    if as_json:
        _print_json(records)
        return
    console = _console()
    if not records:
        console.print("no principles match")
        return
    console.print(_table(records, similarity=True))
    _print_conflicts(console, [r for r in records if r.get("conflict")])


@memory_app.command("export")
@_errors_as_one_line
def export(
    file: Annotated[Path, typer.Argument(help="JSON file to write.")],
    memory: MemoryOpt = None,
    embedding: EmbeddingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write every principle, with its provenance, to a JSON file (portable: no embeddings inside)."""
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
    """Merge an exported JSON file into the memory (re-embedding its texts).

    It is written in batches; if it is interrupted, run it again: the result is the same as one
    uninterrupted import. Files from before provenance import as from unknown data.
    """
    def progress(done: int, total: int) -> None:
        if not as_json and total > 500:
            typer.echo(f"  {done}/{total}", err=True)

    with _open(memory, embedding) as store:
        n = store.import_(file, progress=progress)
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
        before = store.count()
        done = store.forget(ids, run_id=run, task=task, space=space)
        after = store.count()
    deleted = before - after
    if as_json:
        _print_json({"forgotten": done, "deleted": deleted, "changed": len(done) - deleted, "total": after})
    elif run:
        typer.echo(f"removed run {run}'s part of {len(done)} principle(s): {deleted} deleted (only that run stated "
                   f"them), {len(done) - deleted} kept with the other runs' evidence; the memory holds {after} (was {before})")
    else:
        typer.echo(f"forgot {deleted} principle(s); the memory holds {after} (was {before})")


@memory_app.command("migrate")
@_errors_as_one_line
def migrate(
    memory: MemoryOpt = None,
    embedding: EmbeddingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Bring a memory written by an older archlore up to date, in place.

    Principles stored before provenance was recorded are kept, marked as from unknown data
    (data_tasks=unknown); recall leaves them out unless it is asked to include them. Safe to run
    again; an interrupted migration is finished by running it again.
    """
    from archlore.memory.migrate import migrate_store

    report = migrate_store(memory or default_location(), embedding=embedding.value if embedding else "auto")
    if as_json:
        _print_json(report)
    elif report["from_encoding"] is None:
        typer.echo(f"no memory at {report['location']}; nothing to migrate")
    elif report["principles_migrated"] == 0:
        typer.echo(f"the memory at {report['location']} is up to date; its task index was rebuilt "
                   f"({report['tasks_indexed']} task(s))")
    else:
        typer.echo(f"migrated {report['principles_migrated']} principle(s) in {report['location']} from "
                   f"encoding {report['from_encoding']} to {report['to_encoding']}; "
                   f"{report['contributions_marked_unknown']} contribution(s) marked as from unknown data")
