"""The operator's config: file, command-line overrides, one-line errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubetrain.errors import UserError
from kubetrain_operator.__main__ import main
from kubetrain_operator.config import load_config

pytestmark = pytest.mark.unit


def test_overrides_apply_over_the_file(tmp_path: Path):
    file = tmp_path / "config.yaml"
    file.write_text("namespaces: [team-a]\nfollowIntervalSeconds: 2\n")
    config = load_config(file, {"namespaces": ["team-b"], "peeringName": "kubetrain"})
    assert config.namespaces == ["team-b"]
    assert (config.followIntervalSeconds, config.peeringName) == (2, "kubetrain")


@pytest.mark.parametrize("namespace", ["team-*", "Team-A", "-a"])
def test_namespaces_are_names_not_patterns(namespace: str):
    """Each watched namespace gets its own Role and pod watch: a pattern cannot."""
    with pytest.raises(UserError, match=r"namespaces\[0\]"):
        load_config(None, {"namespaces": [namespace]})


def test_a_missing_explicit_file_is_named(tmp_path: Path):
    with pytest.raises(UserError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(caught.value)


def test_the_process_refuses_a_bad_flag_with_one_line(capsys: pytest.CaptureFixture[str]):
    assert main(["-n", "team-*", "--liveness", ""]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "namespaces[0]" in err and "\n" not in err
