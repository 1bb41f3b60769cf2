"""Where the principle memory lives by default. Kept apart so the CLI can name it without loading Chroma."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def default_location() -> str:
    """Where the memory lives when none is given: ``$ARCHLORE_MEMORY``, else the user data dir."""
    from archlore.tools.env import env

    configured = env().archlore_memory
    if configured:
        return configured
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return str(base / "archlore" / "memory")
