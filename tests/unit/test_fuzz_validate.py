"""Fuzz ``kubetrain validate`` in-process: documents from the CRD schema, mutated examples
and raw YAML-ish bytes. Whatever the file holds, the command exits 0 or 2, never raises or
prints a traceback, prints one line per error that names the file (and document) and the
field, and gives the same verdict twice.

The four targets share ``KUBETRAIN_FUZZ_EXAMPLES`` documents (default 10000, a quarter
each), derandomized: the same documents on every run and machine, no example database.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzz_strategies import (
    crd_schema,
    fuzz_settings,
    mutated_manifests,
    object_meta,
    plausible_hints,
    raw_yaml_texts,
    schema_errors,
    trainingjobs,
)
from hypothesis import given
from hypothesis import strategies as st

from kubetrain.cli import main

pytestmark = pytest.mark.unit

FUZZ = fuzz_settings(targets=4)
#: Exit codes of ``validate``: 0 all valid, 2 any user error (an invalid manifest included).
EXIT_OK, EXIT_USER_ERROR = 0, 2

#: After the file name: nothing, ``[index]``, ``(document N, line L)`` or ``:line``; then
#: ": " and the message.
_WHERE = r"(\[\d+\]| \(document \d+, line \d+\)|:\d+)?: "


def run_validate(*paths: Path) -> tuple[int, str, str]:
    """``kubetrain validate PATH...`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", *map(str, paths)])
    return code, out.getvalue(), err.getvalue()


def _halves(text: str) -> tuple[str, str]:
    lines = text.splitlines(keepends=True)
    middle = len(lines) // 2
    return "".join(lines[:middle]), "".join(lines[middle:])


def assert_well_behaved(path: Path) -> tuple[int, str, str]:
    """The contract of ``validate`` for any file content. The file is given twice in one
    run: both verdicts must be the same (deterministic, and nothing carried over)."""
    code, out_twice, err_twice = run_validate(path, path)
    (out, out_again), (err, err_again) = _halves(out_twice), _halves(err_twice)
    assert (out, err) == (out_again, err_again), "the same file gave another verdict"
    verdict = code, out, err
    assert code in (EXIT_OK, EXIT_USER_ERROR), verdict
    assert "Traceback" not in out + err, verdict
    line_start = re.compile(rf"^(error: )?{re.escape(str(path))}{_WHERE}(?P<message>.*)$")
    for line in err.splitlines():
        match = line_start.match(line)
        assert match, f"an error line that does not name the file: {line!r}"
        message = match["message"]
        assert message.strip(), f"an error without a message: {line!r}"
        assert not message.startswith(": "), f"an error with an empty field path: {line!r}"
    if code == EXIT_OK:
        assert err == "", verdict
        assert all(re.match(rf"^{re.escape(str(path))}{_WHERE}ok \(", x) for x in out.splitlines())
    else:
        assert err.strip(), f"exit {code} without saying why"
    return verdict


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file the examples overwrite in turn."""
    return tmp_path_factory.mktemp("fuzz") / "job.yaml"


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: half the time


def write_yaml(path: Path, doc: Any) -> Path:
    text = yaml.dump(doc, Dumper=_DUMPER, allow_unicode=True, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


_SCHEMA_META = object_meta(name_max=253, stored=False)
#: What the API server's schema admits (CEL aside), half of it shaped to pass the CEL rules.
SCHEMA_DOCUMENTS = st.one_of(
    trainingjobs({"metadata": _SCHEMA_META}),
    trainingjobs(plausible_hints(metadata=_SCHEMA_META)),
)


@FUZZ
@given(doc=SCHEMA_DOCUMENTS)
def test_validate_fuzz_schema_documents(manifest: Path, doc: dict[str, Any]) -> None:
    assert_well_behaved(write_yaml(manifest, doc))


@FUZZ
@given(doc=mutated_manifests())
def test_validate_fuzz_mutated_examples(manifest: Path, doc: Any) -> None:
    assert_well_behaved(write_yaml(manifest, doc))


@FUZZ
@given(data=raw_yaml_texts())
def test_validate_fuzz_raw_bytes(manifest: Path, data: bytes) -> None:
    manifest.write_bytes(data)
    assert_well_behaved(manifest)


def test_an_invalid_manifest_exits_2(manifest: Path) -> None:
    """Not a fuzz: pins the exit code the fuzz accepts for invalid manifests."""
    code, _, err = run_validate(write_yaml(manifest, {"kind": "TrainingJob"}))
    assert code == EXIT_USER_ERROR and err


def _accepted_by_the_api_server(path: Path, doc: Any) -> None:
    """What ``validate`` calls ok, the API server's structural schema admits. The file is
    JSON, so that what kubectl would send is plain (no YAML dialect in between)."""
    text = json.dumps(doc, allow_nan=False)
    path.write_text(text, encoding="utf-8")
    code, out, _ = assert_well_behaved(path)
    if code == EXIT_OK:
        assert schema_errors(json.loads(text), crd_schema()) == [], out


def _json_safe(doc: Any) -> bool:
    try:
        json.dumps(doc, allow_nan=False)
    except (ValueError, TypeError):
        return False
    return True


@FUZZ
@given(doc=mutated_manifests().filter(_json_safe))
def test_validate_fuzz_ok_means_the_api_server_stores_it(manifest: Path, doc: Any) -> None:
    _accepted_by_the_api_server(manifest, doc)


# ------------------------------------------------------------- regressions

_EXAMPLE = (Path(__file__).resolve().parents[2] / "examples" / "sine-rnn.yaml").read_text()


def _with_spec_key(key: str, value: str = "1") -> bytes:
    """The sine-rnn example with ``key: value`` added to its spec."""
    return (_EXAMPLE + f"  {json.dumps(key)}: {value}\n").encode()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            b"\xff",
            id="invalid-utf8",
        ),
        pytest.param(
            b"\x08",
            id="control-character",
        ),
        pytest.param(
            _with_spec_key("a\nb"),
            id="line-break-in-a-key",
        ),
        pytest.param(
            b"apiVersion: kubetrain.io/v1alpha1\nkind: TrainingJob\nmetadata: {name: big}\n"
            b"spec: {data: {source: {builtin: {name: iris}}, label: target}, model: {type: mlp},"
            b" training: {resourcesPerWorker: {cpu: '1e400'}}}\n",
            id="quantity-beyond-floats",  # fixed in kubetrain/api (9d95f40)
        ),
        pytest.param(
            b"&a [*a]\n",
            id="recursive-alias",
        ),
        pytest.param(_EXAMPLE.encode(), id="valid"),
        pytest.param(b"---\n# only a comment\n", id="no-document"),
    ],
)
def test_validate_regressions(manifest: Path, data: bytes) -> None:
    manifest.write_bytes(data)
    assert_well_behaved(manifest)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("epoch", id="plain"),
        pytest.param(
            "str",
            id="named-str",
        ),
        pytest.param(
            "x[0]",
            id="with-bracket",
        ),
    ],
)
def test_validate_names_an_unknown_field(manifest: Path, key: str) -> None:
    manifest.write_bytes(_with_spec_key(key))
    code, _, err = assert_well_behaved(manifest)
    assert code == EXIT_USER_ERROR
    assert f"spec.{key}: unknown field" in err
