"""The one exception tree of archlore. Every message says what was wrong and how to fix it."""


class ArchloreError(Exception):
    """Root of every error archlore raises on purpose (the CLI prints these as one line)."""


class SpaceError(ArchloreError, ValueError):
    """An architecture, encoding or op name does not fit its search space."""


class FilterError(ArchloreError, ValueError):
    """A SpaceFilter is invalid for its space (empty position, id out of range...)."""


class DataError(ArchloreError):
    """A data file is missing or malformed."""


class UnknownCell(DataError):
    """A table has no result for this architecture on this task (a partial table).

    A strategy may catch it and propose another cell; `Table.known(task)` lists the cells that
    have results.
    """

    def __init__(self, message: str, *, arch: str = "", task: str = "") -> None:
        super().__init__(message)
        self.arch = arch
        self.task = task


class BudgetExhausted(ArchloreError):
    """The evaluation budget of a run is spent."""


class SpaceExhausted(ArchloreError):
    """Every architecture allowed by the filter has been evaluated already."""


class ConfigError(ArchloreError, ValueError):
    """A configuration value or command-line option is invalid."""


class BuildError(ArchloreError):
    """A builder could not turn one candidate into a network (it raised, or returned no
    `nn.Module`). The run records that candidate as failed and goes on."""

    def __init__(self, message: str, *, candidate: str = "") -> None:
        super().__init__(message)
        self.candidate = candidate
