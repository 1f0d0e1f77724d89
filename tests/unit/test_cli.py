"""The CLI's exit codes and messages: one clear line on errors, never a traceback."""

from __future__ import annotations

import re
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
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "spec.training.epochs: Input should be greater than or equal to 1" in err


def test_validate_missing_file_is_one_line(capsys):
    assert main(["validate", "no/such/file.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == "no/such/file.yaml: file not found\n"


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
    assert main(["validate", str(both)]) == 2
    captured = capsys.readouterr()
    assert re.search(rf"{both} \(document 1, line \d\): ok \(sine-rnn, rnn\)", captured.out)
    second = re.search(
        rf"{both} \(document 2, line (\d+)\): spec.training.optimizer.name", captured.err
    )
    assert second and int(second[1]) > good.count("\n")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n---\n"])
def test_validate_refuses_a_file_without_a_manifest(tmp_path: Path, capsys, text: str):
    empty = tmp_path / "empty.yaml"
    empty.write_text(text)
    assert main(["validate", str(empty)]) == 2
    assert (
        capsys.readouterr().err
        == f"{empty}: no manifest in this file (it is empty or only comments)\n"
    )


def test_validate_refuses_a_duplicate_key_with_its_line(tmp_path: Path, capsys):
    text = (ROOT / "examples" / "iris-csv-mlp.yaml").read_text()
    twice = tmp_path / "twice.yaml"
    twice.write_text(text + "spec:\n  data: {}\n")
    assert main(["validate", str(twice)]) == 2
    line = text.count("\n") + 1
    assert capsys.readouterr().err == f"{twice}:{line}: not valid YAML: duplicate key 'spec'\n"


def test_validate_reads_yaml_as_kubectl_does(tmp_path: Path, capsys):
    """``3e-4`` is a number and ``on`` a boolean for kubectl; PyYAML reads both as strings."""
    text = (ROOT / "examples" / "iris-csv-mlp.yaml").read_text()
    job = tmp_path / "job.yaml"
    job.write_text(text.replace("learningRate: 0.003", "learningRate: 3e-4"))
    assert "3e-4" in job.read_text()
    assert main(["validate", str(job)]) == 0
    job.write_text(text.replace("dropNulls: true", "dropNulls: on"))
    assert "dropNulls: on" in job.read_text()
    assert main(["validate", str(job)]) == 0
    job.write_text(text.replace("dropNulls: true", "dropNulls: 'on'"))
    assert main(["validate", str(job)]) == 2
    assert (
        "spec.data.cleaning.dropNulls: Input should be a valid boolean" in capsys.readouterr().err
    )


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
