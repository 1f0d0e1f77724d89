"""Fixtures for the ``e2e`` tier: the full loop with real pods.

The session's control plane (``tests/kube_session.py``) gets a real kubelet node beside the
kwok pools when e2e tests are selected. On it, this tier imports the operator and runtime
images (built without Docker by ``e2e/build-images.sh``, cached by the hash of their inputs),
installs the chart with Helm, with the operator running as a pod from its image, and gives
every test a namespace under the restricted Pod Security Standard with a PersistentVolumeClaim
for the jobs' outputs. Tests then act as a cluster user does: ``kubectl`` and ``helm`` only.

With ``KUBETRAIN_TEST_KUBECONFIG`` (kind, say) nothing is built or imported here: the images
named by ``KUBETRAIN_E2E_OPERATOR_IMAGE`` and ``KUBETRAIN_E2E_RUNTIME_IMAGE`` must already be
on the nodes (``e2e/kind.sh`` loads them), and the claim uses the default StorageClass.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_support import (
    OUTPUT_CLAIM,
    READER,
    RELEASE,
    RELEASE_NAMESPACE,
    RESTRICTED,
    Kubectl,
    Workspace,
)
from kube_session import localcluster

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "kubetrain"
#: The real node's labels and taint (``e2e/localcluster.py``): Ray pods of pool ``cpu`` go
#: there; the kwok GPU pools stay simulated.
REAL_NODE_SELECTOR = {localcluster.POOL_LABEL: localcluster.REAL_POOL}
REAL_NODE_TOLERATION = {"key": localcluster.REAL_NODE_LABEL, "operator": "Exists"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@dataclass(frozen=True)
class Images:
    operator: str
    runtime: str


def _build_and_import(cluster: Any) -> Images:
    """Build (or reuse) both images and import those whose digest the node lacks."""
    script = REPO_ROOT / "e2e" / "build-images.sh"
    out = subprocess.run(
        ["bash", str(script), "operator", "runtime"], stdout=subprocess.PIPE, text=True, check=False
    )
    if out.returncode != 0:
        pytest.fail(f"e2e/build-images.sh failed (exit {out.returncode})", pytrace=False)
    refs = {}
    for tar in (Path(line) for line in out.stdout.split() if line.endswith(".tar")):
        ref, _ = localcluster.archive_image(tar)
        refs[ref.rsplit("/", 1)[-1].split(":")[0]] = ref
        cluster.ensure_image(tar)
    return Images(refs["operator"], refs["runtime"])


@pytest.fixture(scope="session")
def images(cluster_info: Any) -> Images:
    if cluster_info.external:
        return Images(
            os.environ.get("KUBETRAIN_E2E_OPERATOR_IMAGE", "kubetrain/operator:0.1.0"),
            os.environ.get("KUBETRAIN_E2E_RUNTIME_IMAGE", "kubetrain/runtime:0.1.0-cpu"),
        )
    if os.geteuid() != 0:
        pytest.skip("the real node needs root (kubelet, containerd, iptables)")
    if not getattr(cluster_info.cluster, "node", False):
        pytest.fail("the session's cluster has no real node", pytrace=False)
    return _build_and_import(cluster_info.cluster)


@pytest.fixture(scope="session")
def helm(cluster_info: Any) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The pinned helm (``e2e/build-tools.sh helm``) against the test cluster."""
    if cluster_info.external:
        exe = Path(shutil.which("helm") or "helm")
    else:
        exe = cluster_info.kubectl.parent / "helm"
    if not exe.exists():
        pytest.fail(f"no helm at {exe} (build it with e2e/build-tools.sh helm)", pytrace=False)

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(exe), f"--kubeconfig={cluster_info.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}")
        return proc

    return run


def _placement(cluster_info: Any) -> dict[str, Any]:
    """nodeSelector and tolerations that put a pod on a node that runs it: the local
    cluster's real node, or an external cluster's (kind's) CPU pool."""
    if cluster_info.external:
        return {"nodeSelector": {localcluster.POOL_LABEL: "cpu"}, "tolerations": []}
    return {"nodeSelector": REAL_NODE_SELECTOR, "tolerations": [REAL_NODE_TOLERATION]}


def chart_values(images: Images, placement: dict[str, Any]) -> dict[str, Any]:
    """The chart's values for this tier: the images that were imported, pool ``cpu`` on
    the real node, the kwok GPU pool, outputs on each namespace's claim."""
    operator_repo, operator_tag = images.operator.rsplit(":", 1)
    cpu_pool = {"gpu": False, "nodeSelector": placement["nodeSelector"],
                "tolerations": placement["tolerations"],
                # Burstable: a 2-core node's idle CPU speeds every Ray start (iris 85 s ->
                # 46 s to Succeeded, BENCHMARKS.md); KUBETRAIN_E2E_CPU_LIMIT=true: Guaranteed.
                "cpuLimit": os.environ.get("KUBETRAIN_E2E_CPU_LIMIT") == "true"}  # fmt: skip
    return {
        "image": {"repository": operator_repo, "tag": operator_tag, "pullPolicy": "Never"},
        "nodePools": {
            "cpu": cpu_pool,
            "a100": {
                "nodeSelector": {"kubetrain.io/pool": "a100"},
                "tolerations": [GPU_TOLERATION],
                "gpu": True,
                "gpuResource": "nvidia.com/gpu",
                "gpusPerNode": 8,
            },
        },
        "runtime": {"defaultImage": images.runtime, "outputVolume": OUTPUT_CLAIM},
        "followIntervalSeconds": 2,
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "512Mi"},
        },
        **placement,
    }


@pytest.fixture(scope="session")
def operator_release(
    cluster_info: Any, images: Images, helm: Callable[..., Any], kubectl: Kubectl, tmp_path_factory
) -> Iterator[dict[str, Any]]:
    """The chart installed with Helm, its operator a pod from the operator image."""
    values = tmp_path_factory.mktemp("helm") / "values.yaml"
    values.write_text(yaml.safe_dump(chart_values(images, _placement(cluster_info))))
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    _restricted_namespace(kubectl, RELEASE_NAMESPACE)
    helm("upgrade", "--install", RELEASE, str(CHART), "-n", RELEASE_NAMESPACE, "-f", str(values),
         "--wait", "--timeout", "180s", timeout=240)  # fmt: skip
    pod = kubectl("get", "pods", "-n", RELEASE_NAMESPACE, "-l", "app.kubernetes.io/name=kubetrain",
                  "-o", "json").stdout  # fmt: skip
    yield {"values": values, "pods": json.loads(pod)["items"]}
    helm("uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait", timeout=120)


def _restricted_namespace(kubectl: Kubectl, name: str) -> None:
    labels = {**RESTRICTED, "kubetrain.io/test": "true"}
    manifest = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": labels}}  # fmt: skip
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))


def _volume(cluster_info: Any, namespace: str) -> tuple[list[dict[str, Any]], Path | None]:
    """A claim for the namespace's outputs: on the local cluster a local PersistentVolume
    on the real node (a folder of the state dir), elsewhere the default StorageClass."""
    claim: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": OUTPUT_CLAIM, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    if cluster_info.external:
        return [claim], None
    folder = cluster_info.info.state_dir / "volumes" / namespace
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, 1000, 1000)
    node = localcluster.REAL_NODE
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"outputs-{namespace}", "labels": {"kubetrain.io/test": "true"}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "kubetrain-e2e-local",
            "local": {"path": str(folder)},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
        },
    }  # fmt: skip
    claim["spec"] |= {
        "storageClassName": "kubetrain-e2e-local",
        "volumeName": volume["metadata"]["name"],
    }
    return [volume, claim], folder


def reader_pod(namespace: str, image: str, placement: dict[str, Any]) -> dict[str, Any]:
    """A pod that mounts the outputs claim, to copy data in and read results out with
    ``kubectl cp`` and ``kubectl exec``, as a user without node access would."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": READER, "namespace": namespace},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "reader", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "infinity"],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                              "limits": {"cpu": "200m", "memory": "256Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "outputs", "mountPath": "/output"}],
            }],
            "volumes": [{"name": "outputs", "persistentVolumeClaim": {"claimName": OUTPUT_CLAIM}}],
            "terminationGracePeriodSeconds": 0,
            **placement,
        },
    }  # fmt: skip


def _ns_name(test: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", test.lower()).strip("-")[:36].strip("-")
    return f"e2e-{base}-{secrets.token_hex(3)}"


@pytest.fixture
def workspace(
    cluster_info: Any, kubectl: Kubectl, images: Images, operator_release: Any, request
) -> Iterator[Workspace]:
    name = _ns_name(request.node.name)
    _restricted_namespace(kubectl, name)
    objects, folder = _volume(cluster_info, name)
    placement = _placement(cluster_info)
    objects.append(reader_pod(name, images.runtime, placement))
    kubectl(
        "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    )
    kubectl("wait", "-n", name, "--for=condition=Ready", f"pod/{READER}", "--timeout=120s")
    try:
        yield Workspace(name, kubectl)
    finally:
        # TrainingJobs before the namespace, so the operator's finalizer is honoured.
        kubectl("delete", "trainingjobs", "--all", "-n", name, "--wait", "--timeout=120s",
                check=False)  # fmt: skip
        # Not waited for: the namespace controller takes 5-10 s to empty a namespace, 22
        # times a run, and nothing later looks at this one.
        kubectl("delete", "namespace", name, "--wait=false", check=False)
        if folder is not None:
            kubectl("delete", "pv", f"outputs-{name}", "--wait=false", check=False)
            subprocess.run(["rm", "-rf", str(folder)], check=False)
