"""The name grammars of Kubernetes and of container images, said once: as regexes that a
JSON schema (a CRD, the chart's values schema) can carry, and as check functions whose
``ValueError`` names the grammar and the limit that was broken.

The patterns are for the API server and for Helm as much as for Python, so they keep to
the syntax that ECMAScript and RE2 share: no lookarounds, no named groups, no ``\\A``/``\\Z``,
no ``\\w`` (Unicode-wide in Python, ASCII elsewhere). A length limit on one part of a
string (the prefix of a label key, the name of an image) cannot be said in such a regex:
the schema then says the whole string's ``maxLength`` and the check function the part's.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
#: A label key: prefix, '/', name.
LABEL_KEY_MAX = DNS_SUBDOMAIN_MAX + 1 + QUALIFIED_NAME_MAX
#: docker/distribution's limit on an image's name (registry and path, without tag/digest).
IMAGE_NAME_MAX = 255
IMAGE_TAG_MAX = 128
#: The longest name, a tag, and a sha512 digest ('@sha512:' and 128 hex digits).
IMAGE_REFERENCE_MAX = IMAGE_NAME_MAX + 1 + IMAGE_TAG_MAX + len("@sha512:") + 128

_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*"
#: The name part of a qualified name; its 63 characters can be said here, so they are.
_QUALIFIED_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"

DNS_LABEL_PATTERN = rf"^{_DNS_LABEL}$"
DNS_SUBDOMAIN_PATTERN = rf"^{_DNS_SUBDOMAIN}$"
LABEL_KEY_PATTERN = rf"^(?:{_DNS_SUBDOMAIN}/)?{_QUALIFIED_NAME}$"
LABEL_VALUE_PATTERN = rf"^(?:{_QUALIFIED_NAME})?$"
EXTENDED_RESOURCE_PATTERN = rf"^{_DNS_SUBDOMAIN}/{_QUALIFIED_NAME}$"

# docker/distribution's reference grammar. One simplification: the registry host is
# lowercase, so that a first path component in capitals (``UPPER/case``) is refused rather
# than taken for a registry.
_HOST_COMPONENT = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_REGISTRY = rf"(?:{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
# distribution writes the separator ``[_.]|__|[-]*``; ``-*`` matching nothing only joins
# two runs of alphanumerics, so ``-+`` says the same without the nested repetition that
# makes a backtracking engine (Python's) take exponential time on a long bad name.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_NAME = rf"(?:{_REGISTRY}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE_PATTERN = rf"^({_IMAGE_NAME})(?::{_TAG})?(?:@{_DIGEST})?$"

_NAME_RULE = (
    f"at most {QUALIFIED_NAME_MAX} characters: alphanumerics, '-', '_' or '.', "
    "starting and ending with an alphanumeric"
)
_SUBDOMAIN_RULE = (
    f"at most {DNS_SUBDOMAIN_MAX} characters: lowercase alphanumerics, '-' or '.', "
    "each dot-separated part starting and ending with an alphanumeric"
)


def _refuse(value: str, grammar: str, rule: str) -> ValueError:
    return ValueError(f"{value!r} is not a valid {grammar} ({rule})")


def check_dns_label(value: str) -> str:
    """An RFC 1123 label: a namespace, a Service, a node pool of this project."""
    if len(value) > DNS_LABEL_MAX or not re.fullmatch(DNS_LABEL_PATTERN, value):
        raise _refuse(
            value,
            "DNS label",
            f"at most {DNS_LABEL_MAX} characters: lowercase alphanumerics or '-', "
            "starting and ending with an alphanumeric",
        )
    return value


def check_dns_subdomain(value: str) -> str:
    """An RFC 1123 subdomain: the name of most objects (Secrets, PVCs, ...)."""
    if len(value) > DNS_SUBDOMAIN_MAX or not re.fullmatch(DNS_SUBDOMAIN_PATTERN, value):
        raise _refuse(value, "DNS subdomain", _SUBDOMAIN_RULE)
    return value


def _check_qualified_name(value: str, grammar: str, *, prefix_required: bool) -> str:
    """A label key and an extended resource name share this: ``[prefix/]name``."""
    parts = value.split("/")
    if len(parts) > 2:
        raise _refuse(value, grammar, "at most one '/', between prefix and name")
    *prefix, name = parts
    if prefix_required and not prefix:
        raise _refuse(value, grammar, "a domain prefix and '/' before the name")
    if prefix and (
        len(prefix[0]) > DNS_SUBDOMAIN_MAX or not re.fullmatch(_DNS_SUBDOMAIN, prefix[0])
    ):
        raise _refuse(value, grammar, f"the prefix is a DNS subdomain of {_SUBDOMAIN_RULE}")
    if not re.fullmatch(_QUALIFIED_NAME, name):
        raise _refuse(value, grammar, f"the name is {_NAME_RULE}")
    return value


def check_label_key(value: str) -> str:
    """A label (or annotation, or node selector) key: ``[DNS subdomain '/']name``."""
    return _check_qualified_name(value, "label key", prefix_required=False)


def check_label_value(value: str) -> str:
    """A label value: empty, or a name of the qualified-name grammar."""
    if len(value) > LABEL_VALUE_MAX or not re.fullmatch(LABEL_VALUE_PATTERN, value):
        raise _refuse(value, "label value", f"empty or {_NAME_RULE}")
    return value


def check_extended_resource_name(value: str) -> str:
    """A resource a device plugin advertises (``nvidia.com/gpu``): a qualified name with a
    domain prefix outside ``kubernetes.io``, which Kubernetes keeps for its own resources."""
    _check_qualified_name(value, "extended resource name", prefix_required=True)
    domain = value.split("/", maxsplit=1)[0]
    if domain == "kubernetes.io" or domain.endswith(".kubernetes.io"):
        raise _refuse(value, "extended resource name", "a domain outside kubernetes.io")
    return value


def check_image_reference(value: str) -> str:
    """``[registry[:port]/]path[:tag][@digest]``, docker/distribution's reference grammar."""
    found = len(value) <= IMAGE_REFERENCE_MAX and re.fullmatch(IMAGE_REFERENCE_PATTERN, value)
    if not found:
        raise _refuse(
            value,
            "image reference",
            "[registry[:port]/]path[:tag][@digest]: lowercase path components separated "
            f"by '/', a tag of at most {IMAGE_TAG_MAX} characters, a digest 'algorithm:hex'",
        )
    if len(found.group(1)) > IMAGE_NAME_MAX:
        raise _refuse(
            value, "image reference", f"registry and path of at most {IMAGE_NAME_MAX} characters"
        )
    return value


def _schema(pattern: str, max_length: int) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": pattern, "maxLength": max_length})


DnsLabel = Annotated[
    str, AfterValidator(check_dns_label), _schema(DNS_LABEL_PATTERN, DNS_LABEL_MAX)
]
DnsSubdomain = Annotated[
    str, AfterValidator(check_dns_subdomain), _schema(DNS_SUBDOMAIN_PATTERN, DNS_SUBDOMAIN_MAX)
]
LabelKey = Annotated[
    str, AfterValidator(check_label_key), _schema(LABEL_KEY_PATTERN, LABEL_KEY_MAX)
]
LabelValue = Annotated[
    str, AfterValidator(check_label_value), _schema(LABEL_VALUE_PATTERN, LABEL_VALUE_MAX)
]
ExtendedResourceName = Annotated[
    str,
    AfterValidator(check_extended_resource_name),
    _schema(EXTENDED_RESOURCE_PATTERN, LABEL_KEY_MAX),
]
ImageReference = Annotated[
    str,
    AfterValidator(check_image_reference),
    _schema(IMAGE_REFERENCE_PATTERN, IMAGE_REFERENCE_MAX),
]
