"""The operator against the real control plane, with kwok nodes as GPU and CPU pools: what
it creates, where pods land, fail-fast, suspend, deletion, restarts, validation, RBAC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from operator_fixtures import (
    FINALIZER_POLICY,
    GROUP,
    PLURAL,
    VERSION,
    Jobs,
    admission_policy,
    job_body,
    jobs,
    operator_config,
    peering_rules,
    phase_is,
    rules,
    running_operator,
    token_kubeconfig,
    wait_for,
)

from kubetrain_operator.lifecycle import FINALIZER

pytestmark = pytest.mark.cluster
__all__ = ["jobs"]  # the fixture, imported for pytest

READY = ("Provisioning",)


def ready(jobs: Jobs, name: str) -> Any:
    return phase_is(jobs, name, *READY, reason="ClusterReady")


def test_a_job_creates_exactly_its_children_on_the_pool_asked_for(
    jobs: Jobs, kubeconfig_path: Path, gpu_pools: dict[str, list[str]]
):
    body = job_body(
        "gpus",
        training={"workers": 2, "resourcesPerWorker": {"cpu": "1", "gpu": 2}},
        cluster={"nodePool": "a100"},
    )
    with running_operator(jobs.ns, kubeconfig_path):
        uid = jobs.create(body)["metadata"]["uid"]
        status = wait_for(ready(jobs, "gpus"), what="the cluster to be ready")
        cluster = f"gpus-{uid[:5]}"
        assert jobs.children(uid) == {
            "Pod": [f"{cluster}-head", f"{cluster}-worker-0", f"{cluster}-worker-1"],
            "Service": [f"{cluster}-head"],
            "ConfigMap": [f"{cluster}-spec"],
            "ServiceAccount": [f"{cluster}-runtime"],
            "Role": [f"{cluster}-runtime"],
            "RoleBinding": [f"{cluster}-runtime"],
        }
        for pod in jobs.pods(uid):
            assert pod.spec.node_name in gpu_pools["a100"]
            owner = pod.metadata.owner_references[0]
            assert (owner.kind, owner.name, owner.uid) == ("TrainingJob", "gpus", uid)
            assert pod.spec.security_context.run_as_non_root is True
        assert status["rayClusterName"] == cluster
        assert status["observedGeneration"] == 1
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        # No output volume and no object store: the job says its checkpoints are not shared.
        assert conditions == {"ClusterReady": "True", "SharedStorage": "False",
                              "Reconciling": "True", "Stalled": "False"}  # fmt: skip
        reasons = {e.reason for e in jobs.events("gpus")}
        assert {"ClusterReady", "NoSharedStorage"} <= reasons


def test_an_impossible_gpu_request_is_unschedulable_then_fails_at_the_deadline(
    jobs: Jobs, kubeconfig_path: Path, gpu_pools: dict[str, list[str]]
):
    workers = len(gpu_pools["h100"]) + 1  # one 8-GPU worker more than there are nodes
    body = job_body(
        "toobig",
        training={"workers": workers, "resourcesPerWorker": {"cpu": "1", "gpu": 8}},
        cluster={"nodePool": "h100"},
        runPolicy={"startupDeadlineSeconds": 8},
    )
    with running_operator(jobs.ns, kubeconfig_path):
        uid = jobs.create(body)["metadata"]["uid"]
        pending = wait_for(
            phase_is(jobs, "toobig", "Pending", reason="Unschedulable"), what="Unschedulable"
        )
        assert "Insufficient nvidia.com/gpu" in pending["message"]
        failed = wait_for(phase_is(jobs, "toobig", "Failed"), timeout=60, what="Failed")
        assert failed["reason"] == "Unschedulable"
        assert "startupDeadlineSeconds (8s)" in failed["message"]
        assert failed["completionTime"]
        wait_for(lambda: not jobs.pods(uid), what="the failed job's pods to be deleted")
        warnings = {e.reason for e in jobs.events("toobig") if e.type == "Warning"}
        assert {"Unschedulable"} <= warnings


def test_moving_a_stuck_job_to_another_pool_replaces_its_pods(
    jobs: Jobs, kubeconfig_path: Path, gpu_pools: dict[str, list[str]]
):
    """spec.cluster is mutable: a job that cannot be scheduled is fixed by editing it, and
    its pods are rebuilt from the new spec (no delete-and-recreate of the job)."""
    body = job_body("stuck", cluster={"nodeSelector": {"kubetrain.io/zone": "nowhere"}})
    with running_operator(jobs.ns, kubeconfig_path):
        uid = jobs.create(body)["metadata"]["uid"]
        wait_for(phase_is(jobs, "stuck", "Pending", reason="Unschedulable"), what="stuck")
        before = {p.metadata.uid for p in jobs.pods(uid)}
        jobs.patch_spec("stuck", {"cluster": {"nodeSelector": None}})
        status = wait_for(ready(jobs, "stuck"), what="ready on the cpu pool after the edit")
        pods = jobs.pods(uid)
        assert len(pods) == 2 and not {p.metadata.uid for p in pods} & before
        assert all(p.spec.node_name in gpu_pools["cpu"] for p in pods)
        assert status["observedGeneration"] == 2
        assert "ClusterSpecChanged" in {e.reason for e in jobs.events("stuck")}


def test_suspend_deletes_pods_and_resume_recreates_them(jobs: Jobs, kubeconfig_path: Path):
    with running_operator(jobs.ns, kubeconfig_path):
        uid = jobs.create(job_body("pausable"))["metadata"]["uid"]
        wait_for(ready(jobs, "pausable"), what="the cluster to be ready")
        before = {p.metadata.uid for p in jobs.pods(uid)}
        assert len(before) == 2

        jobs.patch_spec("pausable", {"runPolicy": {"suspend": True}})
        wait_for(phase_is(jobs, "pausable", "Suspended"), what="Suspended")
        wait_for(lambda: not jobs.pods(uid, alive=False), what="pods to be deleted")
        assert jobs.children(uid).keys() >= {"ConfigMap", "Service"}, "only pods go"

        jobs.patch_spec("pausable", {"runPolicy": {"suspend": False}})
        wait_for(ready(jobs, "pausable"), what="the cluster to be ready again")
        after = {p.metadata.uid for p in jobs.pods(uid)}
        assert len(after) == 2 and not after & before
        conditions = {c["type"]: c for c in jobs.status("pausable")["conditions"]}
        assert conditions["Suspended"]["status"] == "False"
        assert conditions["Suspended"]["reason"] == "Resumed"


def test_deleting_the_job_leaves_no_child_behind(jobs: Jobs, kubeconfig_path: Path):
    with running_operator(jobs.ns, kubeconfig_path):
        uid = jobs.create(job_body("doomed", training={"workers": 2}))["metadata"]["uid"]
        wait_for(ready(jobs, "doomed"), what="the cluster to be ready")
        assert jobs.get("doomed")["metadata"]["finalizers"] == ["kubetrain.io/finalizer"]
        jobs.delete("doomed")
        wait_for(lambda: jobs.get("doomed") is None, what="the job to be gone")
    wait_for(lambda: not jobs.children(uid), timeout=60, what="children to be collected")


def test_with_the_charts_finalizer_policy_the_operator_never_patches_the_job(
    jobs: Jobs, kube_api: k8s.ApiClient, kubeconfig_path: Path
):
    """The chart's MutatingAdmissionPolicy adds the finalizer at creation (keeping any of
    the user's), so the operator's only writes to a job are to its status subresource."""
    spec = yaml.safe_load(FINALIZER_POLICY.read_text())
    mine = job_body("mine", training={"workers": 1})
    mine["metadata"]["finalizers"] = ["example.com/keep"]

    def finalizers_at_creation() -> list[str]:
        made = jobs.custom.create_namespaced_custom_object(
            GROUP, VERSION, jobs.ns, PLURAL, mine, dry_run="All"
        )
        return made["metadata"].get("finalizers", [])[1:]

    name = f"kt-finalizer-{jobs.ns}"
    with admission_policy(kube_api, name, spec, jobs.ns, finalizers_at_creation):
        assert finalizers_at_creation() == [FINALIZER]  # the user's first, then ours
        with running_operator(jobs.ns, kubeconfig_path):
            created = jobs.create(job_body("sealed", training={"workers": 1}))
            assert created["metadata"]["finalizers"] == [FINALIZER]
            uid = created["metadata"]["uid"]
            wait_for(ready(jobs, "sealed"), what="the cluster to be ready")
            writes = jobs.get("sealed")["metadata"]["managedFields"]
            main = [w["manager"] for w in writes if not w.get("subresource")]
            assert len(main) == 1, writes  # the creation's; the operator wrote only status
            jobs.delete("sealed")
            wait_for(lambda: jobs.get("sealed") is None, what="the job to be gone")
    wait_for(lambda: not jobs.children(uid), timeout=60, what="children to be collected")


def test_restarting_the_operator_mid_provisioning_creates_no_duplicate(
    jobs: Jobs, kubeconfig_path: Path
):
    body = job_body("restart", training={"workers": 2})
    with running_operator(jobs.ns, kubeconfig_path):
        uid = jobs.create(body)["metadata"]["uid"]
        wait_for(lambda: len(jobs.pods(uid)) == 3, what="three pods")
    first = jobs.children(uid)
    pod_uids = {p.metadata.uid for p in jobs.pods(uid)}
    with running_operator(jobs.ns, kubeconfig_path):
        wait_for(ready(jobs, "restart"), what="the cluster to be ready")
        assert jobs.children(uid) == first
        assert {p.metadata.uid for p in jobs.pods(uid)} == pod_uids


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"cluster": {"nodePool": "tpu"}}, "spec.cluster.nodePool"),
        (
            {"training": {"resourcesPerWorker": {"cpu": "1", "gpu": 1}}},
            "spec.training.resourcesPerWorker.gpu",
        ),
    ],
    ids=["unknown-pool", "gpus-on-cpu-pool"],
)
def test_a_validation_failure_creates_nothing(
    jobs: Jobs, kubeconfig_path: Path, spec: dict[str, Any], field: str
):
    with running_operator(jobs.ns, kubeconfig_path):
        uid = jobs.create(job_body("invalid", **spec))["metadata"]["uid"]
        failed = wait_for(phase_is(jobs, "invalid", "Failed"), what="Failed")
        assert failed["reason"] == "ValidationFailed"
        assert failed["message"].startswith(f"{field}:")
        wait_for(
            lambda: any(e.reason == "ValidationFailed" for e in jobs.events("invalid")),
            what="a ValidationFailed event",
        )
        assert jobs.events("invalid")[0].type == "Warning"
        assert jobs.status("invalid") == failed, "no retry loop rewrites the status"
    assert jobs.children(uid) == {}


@pytest.mark.parametrize("peering", [None, "kubetrain"])
def test_the_operator_runs_with_exactly_the_rbac_it_ships(
    jobs: Jobs, kube_api: k8s.ApiClient, kubeconfig_path: Path, tmp_path: Path, peering: Any
):
    """Bind the chart's rules file to a ServiceAccount, log in with its token, and run the
    whole provisioning flow as it: a missing rule fails this test. With peering, the chart
    adds the peering rules and object, and the operator keeps its heartbeat there."""
    core, rbac = k8s.CoreV1Api(kube_api), k8s.RbacAuthorizationV1Api(kube_api)
    name = "kubetrain-operator"
    core.create_namespaced_service_account(jobs.ns, {"metadata": {"name": name}})
    shipped = rules() + (peering_rules() if peering else [])
    rbac.create_namespaced_role(jobs.ns, {"metadata": {"name": name}, "rules": shipped})
    if peering:
        peering_object = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering"}
        peering_object["metadata"] = {"name": peering}
        k8s.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            "kopf.dev", "v1", jobs.ns, "kopfpeerings", peering_object
        )
    rbac.create_namespaced_role_binding(
        jobs.ns,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": jobs.ns}],
        },
    )
    token = core.create_namespaced_service_account_token(
        name, jobs.ns, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    kubeconfig = token_kubeconfig(kubeconfig_path, token, tmp_path / "operator.kubeconfig")

    config = operator_config(peeringName=peering)
    with running_operator(jobs.ns, kubeconfig, config) as runner:
        uid = jobs.create(job_body("rbac", training={"workers": 1}))["metadata"]["uid"]
        wait_for(ready(jobs, "rbac"), what="the cluster to be ready, as the operator's SA")
        assert len(jobs.children(uid)) == 6
        jobs.patch_spec("rbac", {"runPolicy": {"suspend": True}})
        wait_for(phase_is(jobs, "rbac", "Suspended"), what="Suspended, as the operator's SA")
        wait_for(lambda: not jobs.pods(uid, alive=False), what="pods deleted by the SA")
        jobs.delete("rbac")
        wait_for(lambda: jobs.get("rbac") is None, what="the finalizer removed by the SA")
        if peering:
            seen = k8s.CustomObjectsApi(kube_api).get_namespaced_custom_object(
                "kopf.dev", "v1", jobs.ns, "kopfpeerings", peering
            )
            assert seen.get("status"), "the operator's heartbeat is in the peering object"
    # A denial shows as kopf's APIForbiddenError / the API's reason, or our "HTTP 403" (not as
    # a bare 403: log timestamps carry milliseconds, and ",403" once failed this test).
    assert "Forbidden" not in runner.output and "HTTP 403" not in runner.output
