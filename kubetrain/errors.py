"""Errors that users cause and can fix; the CLI prints them as one line, no traceback."""

from __future__ import annotations

#: The runtime's exit code when a training worker ran out of memory (Ray's memory monitor
#: stopped it): the operator reports the attempt as ``OOMKilled``, like a pod the kernel killed.
EXIT_OUT_OF_MEMORY = 3


class UserError(Exception):
    """A problem in the user's input: a manifest, a data file, a column name."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class SpecError(UserError):
    """The spec is well-formed but cannot work (a column that is missing, a shape that
    does not fit the model). ``field`` names the spec field to fix."""


class DataError(UserError):
    """The data cannot be read or is not what the spec says (``field`` is usually a path)."""
