"""deploy/ as kustomize: the base (the chart rendered with its defaults) and the overlays
deploy/overlays/cluster-wide and deploy/overlays/namespaced build with kubectl's built-in
kustomize, say what the chart says (RBAC from the one rules file, the watch list), keep the
namespaced install free of anything cluster-scoped, and are accepted by the real API server
(server-side apply, dry run). That the rendered files are current: test_operator_chart.py."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_fixtures import REPO_ROOT, rules

from kubetrain_operator.config import OperatorConfig

pytestmark = pytest.mark.cluster
OVERLAYS = REPO_ROOT / "deploy" / "overlays"
Kubectl = Callable[..., Any]


def build(kubectl: Kubectl, folder: Path) -> list[dict[str, Any]]:
    out = kubectl("kustomize", str(folder)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def config_of(docs: list[dict[str, Any]]) -> OperatorConfig:
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    return OperatorConfig.model_validate(yaml.safe_load(config_map["data"]["config.yaml"]))


@pytest.fixture(scope="module")
def cluster_scoped_kinds(kubectl: Kubectl) -> set[str]:
    """Kinds the API server serves without a namespace (its own discovery says which)."""
    out = kubectl("api-resources", "--namespaced=false", "--no-headers").stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_the_cluster_wide_overlay_is_the_whole_chart_with_its_crds(kubectl):
    docs = build(kubectl, OVERLAYS / "cluster-wide")
    assert kinds(docs) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "Service",
        "ServiceAccount",
    ]
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert crds == {
        "trainingjobs.kubetrain.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    assert role["rules"] == rules()
    assert config_of(docs).namespaces == [], "every namespace"


def test_the_namespaced_overlay_has_nothing_cluster_scoped(kubectl, cluster_scoped_kinds):
    docs = build(kubectl, OVERLAYS / "namespaced")
    assert not [d["kind"] for d in docs if d["kind"] in cluster_scoped_kinds]
    assert {d["metadata"]["namespace"] for d in docs} == {"kubetrain"}
    roles = [d for d in docs if d["kind"] == "Role"]
    assert [r["metadata"]["namespace"] for r in roles] == ["kubetrain"]
    assert roles[0]["rules"] == rules()
    assert config_of(docs).namespaces == ["kubetrain"], "RBAC and the watch list match"


@pytest.mark.parametrize("overlay", ["cluster-wide", "namespaced"])
def test_the_api_server_accepts_the_overlay(kubectl, namespace, trainingjob_crd, overlay, tmp_path):
    """Applied as a user's own overlay on top would (kustomize's `namespace:`, here the
    test's fresh namespace), server-side with a dry run. The CRDs are the session's real
    ones (trainingjob_crd); nothing in the overlays is an object of them."""
    wrapper = tmp_path / "kustomization.yaml"
    wrapper.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": namespace,
                "resources": [os.path.relpath(OVERLAYS / overlay, tmp_path)],
            }
        )
    )
    built = kubectl("kustomize", str(tmp_path)).stdout
    manifest = tmp_path / "built.yaml"
    manifest.write_text(built)
    docs = [d for d in yaml.safe_load_all(built) if d]
    namespaced = [d for d in docs if "namespace" in d["metadata"]]
    assert namespaced and all(d["metadata"]["namespace"] == namespace for d in namespaced)
    result = kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server",
                     "-f", str(manifest), check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
