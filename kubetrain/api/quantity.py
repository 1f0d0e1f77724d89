"""Kubernetes resource quantities, in apimachinery's grammar, as numbers for both sides: the
runtime sizes Ray workers from them and the operator sizes Ray pods. Kept in the API package
so that the operator need not import the runtime.

apimachinery's grammar (``k8s.io/apimachinery/pkg/api/resource``)::

    quantity ::= sign? number suffix
    number   ::= digits | digits '.' digits? | '.' digits
    suffix   ::= binarySI | decimalSI | ('e' | 'E') sign? digits
    binarySI ::= Ki | Mi | Gi | Ti | Pi | Ei
    decimalSI ::= n | u | m | '' | k | M | G | T | P | E
"""

from __future__ import annotations

import math
import re

from kubetrain.errors import SpecError

_NUMBER = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)"
_SUFFIX = r"([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]+)?"
#: Every quantity apimachinery parses.
QUANTITY_PATTERN = rf"^[-+]?{_NUMBER}{_SUFFIX}$"
#: Resources cannot be negative: the same grammar without the minus sign.
POSITIVE_QUANTITY_PATTERN = rf"^[+]?{_NUMBER}{_SUFFIX}$"
_QUANTITY = re.compile(rf"^(?P<number>[-+]?{_NUMBER})(?P<suffix>{_SUFFIX})$")

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
}


class QuantityError(SpecError, ValueError):
    """A value that is not a Kubernetes quantity; a ValueError too, so that pydantic reports
    it as the field's error."""


def parse_quantity(value: str | int | float, field: str | None = None) -> float:
    """A Kubernetes quantity as a number (``500m`` → 0.5, ``2Gi`` → 2147483648; inf beyond
    floats), or a QuantityError that names ``field``."""
    text = str(value)
    match = _QUANTITY.match(text)
    if isinstance(value, bool) or not match:
        raise QuantityError(
            f"{text!r} is not a Kubernetes quantity (for example 500m, 2, 1.5, 4Gi, 1e3)",
            field=field,
        )
    number, suffix = float(match["number"]), match["suffix"]
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        try:
            return number * 10.0 ** int(suffix[1:])
        except OverflowError:  # apimachinery holds it; a float cannot
            return math.inf
    return number * (_BINARY.get(suffix) or _DECIMAL[suffix])
