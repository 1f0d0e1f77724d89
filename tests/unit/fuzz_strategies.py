"""Hypothesis strategies for fuzzing, built from the committed CRD at test time, so that the
fuzz follows the API models as they change (the CRD is generated from them).

- :func:`from_schema`: JSON values that satisfy an OpenAPI v3 structural schema as the API
  server evaluates it (types, enums, bounds, lengths, sizes, ``pattern`` with Go's RE2
  semantics, int-or-string, preserve-unknown-fields). CEL rules are ignored, so this is a
  superset of what the API server stores.
- :func:`schema_errors`: the matching checker, for "the client said ok, would the server?".
- :func:`mutated_manifests`: the valid examples with random edits.
- :func:`raw_yaml_texts`: YAML-ish text and bytes, for the reader.

Collections are kept short and few optional fields are drawn per object, so that a
document costs few choices: ten thousand of them are a test of a minute or two.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "kubetrain.io_trainingjobs.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
#: Generated documents per fuzzed subject (validate, the operator), shared by its targets.
FUZZ_EXAMPLES = int(os.environ.get("KUBETRAIN_FUZZ_EXAMPLES", "10000"))


def fuzz_settings(targets: int) -> settings:
    """Derandomized, no example database: the same documents on every run and machine,
    ``FUZZ_EXAMPLES`` in all over a subject's ``targets``."""
    return settings(
        max_examples=-(-FUZZ_EXAMPLES // targets),
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Longest list, map or free-form string generated where the schema allows more.
MAX_ITEMS = 2
MAX_TEXT = 8
#: Most optional fields one object gets.
MAX_OPTIONAL = 3

Json = Any
Hints = Mapping[str, SearchStrategy[Json]]


@cache
def crd_schema() -> dict[str, Any]:
    """The TrainingJob's openAPIV3Schema, read from the committed CRD."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def subschema(path: str) -> dict[str, Any]:
    """The schema at a dotted path such as ``spec.cluster``."""
    node = crd_schema()
    for part in path.split("."):
        node = node["properties"][part]
    return node


# ----------------------------------------------------------------- regex, as Go


@cache
def go_regex(pattern: str) -> re.Pattern[str]:
    """A CRD pattern as the API server (Go RE2) reads it: ``\\w`` and ``\\d`` are ASCII and
    ``$`` ends the text (Python's ``$`` also matches before a final newline)."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern, re.ASCII)


def short_regex(pattern: str, cap: int = 6) -> re.Pattern[str]:
    """``go_regex`` with ``*`` and ``+`` capped at ``cap``: it matches a subset of what the
    pattern matches, so every string generated from it still satisfies the schema, and
    fewer characters are fewer choices for hypothesis (each one is a choice)."""
    out, in_class, escaped = [], False, False
    for char in pattern:
        piece = char
        if escaped or char == "\\":
            escaped = not escaped and char == "\\"
        elif in_class or char in "[]":
            in_class = (in_class or char == "[") and char != "]"
        elif char in "*+":
            piece = f"{{{int(char == '+')},{cap}}}"
        out.append(piece)
    return go_regex("".join(out))


# ------------------------------------------------------------- free-form values

JSON_SCALARS: SearchStrategy[Json] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=MAX_TEXT),
)
#: Any JSON value: what ``x-kubernetes-preserve-unknown-fields`` lets through.
JSON_VALUES: SearchStrategy[Json] = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=MAX_ITEMS)
        | st.dictionaries(st.text(max_size=8), inner, max_size=MAX_ITEMS)
    ),
    max_leaves=6,
)


# -------------------------------------------------------------- schema → values


def from_schema(schema: Mapping[str, Any], hints: Hints | None = None, path: str = "") -> Any:
    """Values valid for ``schema``. ``hints`` replace the strategy at dotted paths (list
    items are ``path[]``), for fields the schema leaves open, such as ``metadata``."""
    hints = hints or {}
    if path in hints:
        return hints[path]
    if schema.get("x-kubernetes-int-or-string"):
        return st.one_of(st.integers(INT64_MIN, INT64_MAX), _strings(schema))
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind is None or (kind == "object" and _free_form(schema)):
        free = JSON_VALUES if kind is None else st.dictionaries(st.text(max_size=8), JSON_VALUES)
        return free if schema.get("x-kubernetes-preserve-unknown-fields") else st.just({})
    builders: dict[str, Callable[[], SearchStrategy[Json]]] = {
        "object": lambda: _objects(schema, hints, path),
        "array": lambda: _arrays(schema, hints, path),
        "string": lambda: _strings(schema),
        "integer": lambda: _integers(schema),
        "number": lambda: _numbers(schema),
        "boolean": st.booleans,
    }
    return builders[kind]()


def _free_form(schema: Mapping[str, Any]) -> bool:
    return "properties" not in schema and "additionalProperties" not in schema


def _objects(schema: Mapping[str, Any], hints: Hints, path: str) -> SearchStrategy[Json]:
    def child(name: str) -> str:
        return f"{path}.{name}" if path else name

    if "properties" in schema:
        props = {n: from_schema(s, hints, child(n)) for n, s in schema["properties"].items()}
        required = set(schema.get("required", ()))
        return _some_optional(
            {n: s for n, s in props.items() if n in required},
            {n: s for n, s in props.items() if n not in required},
        )
    values = from_schema(schema["additionalProperties"], hints, child("*"))
    size = min(schema.get("maxProperties", MAX_ITEMS), MAX_ITEMS)
    return st.dictionaries(st.text(max_size=MAX_TEXT), values, max_size=size)


def _some_optional(
    required: dict[str, SearchStrategy[Json]], optional: dict[str, SearchStrategy[Json]]
) -> SearchStrategy[dict[str, Json]]:
    """The required keys and a few of the optional ones (often none): drawing only the keys
    that are present keeps a document with a hundred optional fields cheap to generate."""
    if not optional:
        return st.fixed_dictionaries(required)
    names = st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=MAX_OPTIONAL)

    @st.composite
    def objects(draw: st.DrawFn) -> dict[str, Json]:
        value = {name: draw(strategy) for name, strategy in required.items()}
        value.update((name, draw(optional[name])) for name in draw(names))
        return value

    return objects()


def _arrays(schema: Mapping[str, Any], hints: Hints, path: str) -> SearchStrategy[Json]:
    low = schema.get("minItems", 0)
    high = min(schema.get("maxItems", low + MAX_ITEMS), low + MAX_ITEMS)
    return st.lists(from_schema(schema["items"], hints, f"{path}[]"), min_size=low, max_size=high)


def _strings(schema: Mapping[str, Any]) -> SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if "pattern" in schema:
        strings = st.from_regex(short_regex(schema["pattern"]), fullmatch=True)
        fits = high if high is not None else math.inf
        return strings.filter(lambda s: low <= len(s) <= fits)
    cap = max(low, min(high if high is not None else MAX_TEXT, MAX_TEXT))
    short = st.text(min_size=low, max_size=cap)
    if high is None or high <= cap:
        return short
    # One string in ten is as long as allowed: what user text at the limit does downstream.
    longest = "ü" * high
    return st.tuples(st.integers(0, 9), short).map(lambda p: longest if p[0] == 0 else p[1])


def _bounds(schema: Mapping[str, Any]) -> tuple[float | None, float | None, bool, bool]:
    return (
        schema.get("minimum"),
        schema.get("maximum"),
        bool(schema.get("exclusiveMinimum")),
        bool(schema.get("exclusiveMaximum")),
    )


def _integers(schema: Mapping[str, Any]) -> SearchStrategy[int]:
    low, high, open_low, open_high = _bounds(schema)
    first = INT64_MIN if low is None else math.floor(low) + 1 if open_low else math.ceil(low)
    last = INT64_MAX if high is None else math.ceil(high) - 1 if open_high else math.floor(high)
    return st.integers(first, last)


def _numbers(schema: Mapping[str, Any]) -> SearchStrategy[float | int]:
    low, high, open_low, open_high = _bounds(schema)
    floats = st.floats(
        min_value=low,
        max_value=high,
        exclude_min=open_low and low is not None,
        exclude_max=open_high and high is not None,
        allow_nan=False,
        allow_infinity=False,
    )
    first = math.ceil(low) if low is not None else -(2**53)
    last = math.floor(high) if high is not None else 2**53
    if open_low and first == low:
        first += 1
    if open_high and last == high:
        last -= 1
    return floats | st.integers(first, last) if first <= last else floats


# ------------------------------------------------------------ Kubernetes names

DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN = rf"{DNS_LABEL}(\.{DNS_LABEL})*"
LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
LOWER_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
ALNUM = LOWER_ALNUM + LOWER_ALNUM[:26].upper()


def _trimmed(alphabet: str, inner: str, max_len: int) -> SearchStrategy[str]:
    """Strings of ``alphabet`` + ``inner`` that start and end with a character of
    ``alphabet``: one choice each, where a regex would cost one per character."""
    edges = "".join(set(inner) - set(alphabet))
    text = st.text(alphabet=alphabet + inner, min_size=1, max_size=max_len)
    return text.map(lambda s: s.strip(edges) or alphabet[0])


def dns_labels(max_len: int = 63) -> SearchStrategy[str]:
    """RFC 1123 labels (``DNS_LABEL``), such as a namespace."""
    return _trimmed(LOWER_ALNUM, "-", max_len)


def dns_subdomains(max_len: int = 253) -> SearchStrategy[str]:
    """RFC 1123 subdomains (``DNS_SUBDOMAIN``): what a custom resource may be named."""
    labels = st.lists(dns_labels(min(63, max_len)), min_size=1, max_size=3)
    return labels.map(".".join).filter(lambda s: len(s) <= max_len)


def service_names(max_len: int = 63) -> SearchStrategy[str]:
    """RFC 1035 labels (a letter first): the names a Service can take, and so the names a
    TrainingJob needs for its children (kubetrain's own rule, not the API server's)."""
    return dns_labels(max_len).map(lambda s: s if s[0].isalpha() else ("j" + s)[:max_len])


def label_keys() -> SearchStrategy[str]:
    """Label keys: a name, optionally under a DNS subdomain prefix."""
    name = _trimmed(ALNUM, "-_.", 63)
    return st.one_of(name, st.tuples(dns_subdomains(60), name).map("/".join))


def label_values() -> SearchStrategy[str]:
    return st.just("") | _trimmed(ALNUM, "-_.", 63)


def object_meta(
    *, name_max: int, stored: bool, names: SearchStrategy[str] | None = None
) -> SearchStrategy[dict[str, Any]]:
    """``metadata`` as the API server accepts it for a custom resource: a DNS-1123
    subdomain name (the CRD's own CEL rule caps its length; pass that as ``name_max``), or
    one of ``names``. ``stored``: also what the server fills in (namespace, uid, ...)."""
    server = {
        "namespace": dns_labels(),
        "uid": st.uuids().map(str),
        "generation": st.integers(1, INT64_MAX),
        "resourceVersion": st.integers(1, INT64_MAX).map(str),
    }
    labels = st.dictionaries(label_keys(), label_values(), max_size=MAX_ITEMS)
    required = {"name": names if names is not None else dns_subdomains(name_max)}
    optional: dict[str, SearchStrategy[Any]] = {"labels": labels}
    if stored:
        required |= server
    else:
        optional |= server
    return st.fixed_dictionaries(required, optional=optional)


# ------------------------------------------------------------- plausible specs


def _one_source() -> SearchStrategy[dict[str, Any]]:
    """Exactly one data source (the CEL rule the schema cannot express)."""
    source = subschema("spec.data.source")
    return st.one_of(
        [from_schema(s).map(lambda v, n=n: {n: v}) for n, s in source["properties"].items()]
    )


def _model_of_each_type() -> SearchStrategy[dict[str, Any]]:
    """A model with at most the section its type names (the CEL rule)."""
    model = subschema("spec.model")
    props = model["properties"]

    def of(kind: str) -> SearchStrategy[dict[str, Any]]:
        optional = {"task": from_schema(props["task"])}
        if kind in props:
            optional[kind] = from_schema(props[kind])
        return st.fixed_dictionaries({"type": st.just(kind)}, optional=optional)

    return st.one_of([of(kind) for kind in props["type"]["enum"]])


def plausible_hints(**extra: SearchStrategy[Json]) -> dict[str, SearchStrategy[Json]]:
    """Hints that satisfy the two CEL rules that otherwise reject almost every document,
    so that most generated specs get past validation into what comes after it."""
    return {"spec.data.source": _one_source(), "spec.model": _model_of_each_type(), **extra}


def trainingjobs(hints: Hints) -> SearchStrategy[dict[str, Any]]:
    """Whole TrainingJob documents from the CRD schema, ``metadata`` from ``hints``."""
    schema = dict(crd_schema())
    schema["required"] = sorted({*schema.get("required", ()), "metadata"})  # the server's
    base = from_schema(schema, hints)
    identity = {"apiVersion": st.just("kubetrain.io/v1alpha1"), "kind": st.just("TrainingJob")}
    return st.tuples(base, st.fixed_dictionaries(identity)).map(lambda p: {**p[0], **p[1]})


# ----------------------------------------------------------------- the checker


def schema_errors(value: Json, schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Why the API server's structural validation would refuse ``value`` (CEL aside);
    empty when it would store it. Unknown fields count, as with strict field validation."""
    if schema.get("x-kubernetes-int-or-string"):
        if _is_int(value):
            return []
        if not isinstance(value, str):
            return [f"{path}: must be an integer or a string"]
        return _string_errors(value, schema, path)
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {schema['enum']}"]
    kind = schema.get("type")
    checks: dict[str, Callable[[], list[str]]] = {
        "object": lambda: _object_errors(value, schema, path),
        "array": lambda: _array_errors(value, schema, path),
        "string": lambda: _string_errors(value, schema, path),
        "integer": lambda: _number_errors(value, schema, path, integer=True),
        "number": lambda: _number_errors(value, schema, path, integer=False),
        "boolean": lambda: [] if isinstance(value, bool) else [f"{path}: must be a boolean"],
    }
    return checks[kind]() if kind else []


def _is_int(value: Json) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _object_errors(value: Json, schema: Mapping[str, Any], path: str) -> list[str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return [f"{path}: must be an object with string keys"]
    errors = [f"{path}.{r}: required" for r in schema.get("required", ()) if r not in value]
    if len(value) > schema.get("maxProperties", math.inf):
        errors.append(f"{path}: too many properties")
    props = schema.get("properties")
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if item is None and not schema.get("nullable"):
            continue  # the API server prunes a null field before it validates
        if props is not None and key in props:
            errors += schema_errors(item, props[key], where)
        elif extra is not None:
            errors += schema_errors(item, extra, where)
        elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
            errors.append(f"{where}: unknown field")
    return errors


def _array_errors(value: Json, schema: Mapping[str, Any], path: str) -> list[str]:
    if not isinstance(value, list):
        return [f"{path}: must be an array"]
    if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", math.inf):
        return [f"{path}: {len(value)} items is out of bounds"]
    return [
        e
        for i, item in enumerate(value)
        for e in schema_errors(item, schema["items"], f"{path}[{i}]")
    ]


def _string_errors(value: Json, schema: Mapping[str, Any], path: str) -> list[str]:
    if not isinstance(value, str):
        return [f"{path}: must be a string"]
    if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", math.inf):
        return [f"{path}: length {len(value)} is out of bounds"]
    if "pattern" in schema and not go_regex(schema["pattern"]).search(value):
        return [f"{path}: {value!r} does not match {schema['pattern']}"]
    return []


def _number_errors(
    value: Json, schema: Mapping[str, Any], path: str, *, integer: bool
) -> list[str]:
    numeric = _is_int(value) or isinstance(value, float)
    # Integral floats count as integers, as in the API server's validator (isFloatInt).
    if not numeric or (integer and not (_is_int(value) or float(value).is_integer())):
        return [f"{path}: must be {'an integer' if integer else 'a number'}"]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path}: not representable in JSON"]
    low, high, open_low, open_high = _bounds(schema)
    if low is not None and (value < low or (open_low and value == low)):
        return [f"{path}: below the minimum"]
    if high is not None and (value > high or (open_high and value == high)):
        return [f"{path}: above the maximum"]
    return []


# ------------------------------------------------------------------- mutations


@cache
def example_documents() -> list[dict[str, Any]]:
    """The valid examples, parsed once (mutations work on deep copies)."""
    return [yaml.safe_load(p.read_text()) for p in EXAMPLES]


JUNK_STRINGS = (
    "10",
    "true",
    "yes",
    "no",
    "on",
    "1e3",
    "",
    " ",
    "0x10",
    "-1",
    "null",
    "~",
    "NaN",
    ".inf",
    "1\n",
    "2Gi\n",
    "10Gi ",
    "1..",
    "é",
    "\u202e",
    "\x00",
)
HUGE_NUMBERS = (10**30, -(10**30), 2**63, 2**64, 1e308, -1e308, 1e-320, 2**53 + 1)
SPECIAL_FLOATS = (math.nan, math.inf, -math.inf)

_ANY_VALUE: SearchStrategy[Json] = st.one_of(
    JSON_VALUES,
    st.sampled_from(JUNK_STRINGS),
    st.sampled_from(HUGE_NUMBERS + SPECIAL_FLOATS),
    st.text(),  # any unicode, surrogates excepted (a YAML file cannot hold them)
    st.integers(),
    st.recursive(
        st.none(),
        lambda inner: (
            st.lists(inner, max_size=2)
            | st.dictionaries(st.sampled_from(["a", "spec", "0", ""]), inner, max_size=2)
        ),
        max_leaves=12,
    ),
)


def _paths(node: Json, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a document, the root included."""
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


def _parent(doc: Json, path: tuple[Any, ...]) -> Json:
    node = doc
    for part in path[:-1]:
        node = node[part]
    return node


@st.composite
def _mutate_once(draw: st.DrawFn, doc: Json) -> Json:
    paths = _paths(doc)
    path = draw(st.sampled_from(paths))
    action = draw(st.sampled_from(["delete", "replace", "unknown", "wrap"]))
    if not path:  # the whole document
        return draw(_ANY_VALUE) if action != "wrap" else [doc]
    parent, key = _parent(doc, path), path[-1]
    if action == "delete":
        del parent[key]
    elif action == "replace":
        parent[key] = draw(_ANY_VALUE)
    elif action == "wrap":
        parent[key] = draw(st.sampled_from([[parent[key]], {"value": parent[key]}]))
    else:
        target = parent[key] if isinstance(parent[key], dict) else parent
        if isinstance(target, dict):
            unknown = draw(st.one_of(st.text(max_size=8), st.integers(), st.booleans()))
            target[unknown] = draw(_ANY_VALUE)
    return doc


@st.composite
def mutated_manifests(draw: st.DrawFn) -> Json:
    """A valid example with one to four random edits: deleted keys, values of another type
    (strings that look like numbers or booleans, huge numbers, NaN, unicode, nested junk),
    unknown keys, or a document that is no mapping at all."""
    doc = copy.deepcopy(draw(st.sampled_from(example_documents())))
    for _ in range(draw(st.integers(1, 4))):
        doc = draw(_mutate_once(doc))
    return doc


# ----------------------------------------------------------------- raw text

#: Fragments whose alias is inside its own anchor: a document that contains itself.
SELF_REFERENCING_FRAGMENTS = ("&a [*a]", "x: &x\n  - *x")
YAML_FRAGMENTS = (
    "---", "...", "--- |", "# only a comment", "\t", "\tspec: {}", "a: 1\na: 2",
    "metadata: {name: x}\nmetadata: {name: y}", "base: &b {epochs: 3}", "copy: *b",
    "loop: *undefined", "<<: *b", "? [complex, key]\n: v", "%YAML 1.1", "%TAG ! tag:x,1:",
    "!!python/object/apply:os.system [ls]", "!!binary aGVsbG8=", "!!set {a, b}", "!!str 1",
    "{", "[unclosed", "key: 'open", 'key: "\\x"', "- item", "- - nested", "|", ">-\n  folded",
    "spec:\n  model:\n   type: cnn\n  type: rnn", "apiVersion: kubetrain.io/v1alpha1",
    "kind: TrainingJob", "metadata:\n  name: ok", "spec: null", "spec: []", "spec: 3",
    "\ufeffkind: TrainingJob", "a: b: c", "- a\nb: c", "@reserved", "`reserved",
    "a: 1e999", "a: .nan", "a: -.inf", "a: 0o17", "a: 0x1F", "a: 2001-12-14", "a: ~",
    "{a: 1, a: 2}", *SELF_REFERENCING_FRAGMENTS,
)  # fmt: skip


def _text_from_fragments() -> SearchStrategy[str]:
    piece = st.one_of(st.sampled_from(YAML_FRAGMENTS), st.text(max_size=12))
    sep = st.sampled_from(["\n", "\n---\n", "\n\t", " ", "\r\n", ""])
    return st.lists(st.tuples(piece, sep), min_size=1, max_size=6).map(
        lambda parts: "".join(p + s for p, s in parts)
    )


def _example_with_splice() -> SearchStrategy[str]:
    """An example's text with a fragment spliced in at a random line."""

    def splice(args: tuple[str, int, str]) -> str:
        text, at, fragment = args
        lines = text.splitlines()
        lines.insert(at % (len(lines) + 1), fragment)
        return "\n".join(lines)

    texts = st.sampled_from([p.read_text() for p in EXAMPLES])
    return st.tuples(texts, st.integers(0, 80), st.sampled_from(YAML_FRAGMENTS)).map(splice)


@st.composite
def raw_yaml_texts(draw: st.DrawFn) -> bytes:
    """File contents: YAML fragments (several documents, duplicate keys, tabs, anchors and
    aliases, ``---`` or comments only), spliced examples, and invalid UTF-8."""
    text = draw(st.one_of(_text_from_fragments(), _example_with_splice()))
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        at = draw(st.integers(0, len(data)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xfe\xff"]))
        data = data[:at] + junk + data[at:]
    return data
