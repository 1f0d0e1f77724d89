"""The local cluster's real worker node (``e2e/local-cluster.sh up --node``): real pods.

Runs on the session's cluster, which gets the node when e2e tests are selected (root only:
kubelet, containerd and iptables); a cluster already up with ``--node`` in the default state
dir is reused and left running.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_session import localcluster as lc

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(cluster_info: Any) -> Any:
    """The session's cluster (``tests/kube_session.py``), which has the real node whenever
    e2e tests are selected."""
    if cluster_info.external:
        pytest.skip("these tests run the local real node; an external cluster is selected")
    return cluster_info.info


Kubectl = Callable[..., str]


@pytest.fixture(scope="module")
def kubectl(cluster: Any) -> Kubectl:
    def run(*args: str, stdin: str | None = None, check: bool = True, timeout: float = 60) -> str:
        proc = subprocess.run(
            [str(cluster.kubectl), f"--kubeconfig={cluster.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout

    return run


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"node-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    kubectl("wait", "--for=jsonpath={.metadata.name}", "serviceaccount/default", "-n", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def pod(name: str, command: str, **extra: Any) -> dict[str, Any]:
    """A busybox pod pinned to the real node (which it tolerates), never pulling: no
    registry is reachable."""
    container = {
        "name": "main",
        "image": lc.BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", command],
        **extra.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeSelector": {lc.REAL_NODE_LABEL: "true"},
            "tolerations": [{"key": lc.REAL_NODE_LABEL, "operator": "Exists"}],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
            **extra,
        },
    }


def apply(kubectl: Kubectl, ns: str, *objs: dict[str, Any]) -> None:
    kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}),
    )


def wait_phase(kubectl: Kubectl, ns: str, name: str, phases: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    phase = ""
    while time.monotonic() < deadline:
        phase = kubectl("get", "pod", name, "-n", ns, "-o", "jsonpath={.status.phase}")
        if phase in phases:
            return phase
        time.sleep(0.3)
    desc = kubectl("describe", "pod", name, "-n", ns, check=False)
    raise AssertionError(f"pod {name} stayed {phase!r}, not in {phases}:\n{desc}")


def test_node_is_ready_with_real_capacity(kubectl: Kubectl) -> None:
    node = json.loads(kubectl("get", "node", lc.REAL_NODE, "-o", "json"))
    conds = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conds["Ready"] == "True"
    labels = node["metadata"]["labels"]
    assert labels[lc.POOL_LABEL] == lc.REAL_POOL and labels[lc.REAL_NODE_LABEL] == "true"
    assert lc.KWOK_ANNOTATION not in node["metadata"].get("annotations", {})
    assert lc.REAL_NODE_TAINT in node["spec"]["taints"]
    assert node["status"]["capacity"]["cpu"] == str(len(os.sched_getaffinity(0)))


def test_pod_runs_logs_and_exec(kubectl: Kubectl, namespace: str) -> None:
    apply(kubectl, namespace, pod("hello", "echo hello-from-pod; sleep 3600"))
    wait_phase(kubectl, namespace, "hello", {"Running"})
    deadline = time.monotonic() + 20
    while "hello-from-pod" not in kubectl("logs", "hello", "-n", namespace):
        assert time.monotonic() < deadline, "no log line"
        time.sleep(0.3)
    assert (
        kubectl("exec", "hello", "-n", namespace, "--", "cat", "/etc/hostname").strip() == "hello"
    )


def test_pod_reaches_api_server_and_cluster_dns(kubectl: Kubectl, namespace: str) -> None:
    script = (
        # busybox's nc has no -z: connect, send a line (the TLS server then hangs up)
        f"echo | nc -w 5 {lc.SERVICE_IP} 443 >/dev/null && echo API-OK; "
        "nslookup kubernetes.default.svc.cluster.local && echo DNS-OK"
    )
    apply(kubectl, namespace, pod("probe", script))
    assert wait_phase(kubectl, namespace, "probe", {"Succeeded", "Failed"}) == "Succeeded"
    out = kubectl("logs", "probe", "-n", namespace)
    assert "API-OK" in out and "DNS-OK" in out and lc.SERVICE_IP in out, out


def test_pod_to_pod_and_cluster_ip_service(kubectl: Kubectl, namespace: str) -> None:
    server = pod("server", "while true; do echo pong | nc -l -p 8080; done")
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo"},
        "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    apply(kubectl, namespace, server, svc)
    wait_phase(kubectl, namespace, "server", {"Running"})
    ip = kubectl("get", "pod", "server", "-n", namespace, "-o", "jsonpath={.status.podIP}")
    script = (
        f"sleep 1; nc -w 3 {ip} 8080 </dev/null | grep -q pong && echo POD-OK; "
        f"nc -w 3 echo.{namespace}.svc.cluster.local 80 </dev/null | grep -q pong && echo SVC-OK"
    )
    apply(kubectl, namespace, pod("client", script))
    wait_phase(kubectl, namespace, "client", {"Succeeded", "Failed"})
    out = kubectl("logs", "client", "-n", namespace)
    assert "POD-OK" in out and "SVC-OK" in out, out


def test_restricted_pod_security(kubectl: Kubectl, namespace: str) -> None:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    restricted = pod(
        "nonroot",
        "id -u; sleep 3600",
        securityContext={
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        container={
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            }
        },
    )
    apply(kubectl, namespace, restricted)
    wait_phase(kubectl, namespace, "nonroot", {"Running"})
    deadline = time.monotonic() + 20
    while "65534" not in kubectl("logs", "nonroot", "-n", namespace):
        assert time.monotonic() < deadline, "the pod did not print its uid"
        time.sleep(0.3)
    kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(pod("root", "id")), check=False)
    # the pod without a restricted securityContext is refused by admission
    assert kubectl("get", "pod", "root", "-n", namespace, "--ignore-not-found", "-o", "name") == ""
