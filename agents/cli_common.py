"""Console objects and the one-line error exit shared by the `archlore` commands."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err = Console(stderr=True)


def fail(exc: Exception) -> None:
    """Print `exc` as one line on stderr and exit with status 2 (bad input, everywhere)."""
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)
