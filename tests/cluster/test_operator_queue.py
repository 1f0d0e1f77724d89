"""A queued job with the real control plane: Kueue's admission gate is played by a
MutatingAdmissionPolicy that gates every pod carrying a queue label (as Kueue's webhook
does), and the test admits the gang by removing the gates (as Kueue does)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from operator_fixtures import (
    Jobs,
    admission_policy,
    job_body,
    jobs,
    phase_is,
    running_operator,
    wait_for,
)

pytestmark = pytest.mark.cluster
__all__ = ["jobs"]  # the fixture, imported for pytest

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GATE = "kueue.x-k8s.io/admission"


@pytest.fixture
def fake_kueue_gate(kube_api: k8s.ApiClient, jobs: Jobs) -> Iterator[None]:
    """Gate, at creation, every pod with a queue label in the test's namespace."""
    spec = {
        "matchConstraints": {
            "resourceRules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["pods"],
                }
            ]
        },
        "matchConditions": [
            {
                "name": "queued",
                "expression": f"has(object.metadata.labels) && "
                f"'{QUEUE_LABEL}' in object.metadata.labels",
            }
        ],
        "failurePolicy": "Fail",
        "reinvocationPolicy": "Never",
        "mutations": [
            {
                "patchType": "ApplyConfiguration",
                "applyConfiguration": {
                    "expression": "Object{spec: Object.spec{schedulingGates: "
                    f'[Object.spec.schedulingGates{{name: "{GATE}"}}]}}}}'
                },
            }
        ],
    }
    probe = {
        "metadata": {"name": "probe", "labels": {QUEUE_LABEL: "probe"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }

    def in_force() -> bool:
        made = jobs.core.create_namespaced_pod(jobs.ns, probe, dry_run="All")
        return bool(made.spec.scheduling_gates)

    with admission_policy(kube_api, f"fake-kueue-{jobs.ns}", spec, jobs.ns, in_force):
        yield


def gated(pods: list[Any]) -> bool:
    return bool(pods) and all(p.spec.scheduling_gates for p in pods)


def test_a_queued_gang_waits_admitted_together_then_starts(
    jobs: Jobs, kubeconfig_path: Path, fake_kueue_gate: None
):
    body = job_body("queued", runPolicy={"startupDeadlineSeconds": 5})
    body["metadata"]["labels"] = {QUEUE_LABEL: "gpu-team"}
    with running_operator(jobs.ns, kubeconfig_path):
        uid = jobs.create(body)["metadata"]["uid"]
        queued = wait_for(phase_is(jobs, "queued", "Pending", reason="Queued"), what="Queued")
        assert "gpu-team" in queued["message"]
        pods = jobs.pods(uid)
        assert gated(pods) and len(pods) == 2
        for pod in pods:
            assert pod.metadata.labels[QUEUE_LABEL] == "gpu-team"
            assert pod.metadata.labels["kueue.x-k8s.io/pod-group-name"] == f"queued-{uid[:5]}"
            assert pod.metadata.annotations["kueue.x-k8s.io/pod-group-total-count"] == "2"

        # Queued longer than startupDeadlineSeconds: still waiting, not failed.
        time.sleep(6)
        assert (jobs.get("queued") or {})["status"]["phase"] == "Pending"

        for pod in pods:  # admission: Kueue removes the gate from every pod of the group
            jobs.core.patch_namespaced_pod(
                pod.metadata.name, jobs.ns, [{"op": "remove", "path": "/spec/schedulingGates"}]
            )
        status = wait_for(
            phase_is(jobs, "queued", "Provisioning", reason="ClusterReady"), what="ready"
        )
        conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
        assert conditions["Queued"] == ("False", "Admitted")
        assert {"Queued", "ClusterReady"} <= {e.reason for e in jobs.events("queued")}
