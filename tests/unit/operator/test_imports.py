"""The operator imports without Ray, torch or the official Kubernetes clients."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

BLOCKED = ("ray", "torch", "kubernetes", "kubernetes_asyncio")
BLOCK = f"import sys\nfor m in {BLOCKED!r}: sys.modules[m] = None\n"


def test_the_operator_imports_without_ray_torch_or_kubernetes_clients():
    code = BLOCK + (
        "import kubetrain_operator.handlers, kubetrain_operator.__main__\n"
        "from kubetrain_operator.config import OperatorConfig\n"
        "kubetrain_operator.handlers.build_registry(OperatorConfig())\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_operator_cli_shows_its_help():
    out = subprocess.run(
        [sys.executable, "-m", "kubetrain_operator", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0 and "--config" in out.stdout
