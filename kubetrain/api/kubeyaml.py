"""YAML read the way kubectl reads it, so that the client validates what the API server gets.

kubectl turns YAML into JSON with sigs.k8s.io/yaml, which follows go-yaml v2, a YAML 1.1
reader. PyYAML is also YAML 1.1 but differs where users notice:

- go-yaml reads ``y``/``n``/``yes``/``no``/``on``/``off`` (any case variant it lists) as
  booleans; a column named ``on`` given unquoted reaches the server as ``true``;
- go-yaml reads ``3e-4`` and ``1e3`` as numbers (PyYAML: strings), strips ``_`` from numbers
  and knows Go's ``0x``/``0o``/``0b`` prefixes;
- timestamps stay strings; JSON cannot hold ``.nan`` or ``.inf``, so kubectl refuses them;
- a whole float leaves kubectl as a JSON integer (``epochs: 10.0`` is sent as ``10``).

On top of that this reader refuses what kubectl silently drops: a key given twice in one
mapping (both readers keep only one block, so half of what the user wrote would be lost).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml

_TRUE = frozenset(["y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE"])
_FALSE = frozenset(["n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE"])
_NULL = frozenset(["", "~", "null", "Null", "NULL"])
_INF = frozenset([".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"])
_NAN = frozenset([".nan", ".NaN", ".NAN"])
#: go-yaml v2's plain-float grammar (a dot is optional, unlike PyYAML's).
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_INT = re.compile(r"^[-+]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)$")
#: json.Marshal writes floats at or above this in exponent form, which decode as floats.
_JSON_INT_LIMIT = 1e21
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_PLAIN = "tag:kubetrain.io,2026:plain"


class KubeYamlError(ValueError):
    """A YAML problem kubectl would refuse or silently get wrong; ``line`` counts from 1."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.line = line
        super().__init__(" ".join(message.split()))  # one line, whatever PyYAML wrote


def _go_int(text: str) -> int | None:
    digits = text.replace("_", "")
    if not _INT.match(digits):
        return None
    sign = -1 if digits.startswith("-") else 1
    body = digits.lstrip("+-").lower()
    if body.startswith(("0x", "0o", "0b")):
        return sign * int(body[2:], {"x": 16, "o": 8, "b": 2}[body[1]])
    number = sign * int(body, 8 if len(body) > 1 and body.startswith("0") else 10)
    return number if _INT64_MIN <= number <= _INT64_MAX else None  # a float, for go-yaml


def resolve_plain(text: str) -> Any:
    """The value go-yaml v2 gives an unquoted scalar, before JSON conversion."""
    if text in _NULL:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if text in _INF:
        return math.inf
    if text in ("-.inf", "-.Inf", "-.INF"):
        return -math.inf
    if text in _NAN:
        return math.nan
    if text[:1] in "+-.0123456789" and text:
        number = _go_int(text)
        if number is not None:
            return number
        plain = text.replace("_", "")
        if _FLOAT.match(plain):
            return float(plain)
    return text


class _Loader(yaml.SafeLoader):
    """SafeLoader with go-yaml's scalar rules and duplicate keys refused."""


def _resolve(self: _Loader, kind: Any, value: Any, implicit: Any) -> str:
    if kind is yaml.ScalarNode and implicit[0]:
        return "tag:yaml.org,2002:merge" if value == "<<" else _PLAIN
    return yaml.SafeLoader.resolve(self, kind, value, implicit)


def _construct_plain(loader: _Loader, node: yaml.ScalarNode) -> Any:
    return resolve_plain(loader.construct_scalar(node))


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[str, Any]:
    loader.flatten_mapping(node)
    mapping: dict[str, Any] = {}
    explicit: set[str] = set()
    merged = getattr(node, "_kubetrain_merged", 0)
    for index, (key_node, value_node) in enumerate(node.value):
        key = json_key(loader.construct_object(key_node, deep=True))
        if index >= merged and key in explicit:
            raise KubeYamlError(f"duplicate key {key!r}", key_node.start_mark.line + 1)
        if index >= merged:
            explicit.add(key)
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


def _flatten_mapping(self: _Loader, node: yaml.MappingNode) -> None:
    """Merged (``<<``) pairs come first and may be overridden; only the rest can clash."""
    before = len(node.value)
    merge_keys = sum(1 for k, _ in node.value if k.tag == "tag:yaml.org,2002:merge")
    yaml.SafeLoader.flatten_mapping(self, node)
    node._kubetrain_merged = len(node.value) - (before - merge_keys)  # type: ignore[attr-defined]


_Loader.resolve = _resolve  # type: ignore[method-assign]
_Loader.flatten_mapping = _flatten_mapping  # type: ignore[method-assign]
_Loader.add_constructor(_PLAIN, _construct_plain)
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def json_key(key: Any) -> str:
    """A mapping key as JSON (and so the API server) sees it: ``on:`` becomes ``"true"``."""
    if isinstance(key, str):
        return key
    if key is None:
        raise KubeYamlError("a mapping key cannot be null (kubectl refuses it)")
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    return str(key)


def to_json_value(
    value: Any, line: int | None = None, _inside: frozenset[int] = frozenset()
) -> Any:
    """What kubectl sends: whole floats as integers; NaN, infinities and a value that
    contains itself (``&a [*a]``) refused."""
    if isinstance(value, (dict, list)):
        if id(value) in _inside:
            raise KubeYamlError("a value contains itself (an alias inside its own anchor)", line)
        _inside = _inside | {id(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise KubeYamlError(f"{value} cannot be sent as JSON", line)
        if value.is_integer() and abs(value) < _JSON_INT_LIMIT:
            return int(Decimal(repr(value)))  # Go writes the shortest digits, then zeros
        return value
    if isinstance(value, dict):
        return {k: to_json_value(v, line, _inside) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json_value(v, line, _inside) for v in value]
    if isinstance(value, (bytes, bytearray)):
        raise KubeYamlError("binary values cannot be sent as JSON", line)
    if value is not None and not isinstance(value, (str, int, bool)):
        raise KubeYamlError(f"a {type(value).__name__} value cannot be sent as JSON", line)
    return value


@dataclass(frozen=True)
class Document:
    """One non-empty document of a file: its position among all documents (from 0) and
    the line it starts on."""

    index: int
    line: int
    value: Any


def load_documents(text: str) -> Iterator[Document]:
    """Every non-empty document, as kubectl would send it; empty ones are skipped, as
    kubectl skips them."""
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:  # the reader checks every character first
        raise KubeYamlError(str(exc).splitlines()[0]) from None
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            line = node.start_mark.line + 1 if node is not None else 0
            value = loader.construct_document(node) if node is not None else None
            if value is not None:
                yield Document(index, line, to_json_value(value, line))
            index += 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise KubeYamlError(str(exc.problem or exc), mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise KubeYamlError(str(exc)) from None
    finally:
        loader.dispose()


class KubeDumper(yaml.SafeDumper):
    """Writes YAML that kubectl (and ``load_documents``) reads back unchanged: a string that
    go-yaml would take for something else (``y``, ``on``, ``3e-4``, ``0x1F``) is quoted,
    which PyYAML, knowing only its own YAML 1.1 rules, does not do for all of them."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: KubeDumper, text: str) -> yaml.ScalarNode:
    node = dumper.represent_str(text)
    if node.style is None and resolve_plain(text) != text:
        node.style = "'"
    return node


KubeDumper.add_representer(str, _represent_str)


def dump(value: Any) -> str:
    """Block-style YAML in the keys' own order, safe for kubectl to read."""
    return yaml.dump(value, Dumper=KubeDumper, sort_keys=False, width=100)
