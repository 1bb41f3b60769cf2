"""`archlore chat`, `archlore sessions` and `archlore ui`: chat-driven search sessions.

Imports nothing heavy at module level, so `archlore --help` stays fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from archlore.tools.errors import ArchloreError

from .cli_common import console
from .cli_common import fail as _fail

SessionOpt = Annotated[str | None, typer.Option("--session", help="resume this session (its conversation and any unfinished run); default: a new one")]
LlmOpt = Annotated[str | None, typer.Option(help="LLM of the chat and of the runs it starts: none, local, openai:MODEL or openai:MODEL@BASE_URL, or per role, e.g. coordinator=openai:MODEL,default=none (default: the session's, else none)")]
MemoryOpt = Annotated[str | None, typer.Option(help="principle memory: a path, an http:// Chroma server, or 'off' (default: the per-user store)")]
DataOpt = Annotated[str | None, typer.Option(help="benchmark data dir (default $ARCHLORE_DATA, else ../shared/data)")]
RunsOpt = Annotated[Path | None, typer.Option(help="where runs and sessions live (default $ARCHLORE_RUNS, else ./runs)")]
StorageOpt = Annotated[str | None, typer.Option(help="where the session's runs are stored: sqlite:///FILE.db or postgresql://... shared with `archlore run/runs/show --storage` (default: the session's, else $ARCHLORE_STORAGE for a new session, else run folders under --runs-dir); the session itself stays under --runs-dir")]
ApproveOpt = Annotated[bool | None, typer.Option("--approve/--no-approve", help="new runs wait for approval of each filter (default: on)")]


def _session(session: str | None, llm: str | None, memory: str | None, data: str | None, runs_dir: Path | None,
             approve: bool | None, *, create: bool = True, storage: str | None = None):
    from .chat import ChatSession

    return ChatSession(session_id=session, root=runs_dir, llm=llm, memory=memory, data=data, approve=approve,
                       create=create, storage=storage)


def chat(session: SessionOpt = None, llm: LlmOpt = None, memory: MemoryOpt = None, data: DataOpt = None,
         runs_dir: RunsOpt = None, approve: ApproveOpt = None, storage: StorageOpt = None) -> None:
    """Talk to a search: start, pause, approve, edit, explain, compare and plot runs (slash commands work with --llm none)."""
    from .tui import run_terminal

    try:
        chat_session = _session(session, llm, memory, data, runs_dir, approve, create=True, storage=storage)
    except ArchloreError as exc:
        _fail(exc)
    raise typer.Exit(run_terminal(chat_session))


def sessions(runs_dir: RunsOpt = None,
             as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False) -> None:
    """List chat sessions with their runs."""
    from rich.table import Table

    from .runner import runs_dir as default_runs
    from .sessions import SESSIONS_DB, SessionStore

    try:
        if not (default_runs(runs_dir) / SESSIONS_DB).is_file():  # listing creates nothing
            found = []
        else:
            with SessionStore(runs_dir) as store:
                found = store.list()
    except ArchloreError as exc:
        _fail(exc)
    if as_json:
        console.print_json(data=[{"id": s.id, "created": s.created, "updated": s.updated, "title": s.title,
                                  "runs": [{"run_id": r.run_id, "status": r.status} for r in s.runs]} for s in found])
        return
    if not found:
        console.print("no chat sessions yet: `archlore chat` starts one", highlight=False)
        return
    t = Table(title="chat sessions (resume one with `archlore chat --session ID`)")
    for col in ("session", "last used", "first message", "runs"):
        t.add_column(col, overflow="fold")
    for s in found:
        t.add_row(s.id, time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated)), s.title or "-",
                  "\n".join(f"{r.run_id} ({r.status})" for r in s.runs) or "-")
    console.print(t)


def ui(session: SessionOpt = None, llm: LlmOpt = None, memory: MemoryOpt = None, data: DataOpt = None,
       runs_dir: RunsOpt = None, approve: ApproveOpt = None, storage: StorageOpt = None,
       port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0: a free one, printed)")] = 0,
       show: Annotated[bool, typer.Option("--open/--no-open", help="open a browser")] = False) -> None:
    """Serve the chat as a local web page on 127.0.0.1 (streaming replies, approval buttons, live plots, memory browser)."""
    from .web import serve

    try:
        serve(root=runs_dir, session=session, llm=llm, memory=memory, data=data, approve=approve, port=port, show=show,
              storage=storage)
    except ArchloreError as exc:
        _fail(exc)
