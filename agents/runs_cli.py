"""`archlore runs`: list the runs of the configured storage (a shared database, or the run folders)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from archlore.tools.errors import ArchloreError
from rich.markup import escape
from rich.table import Table as RichTable

from .cli_common import console
from .cli_common import fail as _fail


def _folder_runs(root: Path) -> list[dict]:
    """Runs kept as folders (no --storage): settings.json, and record.json once finished."""
    out = []
    for d in sorted(root.iterdir()) if root.is_dir() else ():
        try:
            settings = json.loads((d / "settings.json").read_text())
        except (OSError, ValueError):
            continue
        rec = None
        try:
            rec = json.loads((d / "record.json").read_text())
        except (OSError, ValueError):
            pass
        best = (rec or {}).get("best") or {}
        out.append({
            "run_id": d.name, "status": "finished" if rec else "unfinished", "host": "-",
            "created": settings.get("created") or "-", "used": len((rec or {}).get("evaluations", [])) if rec else None,
            "budget": settings.get("budget"), "best": best.get("valid"), "space": settings.get("space", ""),
            "target": settings.get("target", ""), "executor": settings.get("executor", ""),
        })
    return sorted(out, key=lambda r: str(r["created"]), reverse=True)


def runs(
    storage: Annotated[Optional[str], typer.Option(help="sqlite:///FILE.db or postgresql://... (default $ARCHLORE_STORAGE, else the run folders under --runs-dir)")] = None,
    runs_dir: Annotated[Optional[Path], typer.Option(help="where run folders live (default $ARCHLORE_RUNS, else ./runs)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the list as JSON")] = False,
) -> None:
    """List runs: id, status, where it last ran, evaluations used of the budget, best validation metric."""
    from archlore.tools.env import env

    from .runner import runs_dir as default_runs

    storage = storage or env().archlore_storage
    try:
        if storage:
            from archlore.tools.storage import RunStore

            with RunStore(storage) as store:
                rows = [
                    {"run_id": r.run_id, "status": r.status, "host": r.host,
                     "created": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(r.created)), "used": r.used,
                     "budget": r.budget, "best": r.best, "space": r.space, "target": r.target, "executor": r.executor}
                    for r in store.runs()
                ]
                where = store.location
        else:
            root = default_runs(runs_dir)
            rows, where = _folder_runs(root), str(root)
    except ArchloreError as exc:
        _fail(exc)
    if as_json:
        console.print_json(data=rows)
        return
    t = RichTable(title=f"{len(rows)} run(s) in {escape(where)}")
    for col in ("run", "status", "host", "created", "space", "target", "executor", "used", "best valid"):
        t.add_column(col, overflow="fold")
    for r in rows:
        used = "-" if r["used"] is None else f"{r['used']}/{r['budget']}"
        t.add_row(escape(r["run_id"]), r["status"], escape(str(r["host"])), str(r["created"]), escape(str(r["space"])),
                  escape(str(r["target"])), r["executor"], used, "-" if r["best"] is None else f"{r['best']:.4f}")
    console.print(t)
