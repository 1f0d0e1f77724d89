"""The CLI's exit codes and messages: one clear line on errors, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kubetrain import __version__
from kubetrain.cli import main

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_validate_accepts_all_examples(capsys):
    files = [str(p) for p in sorted((ROOT / "examples").glob("*.yaml"))]
    assert main(["validate", *files]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok (") == len(files)


def test_validate_reports_each_error_with_its_field(capsys):
    bad = ROOT / "examples" / "invalid" / "zero-epochs.yaml"
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "spec.training.epochs: Input should be greater than or equal to 1" in err


def test_validate_missing_file_is_one_line(capsys):
    assert main(["validate", "no/such/file.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == "error: no/such/file.yaml: file not found\n"


def test_validate_broken_yaml(tmp_path: Path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    assert main(["validate", str(broken)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_validate_multi_document_names_the_document(tmp_path: Path, capsys):
    good = (ROOT / "examples" / "sine-rnn.yaml").read_text()
    bad = (ROOT / "examples" / "invalid" / "bad-optimizer.yaml").read_text()
    both = tmp_path / "both.yaml"
    both.write_text(good + "\n---\n" + bad)
    assert main(["validate", str(both)]) == 1
    captured = capsys.readouterr()
    assert f"{both}: ok (sine-rnn, rnn)" in captured.out
    assert f"{both}[1]: spec.training.optimizer.name" in captured.err


def test_run_rejects_an_invalid_manifest_before_starting_anything(capsys):
    bad = ROOT / "examples" / "invalid" / "unknown-field.yaml"
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "spec.training.epoch: unknown field" in err
    assert err.count("\n") == 1


def test_crd_command_prints_the_committed_crd(capsys):
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == (ROOT / "crds" / "kubetrain.io_trainingjobs.yaml").read_text()


def test_console_script_version_and_usage_errors():
    exe = [sys.executable, "-m", "kubetrain.cli"]
    version = subprocess.run([*exe, "--version"], capture_output=True, text=True, check=False)
    assert version.returncode == 0 and version.stdout.strip() == f"kubetrain {__version__}"
    usage = subprocess.run([*exe, "frobnicate"], capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert "invalid choice" in usage.stderr


def test_operator_subcommand_forwards_its_options(capsys):
    assert main(["operator", "--config", "/no/such/operator.yaml"]) == 2
    assert "operator config file not found" in capsys.readouterr().err
