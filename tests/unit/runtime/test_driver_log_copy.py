"""The driver's output is copied to the output location as it is printed."""

from __future__ import annotations

import sys

import pytest

from kubetrain_runtime.driver_log import LOG_PATH, copied_to

pytestmark = pytest.mark.unit


def test_stdout_and_stderr_are_copied_line_by_line(tmp_path, capsys):
    with copied_to(str(tmp_path)) as uri:
        print("reading data")
        print("a warning", file=sys.stderr)
        assert (tmp_path / LOG_PATH).read_text() == "reading data\na warning\n", "flushed per line"
    assert uri == str(tmp_path / LOG_PATH)
    print("after")
    assert (tmp_path / LOG_PATH).read_text() == "reading data\na warning\n"
    out = capsys.readouterr()
    assert out.out == "reading data\nafter\n" and out.err == "a warning\n"


def test_an_unwritable_location_only_warns(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with copied_to(str(blocker / "sub")) as uri:
        print("still printed")
    assert uri is None
    out = capsys.readouterr()
    assert "still printed" in out.out and "driver log is not copied" in out.err
