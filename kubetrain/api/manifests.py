"""Load TrainingJob manifests and turn pydantic's errors into field paths that match the
API server's (``spec.training.epochs``, ``spec.data.cleaning.filters[0].op``)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kubetrain.api.kubeyaml import Document, KubeYamlError, load_documents
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


def field_path(loc: tuple[int | str, ...], *, last_is_key: bool = False) -> str:
    """``('spec', 'cleaning', 'filters', 0, 'op')`` → ``spec.cleaning.filters[0].op``.

    ``last_is_key``: the last part is a key the user wrote (an unknown field), never one of
    pydantic's own parts however it looks. A key that cannot be printed on one line is
    quoted (``spec["a\\nb"]``), so that every error stays one line."""
    text = ""
    for index, part in enumerate(loc):
        users = last_is_key and index == len(loc) - 1
        if isinstance(part, int):
            text += f"[{part}]"
        elif not users and (part in _NOT_FIELDS or "[" in part):
            continue
        elif not part.isprintable() or not part or part != part.strip():
            text += f"[{json.dumps(part)}]"
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
        loc, message = error["loc"], _message(error)
        if loc[-1:] == ("[key]",):  # a map's key: name the map, and the key in the message
            loc, message = loc[:-2], f"key {loc[-2]!r}: {message}"
        path = field_path(loc, last_is_key=error["type"] == "extra_forbidden")
        nested = _NESTED.match(message)
        if nested:
            joint = "" if nested["path"].startswith("[") or not path else "."
            path = f"{path}{joint}{nested['path']}"
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


@dataclass(frozen=True)
class Checked:
    """The verdict on one document; ``where`` names the file, and the document when the
    file holds several."""

    where: str
    job: TrainingJob | None
    errors: list[FieldError]


def _read_text(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text()
    except FileNotFoundError:
        raise UserError("file not found", field=str(path)) from None
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start})", field=str(path)) from None
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror or exc}", field=str(path)) from None


def read_documents(text: str, source: str) -> list[Document]:
    """The file's non-empty documents as kubectl would send them; a YAML mistake, or a file
    with no document at all, is a UserError naming the file and line."""
    try:
        docs = list(load_documents(text))
    except KubeYamlError as exc:
        where = f"{source}:{exc.line}" if exc.line else source
        raise UserError(f"not valid YAML: {exc}", field=where) from None
    if not docs:
        raise UserError("no manifest in this file (it is empty or only comments)", field=source)
    return docs


def check_text(text: str, source: str) -> list[Checked]:
    """Validate every document of a manifest file's text (what ``kubetrain validate`` does)."""
    docs = read_documents(text, source)
    several = len(docs) > 1
    checked = []
    for doc in docs:
        where = f"{source} (document {doc.index + 1}, line {doc.line})" if several else source
        job, errors = validate_document(doc.value)
        checked.append(Checked(where, job, errors))
    return checked


def check_file(path: Path) -> list[Checked]:
    """``check_text`` of a file, or of standard input for ``-``."""
    return check_text(_read_text(path), str(path))


def load_training_job(path: Path) -> TrainingJob:
    """The single TrainingJob in a file, or a UserError naming every bad field."""
    checked = check_file(path)
    if len(checked) != 1:
        raise UserError(
            f"expected exactly one TrainingJob, found {len(checked)} documents", field=str(path)
        )
    if checked[0].job is None:
        details = "; ".join(str(e) for e in checked[0].errors)
        raise UserError(f"invalid TrainingJob: {details}", field=str(path))
    return checked[0].job
