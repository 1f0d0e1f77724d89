"""The name grammars: known cases from the Kubernetes and distribution docs, the check
functions agreeing with the patterns that schemas carry, and patterns an API server and
Helm can run."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from kubetrain.api import grammar
from kubetrain.api.grammar import (
    DnsLabel,
    DnsSubdomain,
    ImageReference,
    LabelKey,
    LabelValue,
    check_dns_label,
    check_dns_subdomain,
    check_extended_resource_name,
    check_image_reference,
    check_label_key,
    check_label_value,
)

pytestmark = pytest.mark.unit

SHA256 = "sha256:" + "0123456789abcdef" * 4


def accepts(check: Callable[[str], str], value: str) -> bool:
    try:
        return check(value) == value
    except ValueError:
        return False


@pytest.mark.parametrize(
    "key",
    ["kubernetes.io/hostname", "app", "a", "my_key.v-1", "example.com/Z9", "a.b.c/" + "n" * 63],
)
def test_good_label_keys(key: str):
    assert check_label_key(key) == key


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("-a", "the name is at most 63"),
        ("a-", "the name"),
        ("a/b/c", "at most one '/'"),
        ("n" * 64, "at most 63"),
        ("example.com/", "the name"),
        ("/a", "the prefix is a DNS subdomain"),
        ("Example.com/a", "the prefix"),
        ("x" * 254 + "/a", "at most 253"),
        ("a b", "the name"),
        ("", "the name"),
    ],
)
def test_bad_label_keys_name_the_grammar_and_the_part(key: str, words: str):
    with pytest.raises(ValueError, match="is not a valid label key") as caught:
        check_label_key(key)
    assert words in str(caught.value)


@pytest.mark.parametrize("value", ["", "a", "A-b_c.9", "v" * 63])
def test_good_label_values(value: str):
    assert check_label_value(value) == value


@pytest.mark.parametrize("value", ["-a", "a_", "v" * 64, "a/b", "a b"])
def test_bad_label_values(value: str):
    with pytest.raises(ValueError, match=r"not a valid label value .*at most 63"):
        check_label_value(value)


@pytest.mark.parametrize("name", ["a", "my-pvc", "a.b-c.d", "0" * 253])
def test_good_dns_subdomains(name: str):
    assert check_dns_subdomain(name) == name


@pytest.mark.parametrize("name", ["", "A", "a..b", "-a", "a.", "a_b", "0" * 254])
def test_bad_dns_subdomains(name: str):
    with pytest.raises(ValueError, match=r"not a valid DNS subdomain .*at most 253"):
        check_dns_subdomain(name)


@pytest.mark.parametrize("name", ["a", "a100", "gpu-pool", "l" * 63])
def test_good_dns_labels(name: str):
    assert check_dns_label(name) == name


@pytest.mark.parametrize("name", ["", "a.b", "A100", "-a", "a-", "l" * 64])
def test_bad_dns_labels(name: str):
    with pytest.raises(ValueError, match=r"not a valid DNS label .*at most 63"):
        check_dns_label(name)


@pytest.mark.parametrize("name", ["nvidia.com/gpu", "amd.com/gpu", "example.org/fpga_x"])
def test_good_extended_resource_names(name: str):
    assert check_extended_resource_name(name) == name


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("gpu", "a domain prefix"),
        ("kubernetes.io/gpu", "outside kubernetes.io"),
        ("node.kubernetes.io/x", "outside kubernetes.io"),
        ("nvidia.com/", "the name"),
        ("a/b/c", "at most one '/'"),
    ],
)
def test_bad_extended_resource_names(name: str, words: str):
    with pytest.raises(ValueError, match="not a valid extended resource name") as caught:
        check_extended_resource_name(name)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "busybox:1.36",
        "registry.local:5000/team/img:1.0",
        f"img@{SHA256}",
        f"ghcr.io/org/app:v1.2_rc-3@{SHA256}",
        "localhost:5000/a__b/c.d/e--f",
        "[::1]:5000/img",
        "kubetrain/runtime:0.1.0-cuda",
        "a:" + "T" * 128,
    ],
)
def test_good_image_references(image: str):
    assert check_image_reference(image) == image


@pytest.mark.parametrize(
    "image",
    [
        "UPPER/case",
        "Busybox",
        "a b",
        "img:tag:extra",
        ":latest",
        "img:",
        "img@sha256:abc",
        "img@" + "0" * 64,
        "a:" + "T" * 129,
        "a:-tag",
        "team//img",
        "img/",
        "a___b",
        "",
        "registry:port/img",
        "/".join(["p" * 60] * 5),
    ],
)
def test_bad_image_references(image: str):
    with pytest.raises(ValueError, match="is not a valid image reference"):
        check_image_reference(image)


def test_a_long_bad_image_name_is_refused_at_once():
    """A backtracking regex engine could take exponential time on the separator rule."""
    assert not accepts(check_image_reference, "a" * 5000 + "!")
    assert not accepts(check_image_reference, "a-" * 100 + "!")


# --------------------------------------------------------------- patterns vs checks

ALPHABET = "aZ09-_./:@"


def within_label_key_limits(value: str) -> bool:
    prefix, _, name = value.rpartition("/")
    return len(prefix) <= 253 and len(name) <= 63


def outside_kubernetes_io(value: str) -> bool:
    domain = value.partition("/")[0]
    return within_label_key_limits(value) and not re.fullmatch(r"(.*\.)?kubernetes\.io", domain)


def image_name_within_limit(value: str) -> bool:
    """distribution's 255 characters count registry and path, not tag and digest."""
    found = re.fullmatch(grammar.IMAGE_REFERENCE_PATTERN, value)
    return found is not None and len(found.group(1)) <= 255


GRAMMARS = [
    (grammar.DNS_LABEL_PATTERN, grammar.DNS_LABEL_MAX, check_dns_label, lambda v: True),
    (grammar.DNS_SUBDOMAIN_PATTERN, grammar.DNS_SUBDOMAIN_MAX, check_dns_subdomain, lambda v: True),
    (grammar.LABEL_KEY_PATTERN, grammar.LABEL_KEY_MAX, check_label_key, within_label_key_limits),
    (grammar.LABEL_VALUE_PATTERN, grammar.LABEL_VALUE_MAX, check_label_value, lambda v: True),
    (
        grammar.EXTENDED_RESOURCE_PATTERN,
        grammar.LABEL_KEY_MAX,
        check_extended_resource_name,
        outside_kubernetes_io,
    ),
    (
        grammar.IMAGE_REFERENCE_PATTERN,
        grammar.IMAGE_REFERENCE_MAX,
        check_image_reference,
        image_name_within_limit,
    ),
]
IDS = ["dns-label", "dns-subdomain", "label-key", "label-value", "extended-resource", "image"]


@pytest.mark.parametrize(("pattern", "max_length", "check", "part_limits"), GRAMMARS, ids=IDS)
@given(data=st.data())
def test_every_string_of_the_pattern_within_the_limits_is_accepted(
    pattern: str, max_length: int, check: Callable[[str], str], part_limits, data: st.DataObject
):
    value = data.draw(st.from_regex(pattern, fullmatch=True))
    assume(len(value) <= max_length and part_limits(value))
    assert check(value) == value


@pytest.mark.parametrize(("pattern", "max_length", "check", "part_limits"), GRAMMARS, ids=IDS)
@given(data=st.data())
def test_the_check_never_accepts_what_the_schema_refuses(
    pattern: str, max_length: int, check: Callable[[str], str], part_limits, data: st.DataObject
):
    """The schema is the looser of the two (it cannot say every part's limit), never the
    stricter: an object the API server stores is never one the operator would refuse for
    a reason the schema could have said."""
    value = data.draw(st.text(ALPHABET, max_size=24) | st.from_regex(pattern, fullmatch=True))
    if accepts(check, value):
        assert re.fullmatch(pattern, value) and len(value) <= max_length
    elif re.fullmatch(pattern, value) and len(value) <= max_length:
        assert not part_limits(value), f"{value!r} fits the pattern and every limit"


@pytest.mark.parametrize(("pattern", "max_length", "check", "part_limits"), GRAMMARS, ids=IDS)
def test_patterns_keep_to_syntax_that_ecmascript_and_re2_share(
    pattern: str, max_length: int, check, part_limits
):
    assert pattern.startswith("^") and pattern.endswith("$")
    for construct in ("(?=", "(?!", "(?<", "(?P", "\\A", "\\Z", "\\w", "\\d", "\\s", "\\b"):
        assert construct not in pattern
    assert max_length > 0


# ------------------------------------------------------------------ pydantic types

ALIASES = [
    (DnsLabel, grammar.DNS_LABEL_PATTERN, grammar.DNS_LABEL_MAX, "a100", "A100"),
    (DnsSubdomain, grammar.DNS_SUBDOMAIN_PATTERN, grammar.DNS_SUBDOMAIN_MAX, "a.b", "a_b"),
    (LabelKey, grammar.LABEL_KEY_PATTERN, grammar.LABEL_KEY_MAX, "k8s.io/x", "a/b/c"),
    (LabelValue, grammar.LABEL_VALUE_PATTERN, grammar.LABEL_VALUE_MAX, "", "-"),
    (ImageReference, grammar.IMAGE_REFERENCE_PATTERN, grammar.IMAGE_REFERENCE_MAX, "a:1", "a:"),
]


@pytest.mark.parametrize(("alias", "pattern", "max_length", "good", "bad"), ALIASES)
def test_each_alias_validates_and_carries_its_pattern_into_json_schema(
    alias, pattern: str, max_length: int, good: str, bad: str
):
    adapter = TypeAdapter(alias)
    assert adapter.json_schema() == {"type": "string", "pattern": pattern, "maxLength": max_length}
    assert adapter.validate_python(good) == good
    with pytest.raises(ValidationError, match="is not a valid"):
        adapter.validate_python(bad)


def test_a_model_field_keeps_its_description_next_to_the_pattern():
    class Pool(BaseModel):
        name: DnsLabel = Field(description="The pool.")
        selector: dict[LabelKey, LabelValue] = {}

    schema = Pool.model_json_schema()["properties"]
    assert schema["name"]["pattern"] == grammar.DNS_LABEL_PATTERN
    assert schema["name"]["description"] == "The pool."
    with pytest.raises(ValidationError) as caught:
        Pool.model_validate({"name": "ok", "selector": {"a/b/c": "x"}})
    assert "label key" in str(caught.value)
