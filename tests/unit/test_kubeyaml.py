"""kubeyaml: go-yaml's scalar rules, refused duplicates, and a writer whose YAML reads back
unchanged. The real kubectl's reading is compared in tests/cluster/test_kubectl_yaml.py."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetrain.api.kubeyaml import KubeYamlError, dump, load_documents, resolve_plain

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("on", True),
        ("y", True),
        ("NO", False),
        ("yEs", "yEs"),
        ("3e-4", 3e-4),
        ("1_000", 1000),
        ("0x1F", 31),
        ("0o17", 15),
        ("0777", 511),
        ("08", 8.0),
        (".5", 0.5),
        ("2001-12-14", "2001-12-14"),
        ("~", None),
        ("1:20", "1:20"),
    ],
)
def test_plain_scalars_resolve_as_go_yaml_does(text: str, value: Any):
    assert resolve_plain(text) == value


def _value(text: str) -> Any:
    (doc,) = load_documents(text)
    return doc.value


def test_whole_floats_leave_as_integers():
    assert _value("a: 10.0\nb: 1e3\nc: 1.5\n") == {"a": 10, "b": 1000, "c": 1.5}
    assert isinstance(_value("a: 10.0\n")["a"], int)


def test_a_duplicate_key_is_an_error_with_its_line():
    with pytest.raises(KubeYamlError) as err:
        _value("spec:\n  a: 1\n  b: 2\n  a: 3\n")
    assert (str(err.value), err.value.line) == ("duplicate key 'a'", 4)


def test_keys_that_read_alike_are_duplicates():
    """``on`` and ``true`` both reach the API server as the key "true"."""
    with pytest.raises(KubeYamlError, match="duplicate key 'true'"):
        _value("m: {on: 1, true: 2}\n")


def test_merge_keys_may_be_overridden():
    assert _value("base: &b {x: 1, z: 2}\nm:\n  <<: *b\n  x: 3\n")["m"] == {"x": 3, "z": 2}


def test_empty_documents_are_skipped_and_the_others_keep_their_index():
    docs = list(load_documents("# only a comment\n---\na: 1\n---\n---\nb: 2\n"))
    assert [(d.index, d.value) for d in docs] == [(0, {"a": 1}), (2, {"b": 2})]


_KEYS = st.text(min_size=1, max_size=12)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False, width=64)
    | st.text(max_size=20)
    | st.sampled_from(["y", "n", "on", "off", "3e-4", "0x1F", "1_000", "08", "~", "<<", "-"])
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, derandomize=True, database=None, deadline=None)
@given(_JSON.filter(lambda v: v is not None))
def test_what_dump_writes_reads_back_the_same(value: Any):
    (doc,) = load_documents(dump(value))
    assert _equal(doc.value, value)


def _equal(read: Any, written: Any) -> bool:
    if isinstance(written, float):
        return isinstance(read, (int, float)) and math.isclose(read, written, rel_tol=1e-15)
    if isinstance(written, dict):
        return read.keys() == written.keys() and all(_equal(read[k], written[k]) for k in written)
    if isinstance(written, list):
        return len(read) == len(written) and all(map(_equal, read, written))
    return type(read) is type(written) and read == written
