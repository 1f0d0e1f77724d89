"""The Helm chart: RBAC rendered from the one rules file in both install modes, a hardened
single-replica Deployment, a config the operator accepts, a strict values schema, the CRD
generated into crds/ rendered as a template (so upgrades upgrade it), the metrics Service,
ServiceMonitor, NetworkPolicy and `helm test` hook, the plain manifests in deploy/ as
deploy/render.sh writes them, and manifests the real API server accepts (server-side dry
run). The upgrade itself: test_chart_upgrade.py; the kustomize overlays: test_kustomize.py."""

from __future__ import annotations

import base64
import http.server
import os
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from operator_fixtures import REPO_ROOT, peering_rules, pinned_helm, rules

from kubetrain_operator.config import OperatorConfig

pytestmark = pytest.mark.cluster
CHART = REPO_ROOT / "charts" / "kubetrain"
GENERATED_CRD = REPO_ROOT / "crds" / "kubetrain.io_trainingjobs.yaml"
FIXTURES = Path(__file__).parent / "fixtures"
SERVICE_MONITOR_CRD = FIXTURES / "monitoring.coreos.com_servicemonitors.yaml"
#: What deploy/render.sh writes (the kustomization.yaml files next to them are hand-written).
RENDERED = ("kubetrain.yaml", "base/kubetrain.yaml", "overlays/namespaced/kubetrain.yaml")


@pytest.fixture(scope="module")
def helm() -> Path:
    return pinned_helm()


#: What `helm install` discovers on a cluster that serves MutatingAdmissionPolicy v1 (as
#: this one does); `helm template` assumes no such API unless told.
MAP_API = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"


def render(
    helm: Path,
    *sets: str,
    namespace: str = "kt-system",
    release: str = "kt",
    api_versions: tuple[str, ...] = (),
    tests: bool = False,
    chart: Path = CHART,
) -> list[dict[str, Any]]:
    """`helm template`, without the `helm test` hooks unless asked (as deploy/render.sh)."""
    args = [str(helm), "template", release, str(chart), "--namespace", namespace]
    if not tests:
        args.append("--skip-tests")
    for api in api_versions:
        args += ["--api-versions", api]
    for value in sets:
        args += ["--set", value]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_cluster_wide_install_renders_the_rules_file_as_a_cluster_role(helm):
    docs = render(helm)
    (role,) = by_kind(docs, "ClusterRole")
    assert role["rules"] == rules()
    (binding,) = by_kind(docs, "ClusterRoleBinding")
    (account,) = by_kind(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "kt-system"}
    ]
    assert not by_kind(docs, "Role")


def test_namespaced_install_renders_one_role_per_watched_namespace(helm):
    docs = render(helm, "watchNamespaces={team-a,team-b}")
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(r["rules"] == rules() for r in roles)
    assert len(by_kind(docs, "RoleBinding")) == 2
    (config_map,) = by_kind(docs, "ConfigMap")
    config = OperatorConfig.model_validate(yaml.safe_load(config_map["data"]["config.yaml"]))
    assert config.namespaces == ["team-a", "team-b"], "RBAC and the watch list match"


@pytest.mark.parametrize("namespaces", [None, "{team-a,team-b}"])
def test_peering_adds_its_rules_and_objects_only_when_named(helm, namespaces):
    scope = [f"watchNamespaces={namespaces}"] if namespaces else []
    assert not [d for d in render(helm, *scope) if "KopfPeering" in d["kind"]]
    docs = render(helm, *scope, "peering.name=kubetrain", "peering.priority=10")
    roles = by_kind(docs, "Role" if namespaces else "ClusterRole")
    assert roles and all(r["rules"] == rules() + peering_rules() for r in roles)
    peerings = by_kind(docs, "KopfPeering" if namespaces else "ClusterKopfPeering")
    assert [p["metadata"]["name"] for p in peerings] == ["kubetrain"] * len(roles)
    (config_map,) = by_kind(docs, "ConfigMap")
    config = OperatorConfig.model_validate(yaml.safe_load(config_map["data"]["config.yaml"]))
    assert (config.peeringName, config.peeringPriority) == ("kubetrain", 10)


@pytest.mark.parametrize("namespaces", [None, "{team-a,team-b}"])
def test_the_finalizer_policy_is_rendered_where_served_and_bound_to_the_watched_namespaces(
    helm, namespaces
):
    scope = [f"watchNamespaces={namespaces}"] if namespaces else []
    assert not by_kind(render(helm, *scope), "MutatingAdmissionPolicy")  # an older cluster
    docs = render(helm, *scope, api_versions=(MAP_API,))
    (policy,) = by_kind(docs, "MutatingAdmissionPolicy")
    assert policy["spec"] == yaml.safe_load((CHART / "files" / "finalizer-policy.yaml").read_text())
    (binding,) = by_kind(docs, "MutatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    selector = binding["spec"].get("matchResources", {}).get("namespaceSelector")
    if namespaces:
        (term,) = selector["matchExpressions"]
        assert term["key"] == "kubernetes.io/metadata.name"
        assert (term["operator"], term["values"]) == ("In", ["team-a", "team-b"])
    else:
        assert selector is None  # every namespace, as the operator watches every one
    off = render(helm, *scope, "finalizerAtAdmission=false", api_versions=(MAP_API,))
    assert not by_kind(off, "MutatingAdmissionPolicy")


def test_deployment_is_one_restricted_replica_that_is_recreated(helm):
    (deploy,) = by_kind(render(helm), "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sec = container["securityContext"]
    assert sec["allowPrivilegeEscalation"] is False and sec["capabilities"] == {"drop": ["ALL"]}
    assert sec["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_config_map_is_an_operator_config_with_the_pool_catalogue(helm):
    (config_map,) = by_kind(render(helm, "defaultNodePool=cpu"), "ConfigMap")
    config = OperatorConfig.model_validate(yaml.safe_load(config_map["data"]["config.yaml"]))
    assert config.nodePools["a100"].gpu is True
    assert config.nodePools["a100"].tolerations[0].key == "nvidia.com/gpu"
    assert config.defaultNodePool == "cpu"


@pytest.mark.parametrize(
    "bad",
    [
        "bogus=1",
        "ray.mode=sideways",
        "nodePools.x.colour=red",
        "watchNamespaces={Bad_NS}",
        # generated from the models (kubetrain_operator.values_schema), if/then included
        "nodePools.x.tolerations[0].operator=Exists,nodePools.x.tolerations[0].value=v",
        "nodePools.x.tolerations[0].key=k,nodePools.x.tolerations[0].tolerationSeconds=30",
        "nodePools.x.gpuResource=gpu",
        "nodePools.Big_Pool.gpu=true",
        "defaultNodePool=A100",
        "runtime.defaultImage=img:tag:extra",
        # the install's own values
        "crds.install=maybe",
        "crds.keep=true",
        "metrics.serviceMonitor.interval=30 seconds",
        "metrics.serviceMonitor.colour=red",
        "metrics.serviceMonitor.namespace=Monitoring",
        "networkPolicy.namespaces={Bad_NS}",
        "networkPolicy.allowFrom[0].pods=all",
    ],
)
def test_the_values_schema_is_strict(helm, bad):
    with pytest.raises(subprocess.CalledProcessError):
        render(helm, bad)


def test_a_default_pool_outside_the_catalogue_fails_the_install(helm):
    """The values schema cannot relate two fields; the template refuses, naming both."""
    with pytest.raises(subprocess.CalledProcessError) as failed:
        render(helm, "defaultNodePool=gpu")
    assert 'defaultNodePool "gpu" is not one of nodePools (a100, cpu' in failed.value.stderr


def test_the_chart_renders_the_generated_crd_and_keeps_it_on_uninstall(helm):
    """One source: the chart's copy is the generated file (a symlink to it), rendered as a
    template (upgraded with the release), not from crds/ (installed once, never upgraded)."""
    copy = CHART / "files" / GENERATED_CRD.name
    assert copy.read_text() == GENERATED_CRD.read_text(), (
        f"{copy} differs from {GENERATED_CRD}: make it a symlink to it again"
    )
    assert not (CHART / "crds" / GENERATED_CRD.name).exists(), "Helm would never upgrade it"
    generated = yaml.safe_load(GENERATED_CRD.read_text())
    (crd,) = [
        d
        for d in by_kind(render(helm), "CustomResourceDefinition")
        if d["metadata"]["name"] == generated["metadata"]["name"]
    ]
    assert crd["spec"] == generated["spec"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert generated["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
    assert not by_kind(render(helm, "crds.install=false"), "CustomResourceDefinition")


def test_kopfs_peering_crds_stay_in_crds_for_helm_to_install_first():
    """A ClusterKopfPeering in the same release as its CRD needs the CRD before Helm maps
    the release's objects: crds/ is installed first, templates/ are not."""
    peering = CHART / "crds" / "kopf.dev_peerings.yaml"
    assert peering.read_text() == (REPO_ROOT / "crds" / "kopf.dev_peerings.yaml").read_text()


def test_deploy_is_what_render_sh_writes(helm, tmp_path):
    """deploy/kubetrain.yaml, the kustomize base and the namespaced overlay, byte for byte."""
    env = {**os.environ, "HELM": str(helm)}
    script = REPO_ROOT / "deploy" / "render.sh"
    subprocess.run([str(script), str(tmp_path)], env=env, check=True, capture_output=True)
    for name in RENDERED:
        fresh = (tmp_path / name).read_text()
        shipped = (REPO_ROOT / "deploy" / name).read_text()
        assert shipped == fresh, f"deploy/{name} is stale: run deploy/render.sh"


def test_the_plain_manifest_is_the_rendered_chart_with_its_crds(helm):
    text = (REPO_ROOT / "deploy" / "kubetrain.yaml").read_text()
    shipped = [d for d in yaml.safe_load_all(text) if d and d["kind"] != "Namespace"]
    peering = yaml.safe_load_all((CHART / "crds" / "kopf.dev_peerings.yaml").read_text())
    chart = render(helm, namespace="kubetrain-system", release="kubetrain")
    fresh = [d for d in peering if d] + chart
    assert shipped == fresh


# ------------------------------------------------------------------------ metrics


def test_the_metrics_service_serves_the_metrics_port(helm):
    (deploy,) = by_kind(render(helm, "metrics.port=9090"), "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": 9090} in container["ports"]
    (service,) = by_kind(render(helm, "metrics.port=9090"), "Service")
    assert service["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert not by_kind(render(helm, "metrics.port=0"), "Service")


def test_the_service_monitor_is_off_by_default_and_scrapes_the_metrics_service(helm):
    assert not by_kind(render(helm), "ServiceMonitor")
    docs = render(
        helm,
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.namespace=monitoring",
        "metrics.serviceMonitor.interval=15s",
        "metrics.serviceMonitor.scrapeTimeout=5s",
        "metrics.serviceMonitor.labels.release=prometheus",
    )
    (monitor,) = by_kind(docs, "ServiceMonitor")
    (service,) = by_kind(docs, "Service")
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = spec["endpoints"]
    assert endpoint == {
        "port": "metrics",
        "path": "/metrics",
        "scheme": "http",
        "interval": "15s",
        "scrapeTimeout": "5s",
    }
    with pytest.raises(subprocess.CalledProcessError):
        render(helm, "metrics.serviceMonitor.enabled=true", "metrics.port=0")


@pytest.fixture(scope="module")
def service_monitor_crd(kubectl: Callable[..., Any]) -> None:
    """The ServiceMonitor CRD of tests/cluster/fixtures, installed for real (a cluster that
    has the Prometheus Operator's own keeps it), and Established."""
    if kubectl("get", "crd", "servicemonitors.monitoring.coreos.com", check=False).returncode:
        kubectl("apply", "--server-side", "-f", str(SERVICE_MONITOR_CRD))
    kubectl("wait", "--for=condition=Established", "--timeout=30s",
            "crd/servicemonitors.monitoring.coreos.com")  # fmt: skip


def test_the_api_server_accepts_the_service_monitor(
    helm, kubectl, namespace, service_monitor_crd, tmp_path
):
    docs = render(
        helm,
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=prometheus",
        namespace=namespace,
    )
    manifest = tmp_path / "monitor.yaml"
    manifest.write_text(yaml.safe_dump_all(by_kind(docs, "ServiceMonitor")))
    result = kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=helm",
                     "-f", str(manifest), check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    bad = manifest.read_text().replace("scrapeTimeout", "scrapeTimeOut")
    manifest.write_text(bad)
    refused = kubectl("apply", "--server-side", "--dry-run=server", "-f", str(manifest),
                      check=False)  # fmt: skip
    assert refused.returncode != 0, "the fixture CRD is strict enough to catch a typo"


# ------------------------------------------------------------------ NetworkPolicy

RAY_SELECTOR = {
    "matchLabels": {"app.kubernetes.io/managed-by": "kubetrain-operator"},
    "matchExpressions": [
        {"key": "kubetrain.io/role", "operator": "In", "values": ["head", "worker"]}
    ],
}


def test_the_network_policy_lets_only_ray_pods_and_the_operator_in(helm):
    assert not by_kind(render(helm, "watchNamespaces={team-a}"), "NetworkPolicy")
    docs = render(helm, "watchNamespaces={team-a,team-b}", "networkPolicy.enabled=true")
    policies = by_kind(docs, "NetworkPolicy")
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["team-a", "team-b"]
    (deploy,) = by_kind(docs, "Deployment")
    operator_pods = deploy["spec"]["template"]["metadata"]["labels"]
    for policy in policies:
        spec = policy["spec"]
        assert spec["podSelector"] == RAY_SELECTOR and spec["policyTypes"] == ["Ingress"]
        ray, operator = spec["ingress"]
        assert ray == {"from": [{"podSelector": RAY_SELECTOR}]}, "every port, Ray to Ray"
        (peer,) = operator["from"]
        assert peer["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": "kt-system"}
        }
        assert peer["podSelector"]["matchLabels"].items() <= operator_pods.items()
        assert operator["ports"] == [{"port": 8265, "protocol": "TCP"}], "the dashboard"


def test_the_network_policy_admits_allow_from_and_needs_namespaces_when_cluster_wide(helm):
    docs = render(
        helm,
        "networkPolicy.enabled=true",
        "networkPolicy.namespaces={ml}",
        "networkPolicy.allowFrom[0].ipBlock.cidr=10.0.0.0/8",
    )
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert policy["metadata"]["namespace"] == "ml"
    extra = policy["spec"]["ingress"][2]
    assert extra["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    assert [p["port"] for p in extra["ports"]] == [8265, 10001]
    with pytest.raises(subprocess.CalledProcessError) as failed:
        render(helm, "networkPolicy.enabled=true")
    assert "networkPolicy.namespaces" in failed.value.stderr


# ---------------------------------------------------------------------- helm test


def create_service_accounts(kubectl: Callable[..., Any], docs: list[dict[str, Any]]) -> None:
    """For real: a dry-run Pod is refused when its ServiceAccount does not exist, and a dry
    run creates none."""
    accounts = by_kind(docs, "ServiceAccount")
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(accounts))


def test_helm_test_checks_readiness_and_the_crd_with_the_operator_image(helm):
    hooks = [
        d
        for d in render(helm, "image.tag=1.2.3", tests=True)
        if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
    ]
    assert sorted(d["kind"] for d in hooks) == ["Pod", "Role", "RoleBinding", "ServiceAccount"]
    (pod,) = by_kind(hooks, "Pod")
    (role,) = by_kind(hooks, "Role")
    assert role["rules"] == [
        {"apiGroups": ["kubetrain.io"], "resources": ["trainingjobs"], "verbs": ["list"]}
    ]
    assert pod["spec"]["serviceAccountName"] == role["metadata"]["name"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "kubetrain/operator:1.2.3"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["READYZ_URL"] == "http://kt-kubetrain-metrics.kt-system.svc:8080/readyz"
    assert "/namespaces/kt-system/trainingjobs" in env["JOBS_PATH"]
    (off,) = by_kind(render(helm, "metrics.port=0", tests=True), "Pod")
    assert off["spec"]["containers"][0]["env"][0] == {"name": "READYZ_URL", "value": ""}
    assert not by_kind(render(helm), "Pod"), "not in helm template --skip-tests (deploy/)"


class Readyz(http.server.BaseHTTPRequestHandler):
    """The operator's /readyz, as far as the hook's script can tell."""

    def do_GET(self) -> None:
        ok = self.path == "/readyz"
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"ok\n" if ok else b"no\n")

    def log_message(self, *args: Any) -> None:
        """Quiet."""


def test_the_helm_test_script_passes_against_the_api_server(
    helm, kubectl, kube_api, kubeconfig_path, namespace, trainingjob_crd, tmp_path
):
    """The hook pod's own script, run here as its ServiceAccount (a real token, only its
    hook Role) against the real API server, with a stand-in for the operator's /readyz. In
    a cluster it runs as `helm test` (the e2e tier)."""
    docs = render(helm, namespace=namespace, tests=True)
    hooks = [d for d in docs if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    access = [d for d in hooks if d["kind"] != "Pod"]
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(access))
    (pod,) = by_kind(hooks, "Pod")
    (container,) = pod["spec"]["containers"]
    account = pod["spec"]["serviceAccountName"]
    token = k8s.CoreV1Api(kube_api).create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 600}}
    )
    secrets = tmp_path / "serviceaccount"
    secrets.mkdir()
    (secrets / "token").write_text(token.status.token)
    (cluster,) = yaml.safe_load(kubeconfig_path.read_text())["clusters"]
    ca = cluster["cluster"]["certificate-authority-data"]
    (secrets / "ca.crt").write_bytes(base64.b64decode(ca))
    server = urllib.parse.urlsplit(cluster["cluster"]["server"])
    readyz = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Readyz)
    threading.Thread(target=readyz.serve_forever, daemon=True).start()
    env = {e["name"]: e["value"] for e in container["env"]}
    env |= {
        "READYZ_URL": f"http://127.0.0.1:{readyz.server_address[1]}/readyz",
        "KUBERNETES_SERVICE_HOST": str(server.hostname),
        "KUBERNETES_SERVICE_PORT": str(server.port),
        "SERVICEACCOUNT_DIR": str(secrets),
        "PATH": os.environ["PATH"],
    }
    try:
        command = [sys.executable, *container["command"][1:], *container["args"]]
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=120, check=False
        )
    finally:
        readyz.shutdown()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   operator ready (200)" in done.stdout
    assert "ok   TrainingJobs are served (200)" in done.stdout


def test_the_helm_test_pod_passes_the_restricted_pod_security_standard(
    helm, kubectl, namespace, tmp_path
):
    """Pod Security admission enforces on a server-side dry run too; a pod it must refuse
    shows that it does here."""
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    docs = render(helm, namespace=namespace, tests=True)
    hooks = [d for d in docs if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    manifest = tmp_path / "hooks.yaml"
    manifest.write_text(yaml.safe_dump_all(hooks))
    create_service_accounts(kubectl, hooks)
    result = kubectl("apply", "--dry-run=server", "-f", str(manifest), check=False)
    assert result.returncode == 0, result.stderr
    (pod,) = by_kind(hooks, "Pod")
    del pod["spec"]["containers"][0]["securityContext"]["capabilities"]
    manifest.write_text(yaml.safe_dump(pod))
    refused = kubectl("apply", "--dry-run=server", "-f", str(manifest), check=False)
    assert refused.returncode != 0 and "restricted" in refused.stderr


def test_the_api_server_accepts_the_rendered_chart(helm, kubectl, namespace, tmp_path):
    manifest = tmp_path / "chart.yaml"
    docs = render(
        helm,
        f"watchNamespaces={{{namespace}}}",
        "networkPolicy.enabled=true",
        "networkPolicy.allowFrom[0].podSelector.matchLabels.app=notebook",
        namespace=namespace,
        api_versions=(MAP_API,),
        tests=True,
    )
    kinds = {d["kind"] for d in docs}
    covered = {"MutatingAdmissionPolicy", "CustomResourceDefinition", "Service", "NetworkPolicy"}
    assert covered | {"Pod"} <= kinds, "the dry run covers the optional objects too"
    manifest.write_text(yaml.safe_dump_all(docs))
    create_service_accounts(kubectl, docs)
    result = kubectl("apply", "--dry-run=server", "-f", str(manifest), check=False)
    assert result.returncode == 0, result.stderr
