"""The client reads YAML as kubectl does: for every tricky scalar and key, ``kubeyaml`` gives
the JSON that the real kubectl would send (``kubectl create --dry-run=client -o json``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubetrain.api.kubeyaml import KubeYamlError, load_documents

pytestmark = pytest.mark.cluster

#: Plain (unquoted) scalars where YAML readers disagree, and a few where they do not.
SCALARS = [
    *[
        "y",
        "Y",
        "yes",
        "Yes",
        "YES",
        "n",
        "N",
        "no",
        "No",
        "NO",
        "on",
        "On",
        "ON",
        "off",
        "Off",
        "OFF",
        "true",
        "True",
        "TRUE",
        "false",
        "False",
        "FALSE",
    ],
    *["yEs", "oN", "tRUE", "nO"],
    *["~", "null", "Null", "NULL"],
    *[
        "3e-4",
        "1e3",
        "1E3",
        "1e+3",
        "10.0",
        "1.5",
        ".5",
        "5.",
        "+1",
        "-1",
        "-0",
        "+0.5",
        "-.5",
        "08",
        "09.5",
        "0.0",
    ],
    *[
        "1_000",
        "1_0.5",
        "0x1F",
        "0X1f",
        "0o17",
        "0b101",
        "0777",
        "-0x10",
        "0x",
        "0b",
        "12e",
        "1e",
        "1.2.3",
    ],
    *[
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551616",
        "1e21",
        "1e20",
        "123456789012345678901",
    ],
    *[
        "2001-12-14",
        "2001-12-14T21:59:43.10-05:00",
        "1:20",
        "12:30:45",
        "_1",
        "+-1",
        ".inf?",
        "0.1e2",
        "3e-400",
    ],
    "hello world",
    "colon:inside",
]
#: Keys that a YAML 1.1 reader may turn into booleans or numbers (JSON keys are strings).
KEYS = ["y", "off", "1.5", "0x10", "017", "1e3", "-0"]


def _document(pairs: list[tuple[str, str]]) -> str:
    lines = "\n".join(f"  {key}: {value}" for key, value in pairs)
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\nprobe:\n{lines}\n"


def _kubectl_json(kubectl: Any, text: str) -> dict[str, Any]:
    out = kubectl(
        "create", "--dry-run=client", "--validate=false", "-o", "json", "-f", "-", stdin=text
    ).stdout
    return json.loads(out)


def _ours(text: str) -> dict[str, Any]:
    (doc,) = load_documents(text)
    return doc.value


def test_plain_scalars_read_as_kubectl_reads_them(kubectl: Any) -> None:
    pairs = [(f"k{i}", value) for i, value in enumerate(SCALARS)]
    text = _document(pairs)
    theirs, ours = _kubectl_json(kubectl, text)["probe"], _ours(text)["probe"]
    wrong = {
        value: (ours[key], theirs[key])
        for (key, value) in pairs
        if json.dumps(ours[key]) != json.dumps(theirs[key])
    }
    assert wrong == {}, "scalar → (kubetrain, kubectl)"


def test_keys_read_as_kubectl_reads_them(kubectl: Any) -> None:
    text = _document([(key, f"v{i}") for i, key in enumerate(KEYS)])
    assert _ours(text)["probe"] == _kubectl_json(kubectl, text)["probe"]


@pytest.mark.parametrize(
    ("key", "value"), [("x", ".inf"), ("x", "-.Inf"), ("x", ".nan"), ("null", "v"), ("~", "v")]
)
def test_what_json_cannot_hold_is_refused_by_both(kubectl: Any, key: str, value: str) -> None:
    text = _document([(key, value)])
    assert (
        kubectl(
            "create", "--dry-run=client", "-o", "json", "-f", "-", stdin=text, check=False
        ).returncode
        != 0
    )
    with pytest.raises(KubeYamlError, match="cannot be"):
        _ours(text)


def test_kubectl_silently_keeps_one_of_two_duplicate_keys(kubectl: Any) -> None:
    """The reason the client refuses them: kubectl would send half of what was written."""
    text = _document([("epochs", "10"), ("epochs", "20")])
    sent = _kubectl_json(kubectl, text)["probe"]
    assert list(sent) == ["epochs"]
    with pytest.raises(KubeYamlError, match="duplicate key 'epochs'"):
        _ours(text)
