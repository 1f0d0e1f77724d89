"""The real kube-scheduler against kwok GPU node pools: GPU pods land in the pool they ask for,
and stay Pending with the scheduler's own reason when a taint or capacity forbids them."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s

pytestmark = pytest.mark.cluster

GPU = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}


def pod_manifest(name: str, pool: str, gpus: int = 0, tolerate: bool = True) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": "100m", "memory": "64Mi"}}
    if gpus:
        resources["limits"] = {GPU: str(gpus)}  # extended resources: request == limit
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubetrain.io/pool": pool},
            "tolerations": [GPU_TOLERATION] if tolerate else [],
            "containers": [
                {"name": "main", "image": "kubetrain/trainer:test", "resources": resources}
            ],
        },
    }


def pod_condition(core: k8s.CoreV1Api, ns: str, name: str, ctype: str) -> Any:
    pod = core.read_namespaced_pod(name, ns)
    return next((c for c in pod.status.conditions or [] if c.type == ctype), None)


def wait_unscheduled(core: k8s.CoreV1Api, ns: str, name: str, wait_until: Any) -> Any:
    """The pod's PodScheduled condition once the scheduler has given up on it."""
    return wait_until(
        lambda: (c := pod_condition(core, ns, name, "PodScheduled")) and c.status == "False" and c,
        timeout=30,
        what=f"PodScheduled=False on {name}",
    )


@pytest.mark.parametrize(("pool", "gpus"), [("a100", 1), ("h100", 8), ("cpu", 0)])
def test_pod_lands_in_requested_pool_and_runs(
    pool: str,
    gpus: int,
    kube_api: k8s.ApiClient,
    namespace: str,
    gpu_pools: dict[str, list[str]],
    wait_until: Any,
) -> None:
    core = k8s.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, pod_manifest("trainer", pool, gpus))
    pod = wait_until(
        lambda: (
            (p := core.read_namespaced_pod("trainer", namespace)).status.phase == "Running" and p
        ),
        timeout=30,
        what="the pod to be scheduled and Running",
    )
    assert pod.spec.node_name in gpu_pools[pool]
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels["kubetrain.io/pool"] == pool
    if gpus:
        assert node.status.allocatable[GPU] == "8"
        assert node.metadata.labels["nvidia.com/gpu.product"]
    assert pod.status.pod_ip, "kwok should give the pod an IP"


def test_gpu_pod_without_toleration_stays_pending_on_taint(
    kube_api: k8s.ApiClient, namespace: str, gpu_pools: dict[str, list[str]], wait_until: Any
) -> None:
    core = k8s.CoreV1Api(kube_api)
    core.create_namespaced_pod(
        namespace, pod_manifest("untolerated", "a100", gpus=1, tolerate=False)
    )
    cond = wait_unscheduled(core, namespace, "untolerated", wait_until)
    assert cond.reason == "Unschedulable"
    # Since 1.3x the summary says "N node(s) had untolerated taint(s)" without the key; older
    # schedulers print "{nvidia.com/gpu: present}". The Event carries the same text.
    assert "untolerated taint" in cond.message, cond.message
    if "{" in cond.message:
        assert GPU in cond.message, cond.message
    assert core.read_namespaced_pod("untolerated", namespace).status.phase == "Pending"


def test_pod_asking_more_gpus_than_a_node_has_stays_pending(
    kube_api: k8s.ApiClient, namespace: str, gpu_pools: dict[str, list[str]], wait_until: Any
) -> None:
    core = k8s.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, pod_manifest("too-big", "h100", gpus=9))
    cond = wait_unscheduled(core, namespace, "too-big", wait_until)
    assert cond.reason == "Unschedulable"
    assert f"Insufficient {GPU}" in cond.message, cond.message
    assert not core.read_namespaced_pod("too-big", namespace).spec.node_name
