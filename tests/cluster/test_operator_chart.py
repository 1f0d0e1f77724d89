"""The Helm chart: RBAC rendered from the one rules file in both install modes, a hardened
single-replica Deployment, a config the operator accepts, a strict values schema, the CRD
from crds/, and manifests the real API server accepts (server-side dry run)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_fixtures import REPO_ROOT, peering_rules, rules

from kubetrain_operator.config import OperatorConfig

pytestmark = pytest.mark.cluster
CHART = REPO_ROOT / "charts" / "kubetrain"


@pytest.fixture(scope="module")
def helm() -> Path:
    found = subprocess.run(
        [str(REPO_ROOT / "e2e" / "build-tools.sh"), "helm", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        pytest.skip("helm is not built (e2e/build-tools.sh helm)")
    return Path(found.stdout.strip().splitlines()[-1]) / "helm"


#: What `helm install` discovers on a cluster that serves MutatingAdmissionPolicy v1 (as
#: this one does); `helm template` assumes no such API unless told.
MAP_API = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"


def render(
    helm: Path,
    *sets: str,
    namespace: str = "kt-system",
    release: str = "kt",
    api_versions: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    args = [str(helm), "template", release, str(CHART), "--namespace", namespace]
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


def test_the_chart_ships_the_crds_file():
    assert (CHART / "crds" / "kubetrain.io_trainingjobs.yaml").read_text() == (
        REPO_ROOT / "crds" / "kubetrain.io_trainingjobs.yaml"
    ).read_text()


def test_the_plain_manifest_is_the_rendered_chart(helm):
    text = (REPO_ROOT / "deploy" / "kubetrain.yaml").read_text()
    shipped = [d for d in yaml.safe_load_all(text) if d and d["kind"] != "Namespace"]
    fresh = render(helm, namespace="kubetrain-system", release="kubetrain")
    assert shipped == fresh, "deploy/kubetrain.yaml is stale: run deploy/render.sh"


def test_the_api_server_accepts_the_rendered_chart(helm, kubectl, namespace, tmp_path):
    manifest = tmp_path / "chart.yaml"
    docs = render(
        helm, f"watchNamespaces={{{namespace}}}", namespace=namespace, api_versions=(MAP_API,)
    )
    assert by_kind(docs, "MutatingAdmissionPolicy"), "the dry run covers the policy too"
    manifest.write_text(yaml.safe_dump_all(docs))
    result = kubectl("apply", "--dry-run=server", "-f", str(manifest), check=False)
    assert result.returncode == 0, result.stderr
