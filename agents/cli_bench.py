"""`archlore bench`: strategies x targets x sources x seeds on a benchmark protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from archlore.tools.errors import ArchloreError

from .cli_common import console, err, fail


def bench(
    protocol: Annotated[str, typer.Option(help="lapt-nb201 | lapt-tnb101 | curves")],
    strategy: Annotated[list[str], typer.Option(help="random, rea, freq-prior, agent (repeatable)")],
    out: Annotated[Path, typer.Option(help="FILE.json (FILE.md and FILE.png are written beside it)")],
    target: Annotated[Optional[list[str]], typer.Option(help="target task(s); default: the protocol's")] = None,
    source: Annotated[Optional[list[str]], typer.Option(help="source task(s); default: the protocol's")] = None,
    seeds: Annotated[int, typer.Option(help="seeds 0..N-1 per row")] = 10,
    data: Annotated[Optional[str], typer.Option(help="benchmark data dir (default $ARCHLORE_DATA, else ../shared/data)")] = None,
    llm: Annotated[Optional[str], typer.Option(help="LLM for strategy agent: none | local | openai:MODEL[@URL]")] = None,
    space: Annotated[Optional[str], typer.Option(help="space for --protocol curves: nb201 or tnb101")] = None,
    budgets: Annotated[Optional[list[int]], typer.Option(help="budgets for --protocol curves")] = None,
    memory: Annotated[Optional[str], typer.Option(help="agent strategy: recall from a copy of the memory at PATH, read-only (default: no memory)")] = None,
) -> None:
    """Benchmark strategies x targets x sources x seeds; writes JSON, a markdown table and a plot."""
    from archlore.benchmarks.harness import run_bench

    options = {k: v for k, v in {"llm": llm, "memory": memory}.items() if v is not None}
    try:
        payload = run_bench(
            protocol, strategy, targets=target, sources=source, seeds=seeds, out=out, data=data,
            options=options, space=space, budgets=budgets, progress=lambda m: err.print(m, highlight=False),
        )
    except ArchloreError as exc:
        fail(exc)
    files = payload.get("files", {})
    md = files.get("md") if isinstance(files, dict) else None
    if md and Path(md).is_file():
        console.print(Path(md).read_text(), highlight=False)
    console.print(f"wrote {', '.join(str(f) for f in (files.values() if isinstance(files, dict) else files))}", highlight=False)
