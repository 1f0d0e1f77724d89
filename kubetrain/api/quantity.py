"""Kubernetes resource quantities as numbers, for both sides: the runtime sizes Ray
workers from them and the operator sizes Ray pods. Kept in the API package so that the
operator need not import the runtime."""

from __future__ import annotations

import re

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
_QUANTITY = re.compile(r"^\+?(?P<number>[0-9.]+)(?P<suffix>[A-Za-z]*)(?P<exp>[-+]?[0-9]*)$")


def parse_quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number: ``500m`` → 0.5, ``2Gi`` → 2147483648."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix, exp = float(match["number"]), match["suffix"], match["exp"]
    if suffix in ("e", "E") and exp:
        return number * 10 ** int(exp)
    if exp:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    raise ValueError(f"{text!r} has an unknown suffix {suffix!r}")
