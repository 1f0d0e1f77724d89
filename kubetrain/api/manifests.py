"""Load TrainingJob manifests and turn pydantic's errors into field paths that match the
API server's (``spec.training.epochs``, ``spec.data.cleaning.filters[0].op``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kubetrain.api.v1alpha1 import TrainingJob
from kubetrain.errors import UserError

#: pydantic puts the union member or validator it tried into the error location; those
#: are not fields and would only confuse a user.
_NOT_FIELDS = {"str", "int", "float", "bool", "list", "dict", "none"}
#: See ``v1alpha1.nested_error``.
_NESTED = re.compile(r"^\[(?P<path>[\w.\[\]]+)\] (?P<message>.*)$", re.DOTALL)


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def field_path(loc: tuple[int | str, ...]) -> str:
    """``('spec', 'cleaning', 'filters', 0, 'op')`` → ``spec.cleaning.filters[0].op``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in _NOT_FIELDS or "[" in part:
            continue
        else:
            text += f".{part}" if text else part
    return text


def _message(error: dict[str, Any]) -> str:
    msg = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if error["type"] == "extra_forbidden":
        msg = "unknown field"
    return msg


def errors_of(exc: ValidationError) -> list[FieldError]:
    seen: dict[tuple[str, str], None] = {}
    for error in exc.errors():
        path, message = field_path(error["loc"]), _message(error)
        nested = _NESTED.match(message)
        if nested:
            path = f"{path}.{nested['path']}" if path else nested["path"]
            message = nested["message"]
        seen[(path, message)] = None
    return [FieldError(path, msg) for path, msg in seen]


def validate_document(doc: Any) -> tuple[TrainingJob | None, list[FieldError]]:
    if not isinstance(doc, dict):
        return None, [FieldError("", "a manifest must be a YAML mapping")]
    try:
        return TrainingJob.model_validate(doc), []
    except ValidationError as exc:
        return None, errors_of(exc)


def read_documents(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (index, document) for each non-empty YAML document in the file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError("file not found", field=str(path)) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read: {exc.strerror or exc}", field=str(path)) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"not valid YAML: {getattr(exc, 'problem', exc)}", field=where) from None
    yield from enumerate(docs)


def load_training_job(path: Path) -> TrainingJob:
    """The single TrainingJob in a file, or a UserError naming every bad field."""
    docs = list(read_documents(path))
    if len(docs) != 1:
        raise UserError(
            f"expected exactly one TrainingJob, found {len(docs)} documents", field=str(path)
        )
    job, errors = validate_document(docs[0][1])
    if job is None:
        details = "; ".join(str(e) for e in errors)
        raise UserError(f"invalid TrainingJob: {details}", field=str(path))
    return job
