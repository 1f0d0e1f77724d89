"""Column lists in the spec accept shell-style globs (``pixel_*``). They are expanded here
against the columns the data really has, so that a typo fails before any work is done, with
the spec field to fix in the message."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence

from kubetrain.errors import SpecError

_GLOB_CHARS = frozenset("*?[")
_LISTED = 12


def is_glob(pattern: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in pattern)


def listing(columns: Sequence[str]) -> str:
    """A short, readable list of columns for error messages (65 pixel columns would drown
    the one line the CLI prints)."""
    shown = ", ".join(columns[:_LISTED])
    if len(columns) > _LISTED:
        shown += f", ... ({len(columns) - _LISTED} more, last {columns[-1]})"
    return shown


def missing_column(pattern: str, columns: Sequence[str], field: str) -> SpecError:
    close = difflib.get_close_matches(pattern, list(columns), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return SpecError(
        f"column {pattern!r} not found{hint}; columns are: {listing(columns)}", field=field
    )


def expand(patterns: Sequence[str], columns: Sequence[str], field: str) -> list[str]:
    """Expand ``patterns`` (names or globs) in data order, without duplicates.

    ``field`` is the spec path of the list, e.g. ``spec.data.features``; an entry that
    matches nothing raises a SpecError naming ``field[i]``."""
    expanded: list[str] = []
    for index, pattern in enumerate(patterns):
        if is_glob(pattern):
            matched = [c for c in columns if fnmatch.fnmatchcase(c, pattern)]
        else:
            matched = [pattern] if pattern in columns else []
        if not matched:
            raise missing_column(pattern, columns, f"{field}[{index}]")
        expanded.extend(c for c in matched if c not in expanded)
    return expanded


def require(column: str, columns: Sequence[str], field: str) -> str:
    """A single column name (no globs): the rule's ``column`` field."""
    if column not in columns:
        raise missing_column(column, columns, field)
    return column
