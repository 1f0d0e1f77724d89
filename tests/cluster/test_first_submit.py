"""The first submit after an install: on a control plane of its own (the session's already
serves the CRD), ``helm install`` puts the chart's CRD in, and ``kubetrain submit`` runs the
moment it is Established. The API server serves the kind before server-side apply knows its
schema (it answered "Resource kind ... not found" for 3.5 s here); the client waits that out."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kube_session import localcluster
from operator_fixtures import pinned_helm

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_cluster(cluster_info, tmp_path):
    """An empty control plane (no CRDs), stopped at the end."""
    if cluster_info.external:
        pytest.skip("starts a control plane of its own; an external cluster has the CRD already")
    cluster = localcluster.LocalCluster(state_dir=tmp_path / "fresh", crds=None)
    info = cluster.up(timeout=90)
    try:
        yield info
    finally:
        cluster.down()


def test_submit_right_after_helm_install_goes_through(fresh_cluster):
    kubeconfig, kubectl = str(fresh_cluster.kubeconfig), str(fresh_cluster.kubectl)
    installed = subprocess.run(
        [str(pinned_helm()), f"--kubeconfig={kubeconfig}", "install", "kubetrain",
         str(REPO_ROOT / "charts" / "kubetrain"), "-n", "kubetrain-system", "--create-namespace"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    subprocess.run(
        [kubectl, f"--kubeconfig={kubeconfig}", "wait", "--for=condition=Established",
         "--timeout=60s", "crd/trainingjobs.kubetrain.io"],
        capture_output=True, text=True, timeout=90, check=True,
    )  # fmt: skip
    started = time.monotonic()
    submitted = subprocess.run(
        [sys.executable, "-m", "kubetrain.cli", "submit",
         str(REPO_ROOT / "examples" / "digits-cnn.yaml"), "-n", "default"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "KUBECONFIG": kubeconfig},
    )  # fmt: skip
    print(f"\nsubmitted {time.monotonic() - started:.1f} s after Established")
    assert submitted.returncode == 0, submitted.stderr
    assert "created" in submitted.stdout + submitted.stderr
    stored = subprocess.run(
        [kubectl, f"--kubeconfig={kubeconfig}", "get", "trainingjob", "digits-cnn", "-n",
         "default", "-o", "name"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert stored.stdout.strip() == "trainingjob.kubetrain.io/digits-cnn"
