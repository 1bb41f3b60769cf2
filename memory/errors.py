"""The errors the principle memory raises. All derive from ``ArchloreError`` via ``MemoryStoreError``.

(The base is not called ``MemoryError`` so that it never shadows Python's built-in.)
Every message says what was wrong and how to fix it; the CLI prints it as one line.
"""

from __future__ import annotations

from archlore.tools.errors import ArchloreError


class MemoryStoreError(ArchloreError):
    """Something is wrong with the principle memory or a request made to it."""


class EmbeddingMismatch(MemoryStoreError):
    """The memory was built with a different embedding model than the one it is opened with."""


class EmbeddingUnavailable(MemoryStoreError):
    """The embedding model cannot be loaded (package missing or broken)."""


class PrincipleNotFound(MemoryStoreError, KeyError):
    """No principle with that id is in the memory."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class MemoryFormatError(MemoryStoreError, ValueError):
    """An export file is missing, unreadable or not an archlore memory export."""


class MemoryUnavailable(MemoryStoreError):
    """The memory cannot be reached: server down, folder not writable, or lock held too long."""


class MemoryCorrupt(MemoryStoreError):
    """The memory folder is not a readable archlore memory: garbage or damaged files, another
    program's files, or a damaged record."""


class MemoryNeedsMigration(MemoryStoreError):
    """The memory was written by an older archlore; ``archlore memory migrate`` brings it up to date."""
