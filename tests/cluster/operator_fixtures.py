"""Fixtures for the operator's cluster tests: the operator running in-process (kopf's
KopfRunner) against the session's control plane, with kwok nodes as the node pools.

kwok marks pods Running and Ready but runs nothing, so there is no Ray: the operator's
config turns submission off and the tests assert provisioning, not training.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from kubetrain_operator.config import OperatorConfig
from kubetrain_operator.handlers import build_registry

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = REPO_ROOT / "charts" / "kubetrain" / "files" / "operator-rules.yaml"
FINALIZER_POLICY = RULES_FILE.parent / "finalizer-policy.yaml"
GROUP, VERSION, PLURAL = "kubetrain.io", "v1alpha1", "trainingjobs"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def operator_config(**updates: Any) -> OperatorConfig:
    """The kwok pools of tests/cluster/conftest.py, no Ray, quick follow-ups."""
    gpu_pool = {"tolerations": [GPU_TOLERATION], "gpu": True}
    raw = {
        "nodePools": {
            "cpu": {"nodeSelector": {"kubetrain.io/pool": "cpu"}},
            "a100": {"nodeSelector": {"kubetrain.io/pool": "a100"}, **gpu_pool},
            "h100": {"nodeSelector": {"kubetrain.io/pool": "h100"}, **gpu_pool},
        },
        "ray": {"submit": False},
        "followIntervalSeconds": 2,
        "metricsPort": 0,
        **updates,
    }
    return OperatorConfig.model_validate(raw)


@contextlib.contextmanager
def running_operator(
    namespace: str, kubeconfig: Path, config: OperatorConfig | None = None
) -> Iterator[KopfRunner]:
    """The operator in a thread, watching one namespace, logged in with ``kubeconfig``."""
    mp = pytest.MonkeyPatch()
    mp.setenv("KUBECONFIG", str(kubeconfig))
    config = config or operator_config()
    peering = ["--peering", config.peeringName] if config.peeringName else ["--standalone"]
    args = ["run", *peering, "--namespace", namespace]
    # As ``python -m kubetrain_operator -n NS`` does: kopf and the operator's own pod watch
    # both watch only that namespace (a namespaced Role allows nothing wider).
    config = config.model_copy(update={"namespaces": [namespace]})
    runner = KopfRunner(args, registry=build_registry(config), timeout=60)
    try:
        with runner:
            yield runner
    finally:
        mp.undo()


def job_body(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "data": {"source": {"builtin": {"name": "iris"}}, "label": "target"},
        "model": {"type": "mlp"},
        "training": {"epochs": 1, "workers": 1, "resourcesPerWorker": {"cpu": "1"}},
        "cluster": {"nodePool": "cpu", "head": {"resources": {"cpu": "1", "memory": "3Gi"}}},
    }
    for key, value in spec.items():
        base[key] = {**base.get(key, {}), **value}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": base,
    }


class Jobs:
    """TrainingJobs and their children in one namespace, through the admin client."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.ns = namespace
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)
        self.rbac = k8s.RbacAuthorizationV1Api(api)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def status(self, name: str) -> dict[str, Any]:
        return (self.get(name) or {}).get("status") or {}

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name, {"spec": spec}
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def pods(self, uid: str, *, alive: bool = True) -> list[Any]:
        items = self.core.list_namespaced_pod(
            self.ns, label_selector=f"kubetrain.io/job-uid={uid}"
        ).items
        return [p for p in items if not (alive and p.metadata.deletion_timestamp)]

    def child_objects(self, uid: str, *, pods: bool = True) -> dict[str, list[Any]]:
        """Every kind the operator creates, by kind: this job's objects (empty lists too)."""
        sel = f"kubetrain.io/job-uid={uid}"
        listers: dict[str, Callable[..., Any]] = {
            "Pod": self.core.list_namespaced_pod,
            "Service": self.core.list_namespaced_service,
            "ConfigMap": self.core.list_namespaced_config_map,
            "ServiceAccount": self.core.list_namespaced_service_account,
            "Role": self.rbac.list_namespaced_role,
            "RoleBinding": self.rbac.list_namespaced_role_binding,
        }
        return {
            kind: lister(self.ns, label_selector=sel).items
            for kind, lister in listers.items()
            if pods or kind != "Pod"
        }

    def children(self, uid: str) -> dict[str, list[str]]:
        """Names of this job's objects, by kind, for the kinds it has."""
        return {
            kind: sorted(o.metadata.name for o in objects)
            for kind, objects in self.child_objects(uid).items()
            if objects
        }

    def events(self, name: str) -> list[Any]:
        return [
            e
            for e in self.core.list_namespaced_event(self.ns).items
            if e.involved_object.kind == "TrainingJob" and e.involved_object.name == name
        ]


def wait_for(probe: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    """Poll until ``probe`` returns something truthy (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or probe}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def phase_is(jobs: Jobs, name: str, *phases: str, reason: str | None = None) -> Callable[[], Any]:
    def probe() -> dict[str, Any] | None:
        st = jobs.status(name)
        ok = st.get("phase") in phases and (reason is None or st.get("reason") == reason)
        return st if ok else None

    return probe


@contextlib.contextmanager
def admission_policy(
    api: k8s.ApiClient, name: str, spec: dict[str, Any], namespace: str, in_force: Callable[[], Any]
) -> Iterator[None]:
    """A MutatingAdmissionPolicy bound to one namespace, for the length of the block; waits
    until ``in_force`` sees it applied (a new policy takes a moment to reach admission)."""
    custom = k8s.CustomObjectsApi(api)
    group, version, plural = "admissionregistration.k8s.io", "v1", "mutatingadmissionpolicies"
    bindings = "mutatingadmissionpolicybindings"
    head = {"apiVersion": f"{group}/{version}", "metadata": {"name": name}}
    only_here = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
    custom.create_cluster_custom_object(
        group, version, plural, {**head, "kind": "MutatingAdmissionPolicy", "spec": spec}
    )
    binding = {"policyName": name, "matchResources": only_here}
    kind = "MutatingAdmissionPolicyBinding"
    custom.create_cluster_custom_object(
        group, version, bindings, {**head, "kind": kind, "spec": binding}
    )
    try:
        wait_for(in_force, what=f"admission policy {name} to be in force")
        yield
    finally:
        custom.delete_cluster_custom_object(group, version, bindings, name)
        custom.delete_cluster_custom_object(group, version, plural, name)


def rules() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES_FILE.read_text())


def peering_rules() -> list[dict[str, Any]]:
    return yaml.safe_load((RULES_FILE.parent / "peering-rules.yaml").read_text())


def token_kubeconfig(admin_kubeconfig: Path, token: str, path: Path) -> Path:
    """A kubeconfig for the same server that logs in with a ServiceAccount token."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = next(c for c in admin["clusters"] if c["name"] == context["context"]["cluster"])
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": "sa"}}],
                "current-context": "sa",
            }
        )
    )
    return path


@pytest.fixture
def jobs(kube_api: k8s.ApiClient, namespace: str, trainingjob_crd: Any) -> Jobs:
    return Jobs(kube_api, namespace)


def pinned_helm() -> Path:
    """The helm that e2e/build-tools.sh built; skips the test when it is not built."""
    found = subprocess.run(
        [str(REPO_ROOT / "e2e" / "build-tools.sh"), "helm", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        pytest.skip("helm is not built (e2e/build-tools.sh helm)")
    return Path(found.stdout.strip().splitlines()[-1]) / "helm"
