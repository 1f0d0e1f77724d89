"""Generated differential cases: a valid TrainingJob from the models (an example, with every
default the models fill in) and one targeted change, chosen from what the models' JSON
Schema says of the field: a wrong wire type, a number out of range, a bad enum value, an
unknown field, a string off its pattern or length, a list item out of bounds, a list too
long; or a change that must stay valid (a number in range, another enum value)."""

from __future__ import annotations

import copy
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from differential_support import Case, PathPart, base_manifest, dump, format_path, set_path
from hypothesis import strategies as st

from kubetrain.api.v1alpha1 import TrainingJob

BASES = ("digits-cnn.yaml", "digits-vae.yaml", "iris-csv-mlp.yaml", "sine-rnn.yaml")
#: Fields that other rules read: changing them to another allowed value can break a
#: cross-field rule (a section that no longer fits the type, dropNullsIn without dropNulls).
CROSS_FIELD = frozenset(
    {"type", "task", "strategy", "op", "operator", "effect", "dropNulls", "dropDuplicates"}
    | {"format", "mode"}
)
_WORDS = st.text(string.ascii_lowercase, min_size=1, max_size=10)
_OFF_PATTERN = st.text("AZaz09 _!.:/-@", min_size=1, max_size=12)


@dataclass(frozen=True)
class Site:
    """A place in a document and the schema the models give it."""

    path: tuple[PathPart, ...]
    schema: dict[str, Any]
    value: Any


@dataclass(frozen=True)
class Change:
    path: tuple[PathPart, ...]
    value: Any
    valid: bool
    field: str  # the path a rejection must name


def full_base(name: str) -> dict[str, Any]:
    """An example as the models see it: every default filled in."""
    job = TrainingJob.model_validate(base_manifest(name))
    return job.model_dump(mode="json", exclude_none=True)


def resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` and drop the ``null`` of ``X | None``; a real union stays an anyOf."""
    while True:
        if "$ref" in schema:
            target = defs[schema["$ref"].rsplit("/", 1)[-1]]
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            continue
        variants = [v for v in schema.get("anyOf", []) if v.get("type") != "null"]
        if len(variants) == 1 and "anyOf" in schema:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            schema = {**rest, **variants[0]}
            continue
        return schema


def sites(value: Any, schema: dict[str, Any], defs: dict, path: tuple = ()) -> Iterator[Site]:
    schema = resolve(schema, defs)
    yield Site(path, schema, value)
    if isinstance(value, dict) and "properties" in schema:
        for key, child in value.items():
            if key in schema["properties"]:
                yield from sites(child, schema["properties"][key], defs, (*path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from sites(item, schema["items"], defs, (*path, index))


def mutable_sites(doc: dict[str, Any]) -> list[Site]:
    """Every spec field and metadata.name (apiVersion and kind pick the endpoint)."""
    root = TrainingJob.model_json_schema()
    defs = root.get("$defs", {})
    found = []
    for site in sites(doc, root, defs):
        if site.path[:1] == ("spec",) or site.path == ("metadata", "name"):
            found.append(site)
    return found


def _change(site: Site, value: Any, *, valid: bool = False) -> Change:
    return Change(site.path, value, valid, format_path(site.path))


def _kind(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return "union"
    if "enum" in schema or "const" in schema:
        return "enum"
    return str(schema.get("type", "any"))


def _type_changes(site: Site) -> st.SearchStrategy[Change] | None:
    value, kind = site.value, _kind(site.schema)
    wrong: list[Any] = {
        "integer": [str(value), value + 0.5, True] if isinstance(value, int) else [],
        "number": [str(value), True],
        "boolean": [str(value).lower(), int(value) if isinstance(value, bool) else 1],
        "string": [7, True, [value]],
        "enum": [7, True],
        "union": [True, [value], {"value": value}],
        "array": ["x", {"item": value}],
        "object": [[value], "x"],
    }.get(kind, [])
    if not wrong:
        return None
    return st.sampled_from(wrong).map(lambda v: _change(site, v))


def _bounds(schema: dict[str, Any]) -> list[tuple[str, float]]:
    return [(k, schema[k]) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
            if k in schema]  # fmt: skip


def _out_of_range(site: Site) -> st.SearchStrategy[Change] | None:
    bounds = _bounds(site.schema)
    if not bounds or isinstance(site.value, bool):
        return None
    integer = site.schema.get("type") == "integer"
    distance = st.integers(1, 1000) if integer else st.floats(0.001, 1000)

    def beyond(bound: tuple[str, float], d: float) -> Change:
        key, limit = bound
        exclusive = key.startswith("exclusive")
        gap = 0 if exclusive and not integer else d
        below = key in ("minimum", "exclusiveMinimum")
        return _change(site, limit - gap if below else limit + gap)

    return st.builds(beyond, st.sampled_from(bounds), distance)


def _in_range(site: Site) -> st.SearchStrategy[Change] | None:
    schema = site.schema
    if not _bounds(schema) or isinstance(site.value, bool) or site.path[-1] in CROSS_FIELD:
        return None
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    low = (high - 1000) if low is None else low
    high = (low + 1_000_000) if high is None else high
    if schema.get("type") == "integer":
        low += "exclusiveMinimum" in schema
        high -= "exclusiveMaximum" in schema
        values: st.SearchStrategy[Any] = st.integers(int(low), int(high))
        values = values | values.map(float)  # a whole float: kubectl sends an integer
    else:
        values = st.floats(
            low, high,
            exclude_min="exclusiveMinimum" in schema, exclude_max="exclusiveMaximum" in schema,
            allow_subnormal=False,
        )  # fmt: skip
    return values.map(lambda v: _change(site, v, valid=True))


def _enum_changes(site: Site) -> st.SearchStrategy[Change] | None:
    allowed = site.schema.get("enum") or [site.schema.get("const")]
    if not isinstance(site.value, str):
        return None
    bad = _WORDS.filter(lambda w: w not in allowed).map(lambda w: _change(site, w))
    others = [a for a in allowed if a != site.value]
    if site.path[-1] in CROSS_FIELD or not others:
        return bad
    return bad | st.sampled_from(others).map(lambda a: _change(site, a, valid=True))


def _string_changes(site: Site) -> st.SearchStrategy[Change] | None:
    schema, options = site.schema, []
    if pattern := schema.get("pattern"):
        off = _OFF_PATTERN.filter(lambda s: not re.search(pattern, s))
        options.append(off.map(lambda s: _change(site, s)))
    if "maxLength" in schema:
        options.append(st.just(_change(site, "a" * (schema["maxLength"] + 1))))
    if schema.get("minLength", 0) > 0:
        options.append(st.just(_change(site, "")))
    return st.one_of(options) if options else None


def _unknown_field(site: Site) -> st.SearchStrategy[Change] | None:
    if site.schema.get("additionalProperties") is not False or not isinstance(site.value, dict):
        return None
    known = set(site.schema.get("properties", {}))
    names = st.from_regex(r"\A[a-z][a-zA-Z]{2,12}\Z").filter(lambda n: n not in known)

    def add(name: str) -> Change:
        path = (*site.path, name)
        return Change(path, 1, False, format_path(path))

    return names.map(add)


def _list_changes(site: Site) -> st.SearchStrategy[Change] | None:
    schema, value = site.schema, site.value
    if not isinstance(value, list):
        return None
    options = []
    if "maxItems" in schema and value:
        longer = value + [copy.deepcopy(value[-1])] * (schema["maxItems"] + 1 - len(value))
        options.append(st.just(_change(site, longer)))
    if schema.get("minItems", 0) > 0:
        options.append(st.just(_change(site, [])))
    return st.one_of(options) if options else None


_MUTATORS = {
    "type": _type_changes,
    "range": _out_of_range,
    "in-range": _in_range,
    "enum": _enum_changes,
    "pattern": _string_changes,
    "unknown-field": _unknown_field,
    "list": _list_changes,
}


def mutations(site: Site) -> list[tuple[str, st.SearchStrategy[Change]]]:
    """The changes that make sense at ``site``, by kind; a list element's ``range`` is
    the "list item out of bounds" case."""
    found = []
    for kind, mutator in _MUTATORS.items():
        if kind == "enum" and _kind(site.schema) != "enum":
            continue
        if kind == "pattern" and site.schema.get("type") != "string" and "anyOf" not in site.schema:
            continue
        if (strategy := mutator(site)) is not None:
            found.append((kind, strategy))
    return found


def apply(doc: dict[str, Any], change: Change) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    set_path(changed, list(change.path), change.value)
    return changed


Options = dict[str, list[tuple[str, st.SearchStrategy[Change]]]]


def mutation_options(bases: dict[str, dict[str, Any]]) -> Options:
    """For each kind of change, the (base, strategy) pairs where it applies; built once,
    as the schema walk is the slow part."""
    options: Options = {}
    for base in sorted(bases):
        for site in mutable_sites(bases[base]):
            for kind, strategy in mutations(site):
                options.setdefault(kind, []).append((base, strategy))
    return options


@st.composite
def mutated_cases(draw: st.DrawFn, bases: dict[str, dict[str, Any]], options: Options) -> Case:
    """A base with one change, the kind drawn first so that every kind gets its share;
    the case is named after what changed."""
    kind = draw(st.sampled_from(sorted(options)))
    base, strategy = draw(st.sampled_from(options[kind]))
    change = draw(strategy)
    name = f"{base.removesuffix('.yaml')}/{kind}/{change.field}={change.value!r}"[:160]
    fields = () if change.valid else (change.field,)
    return Case(name, dump(apply(bases[base], change)), change.valid, fields)


def base_cases(bases: dict[str, dict[str, Any]]) -> list[Case]:
    """The bases themselves, which must be valid on both sides."""
    return [
        Case(f"{name.removesuffix('.yaml')}/full", dump(doc), True) for name, doc in bases.items()
    ]
