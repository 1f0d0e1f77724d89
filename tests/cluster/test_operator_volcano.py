"""A pool scheduled by Volcano: each job gets one PodGroup (head + workers as one gang),
owned by the job, created before its pods, which name Volcano as their scheduler. No Volcano
runs here: its PodGroup CRD is installed by the test, and the pods stay unscheduled."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from operator_fixtures import Jobs, job_body, jobs, operator_config, running_operator, wait_for

pytestmark = pytest.mark.cluster
__all__ = ["jobs"]  # the fixture, imported for pytest

GROUP, VERSION, PLURAL = "scheduling.volcano.sh", "v1beta1", "podgroups"


@pytest.fixture(scope="module")
def podgroup_crd(kube_api: k8s.ApiClient) -> None:
    """Volcano's PodGroup kind, as far as the API server needs to store one."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": "PodGroup", "plural": PLURAL, "singular": "podgroup"},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    extensions = k8s.ApiextensionsV1Api(kube_api)
    try:
        extensions.create_custom_resource_definition(crd)
    except ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool:
        got = extensions.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        conditions = got.status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for(established, what="the PodGroup CRD")
    time.sleep(1)  # discovery in the API server's own clients (GC) catches up


def test_a_volcano_pool_gets_one_gang_per_job(
    jobs: Jobs, kube_api: k8s.ApiClient, kubeconfig_path: Path, podgroup_crd: None
):
    config = operator_config()
    config.nodePools["gang"] = config.nodePools["cpu"].model_copy(
        update={"gangScheduler": "volcano", "volcanoQueue": "research"}
    )
    body = job_body("gang", training={"workers": 2}, cluster={"nodePool": "gang"})
    custom = k8s.CustomObjectsApi(kube_api)
    with running_operator(jobs.ns, kubeconfig_path, config):
        uid = jobs.create(body)["metadata"]["uid"]
        pods: list[Any] = wait_for(lambda: len(jobs.pods(uid)) == 3 and jobs.pods(uid))
        group = custom.get_namespaced_custom_object(
            GROUP, VERSION, jobs.ns, PLURAL, f"gang-{uid[:5]}"
        )
        assert group["spec"] == {"minMember": 3, "queue": "research"}
        assert group["metadata"]["ownerReferences"][0]["uid"] == uid
        created = group["metadata"]["creationTimestamp"]
        for pod in pods:
            assert pod.spec.scheduler_name == "volcano"
            assert pod.metadata.annotations["scheduling.k8s.io/group-name"] == f"gang-{uid[:5]}"
            assert pod.metadata.creation_timestamp.isoformat() >= created.replace("Z", "+00:00")
        status = wait_for(lambda: (jobs.get("gang") or {}).get("status", {}).get("reason"))
        assert status == "Scheduling", "no Volcano here: the gang waits to be scheduled"
