"""kind cannot run on this project's machines, so its path is checked statically: the script
and the hosted workflow name only files, build targets, commands and settings that exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from kube_session import localcluster

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
KIND_SH = ROOT / "e2e" / "kind.sh"
WORKFLOW = ROOT / ".github" / "workflows" / "e2e-kind.yaml"
E2E_CONFTEST = ROOT / "tests" / "e2e" / "conftest.py"


def _repo_paths(text: str) -> set[str]:
    """Words that look like paths into the repository (a folder we have, then more); image
    references (``kubetrain/operator:0.1.0``) are not paths."""
    tops = "|".join(re.escape(p.name) for p in ROOT.iterdir() if not p.name.startswith("."))
    found = re.findall(rf"(?<![\w/.$-])(?:\./)?((?:{tops})(?:/[\w.-]+)*)(:?)", text)
    return {path for path, colon in found if not colon}


def test_the_script_is_valid_bash_and_names_existing_files():
    subprocess.run(["bash", "-n", str(KIND_SH)], check=True)
    paths = _repo_paths(KIND_SH.read_text())
    assert {"operator/Dockerfile", "runtime/Dockerfile", "scripts/test.sh"} <= paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert missing == []


def test_the_workflow_runs_existing_scripts_and_build_targets():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = workflow["jobs"]["e2e-kind"]["steps"]
    runs = "\n".join(step.get("run", "") for step in steps)
    assert "e2e/kind.sh" in runs
    for path in _repo_paths(runs):
        assert (ROOT / path).exists(), path
    for step in steps:
        for value in (step.get("with") or {}).values():
            if isinstance(value, str) and "/" in value and not value.startswith("http"):
                assert (ROOT / value).exists(), value
    for targets in re.findall(r"e2e/build-tools\.sh ([\w ]+?)(?: \||$)", runs, re.M):
        # --dir validates the tool names without building anything
        subprocess.run(["bash", str(ROOT / "e2e/build-tools.sh"), *targets.split(), "--dir"],
                       check=True, capture_output=True)  # fmt: skip
    subcommands = set(re.findall(r"^\s+(\w+)\)", KIND_SH.read_text(), re.M))
    for used in re.findall(r"e2e/kind\.sh (\w+)", runs):
        assert used in subcommands, used


def test_the_kind_pools_are_the_local_clusters():
    labels = set(re.findall(r"kubetrain\.io/pool: (\w+)", KIND_SH.read_text()))
    assert labels == {pool.name for pool in localcluster.NODE_POOLS}


def test_the_settings_it_hands_the_tests_are_read_by_them():
    handed = set(re.findall(r"(KUBETRAIN_\w+)=\$", KIND_SH.read_text()))
    assert handed >= {"KUBETRAIN_TEST_KUBECONFIG", "KUBETRAIN_E2E_OPERATOR_IMAGE",
                      "KUBETRAIN_E2E_RUNTIME_IMAGE"}  # fmt: skip
    read = E2E_CONFTEST.read_text() + (ROOT / "tests" / "kube_session.py").read_text()
    read += (ROOT / "scripts" / "test.sh").read_text()
    for name in handed:
        assert name in read, name
