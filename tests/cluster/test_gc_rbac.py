"""Controller-manager and authorizer behaviour the operator relies on: ownerReference garbage
collection (children go with their parent) and RBAC for a narrowly bound ServiceAccount."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.cluster


def gone(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


def owned_by(parent: Any) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": parent.metadata.name,
            "uid": parent.metadata.uid,
        }
    ]


@pytest.mark.parametrize("propagation", ["Background", "Foreground"])
def test_gc_deletes_children_of_deleted_parent(
    propagation: str, kube_api: k8s.ApiClient, namespace: str, wait_until: Any
) -> None:
    core = k8s.CoreV1Api(kube_api)
    parent = core.create_namespaced_config_map(namespace, {"metadata": {"name": "parent"}})
    for i in range(3):
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": f"child-{i}", "ownerReferences": owned_by(parent)}}
        )
    bystander = core.create_namespaced_config_map(namespace, {"metadata": {"name": "unowned"}})

    core.delete_namespaced_config_map("parent", namespace, propagation_policy=propagation)
    for i in range(3):
        wait_until(
            lambda i=i: gone(lambda: core.read_namespaced_config_map(f"child-{i}", namespace)),
            timeout=30,
            what=f"child-{i} to be garbage-collected",
        )
    wait_until(
        lambda: gone(lambda: core.read_namespaced_config_map("parent", namespace)), timeout=30
    )
    assert (
        core.read_namespaced_config_map("unowned", namespace).metadata.uid == bystander.metadata.uid
    )


def test_gc_deletes_running_pod_of_deleted_parent(
    kube_api: k8s.ApiClient, namespace: str, gpu_pools: dict[str, list[str]], wait_until: Any
) -> None:
    """A bound pod needs its 'kubelet' (kwok) to finish deletion: checks the whole chain."""
    core = k8s.CoreV1Api(kube_api)
    parent = core.create_namespaced_config_map(namespace, {"metadata": {"name": "job-owner"}})
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "worker", "ownerReferences": owned_by(parent)},
            "spec": {
                "nodeSelector": {"kubetrain.io/pool": "cpu"},
                "containers": [{"name": "main", "image": "kubetrain/trainer:test"}],
            },
        },
    )
    wait_until(
        lambda: core.read_namespaced_pod("worker", namespace).status.phase == "Running",
        timeout=30,
        what="the pod to run",
    )
    core.delete_namespaced_config_map("job-owner", namespace)
    wait_until(
        lambda: gone(lambda: core.read_namespaced_pod("worker", namespace)),
        timeout=30,
        what="the owned pod to be deleted",
    )


def forbidden(call: Callable[[], Any]) -> bool:
    try:
        call()
    except ApiException as e:
        if e.status == 403:
            return True
        raise
    return False


@pytest.fixture
def narrow_sa(kube_api: k8s.ApiClient, namespace: str) -> str:
    """ServiceAccount `reader` that may only get/list/watch ConfigMaps in its namespace."""
    core, rbac = k8s.CoreV1Api(kube_api), k8s.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "configmap-reader"},
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader-configmap-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "configmap-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"k": "v"}}
    )
    return "reader"


@pytest.mark.parametrize("mode", ["impersonate", "token"])
def test_narrow_role_allows_only_its_verbs(
    mode: str, narrow_sa: str, namespace: str, sa_api_client: Any, wait_until: Any
) -> None:
    api = sa_api_client(namespace, narrow_sa, mode=mode)
    core = k8s.CoreV1Api(api)

    who = k8s.AuthenticationV1Api(api).create_self_subject_review({})
    assert who.status.user_info.username == f"system:serviceaccount:{namespace}:{narrow_sa}"

    # The RBAC authorizer sees new bindings through an informer: allow a moment to propagate.
    items = wait_until(
        lambda: (
            not forbidden(lambda: core.list_namespaced_config_map(namespace))
            and core.list_namespaced_config_map(namespace).items
        ),
        timeout=15,
        what="the RoleBinding to take effect",
    )
    assert "settings" in {cm.metadata.name for cm in items}
    assert core.read_namespaced_config_map("settings", namespace).data == {"k": "v"}

    assert forbidden(
        lambda: core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
    )
    assert forbidden(lambda: core.delete_namespaced_config_map("settings", namespace))
    assert forbidden(lambda: core.list_namespaced_secret(namespace))
    assert forbidden(lambda: core.list_namespaced_pod(namespace))
    assert forbidden(lambda: core.list_namespaced_config_map("default"))
    assert forbidden(core.list_namespace)
