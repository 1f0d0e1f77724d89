"""Install and upgrade as a cluster user does: `helm install` the chart, create a
TrainingJob, `helm upgrade` to a chart whose CRD has a new optional field, and `helm
uninstall`. The CRD is a template of the release, so the upgrade serves the new field (kept,
not pruned) without touching the job, and uninstalling keeps the CRD and every job
(`helm.sh/resource-policy: keep`).

The session's control plane installed the CRD from crds/ with kubectl, as an older chart
(its crds/ folder) or an admin would have: the chart first leaves such a CRD alone, and takes
it over once handed to the release as NOTES.txt says. The operator's pod does not become
ready here (kwok nodes, no image), so nothing waits for it; the test is about the CRD and the
jobs. At the end the CRD is the one from crds/ again, for the rest of the session.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from operator_fixtures import GROUP, PLURAL, REPO_ROOT, VERSION, Jobs, job_body, pinned_helm

pytestmark = pytest.mark.cluster
CHART = REPO_ROOT / "charts" / "kubetrain"
CRD_FILE = REPO_ROOT / "crds" / "kubetrain.io_trainingjobs.yaml"
CRD_NAME = "trainingjobs.kubetrain.io"
#: The optional field that chart version N+1 adds to the spec schema.
NEW_FIELD = "upgradeNote"
Helm = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def helm(kubeconfig_path: Path) -> Helm:
    """The pinned helm (e2e/build-tools.sh), logged in to the session's cluster."""
    exe = pinned_helm()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(exe), f"--kubeconfig={kubeconfig_path}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stderr}"
        return proc

    return run


def next_chart(tmp_path: Path) -> Path:
    """Chart version N+1: the current chart (symlinks resolved), its version's patch level
    raised, and its CRD with one more optional field in the spec."""
    chart = tmp_path / "kubetrain"
    shutil.copytree(CHART, chart, symlinks=False)
    meta_file = chart / "Chart.yaml"
    meta = yaml.safe_load(meta_file.read_text())
    major, minor, patch = meta["version"].split(".")
    meta["version"] = f"{major}.{minor}.{int(patch) + 1}"
    meta_file.write_text(yaml.safe_dump(meta, sort_keys=False))
    crd_file = chart / "files" / CRD_FILE.name
    crd = yaml.safe_load(crd_file.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert NEW_FIELD not in spec["properties"]
    spec["properties"][NEW_FIELD] = {"type": "string", "description": "Added by chart N+1."}
    crd_file.write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def spec_fields(ext: k8s.ApiextensionsV1Api) -> set[str]:
    crd = ext.read_custom_resource_definition(CRD_NAME)
    return set(crd.spec.versions[0].schema.open_apiv3_schema.properties["spec"].properties)


def ownership(ext: k8s.ApiextensionsV1Api) -> dict[str, str | None]:
    """The live CRD's Helm ownership metadata and resource policy."""
    meta = ext.read_custom_resource_definition(CRD_NAME).metadata
    labels, annotations = meta.labels or {}, meta.annotations or {}
    return {
        "managed-by": labels.get("app.kubernetes.io/managed-by"),
        "release": annotations.get("meta.helm.sh/release-name"),
        "namespace": annotations.get("meta.helm.sh/release-namespace"),
        "policy": annotations.get("helm.sh/resource-policy"),
    }


@pytest.fixture
def restored_crd(kube_api: k8s.ApiClient, trainingjob_crd: dict[str, Any]) -> Iterator[None]:
    """Afterwards the CRD is crds/'s again (no Helm metadata, no new field), as the
    session's other tests expect it."""
    yield
    ext = k8s.ApiextensionsV1Api(kube_api)
    crd = yaml.safe_load(CRD_FILE.read_text())
    live = ext.read_custom_resource_definition(CRD_NAME)
    crd["metadata"]["resourceVersion"] = live.metadata.resource_version
    ext.replace_custom_resource_definition(CRD_NAME, crd)


def release_objects(manifest: str) -> list[tuple[str, str]]:
    return [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(manifest) if d]


def test_upgrade_serves_the_new_crd_and_uninstall_keeps_it_and_the_jobs(
    helm, kube_api, namespace, restored_crd, tmp_path, wait_until
):
    ext = k8s.ApiextensionsV1Api(kube_api)
    jobs = Jobs(kube_api, namespace)
    release = f"up-{namespace[-6:]}"
    # Scoped to the test's namespace: the finalizer policy's binding and the RBAC with it.
    values = ["-n", namespace, "--set", f"watchNamespaces={{{namespace}}}"]
    installed = False
    try:
        # 1. A CRD applied outside Helm is left alone, and NOTES.txt says how to hand it over.
        dry = helm("install", release, str(CHART), *values, "--dry-run=server")
        assert ("CustomResourceDefinition", CRD_NAME) not in release_objects(
            dry.stdout.split("MANIFEST:", 1)[1].split("NOTES:", 1)[0]
        )
        assert f"WARNING: the CRD {CRD_NAME} exists and is not this release's" in " ".join(
            dry.stdout.split()
        )
        assert ownership(ext)["release"] is None

        # 2. Handed over as NOTES.txt says, version N takes it into the release.
        hand_over(ext, release, namespace)
        helm("install", release, str(CHART), *values)
        installed = True
        manifest = helm("get", "manifest", release, "-n", namespace).stdout
        assert ("CustomResourceDefinition", CRD_NAME) in release_objects(manifest)
        assert ownership(ext) == {
            "managed-by": "Helm",
            "release": release,
            "namespace": namespace,
            "policy": "keep",
        }
        assert NEW_FIELD not in spec_fields(ext)

        # 3. A job of version N.
        before = jobs.create(job_body("before-upgrade"))

        # 4. `helm upgrade` to N+1 upgrades the CRD: the new field is served, not pruned.
        upgraded = helm("upgrade", release, str(next_chart(tmp_path)), *values)
        assert "is part of this release" in upgraded.stdout
        assert NEW_FIELD in spec_fields(ext)
        body = job_body("after-upgrade")
        body["spec"][NEW_FIELD] = "kept"

        def kept_in_dry_run() -> bool:
            answer = jobs.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body, dry_run="All"
            )
            return answer["spec"].get(NEW_FIELD) == "kept"

        wait_until(kept_in_dry_run, timeout=30, what=f"spec.{NEW_FIELD} to be served")
        jobs.create(body)
        assert (jobs.get("after-upgrade") or {})["spec"][NEW_FIELD] == "kept"

        # 5. The job of version N is untouched: not rewritten, same spec.
        after = jobs.get("before-upgrade")
        assert after is not None
        for field in ("uid", "resourceVersion", "generation"):
            assert after["metadata"][field] == before["metadata"][field], field
        assert after["spec"] == before["spec"]

        # 6. `helm uninstall` keeps the CRD (N+1's) and both jobs.
        gone = helm("uninstall", release, "-n", namespace)
        installed = False
        assert CRD_NAME in gone.stdout + gone.stderr, "Helm names what the policy kept"
        assert NEW_FIELD in spec_fields(ext)
        assert jobs.get("before-upgrade") and jobs.get("after-upgrade")
        listed = jobs.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        assert sorted(j["metadata"]["name"] for j in listed["items"]) == [
            "after-upgrade",
            "before-upgrade",
        ]
    finally:
        if installed:
            helm("uninstall", release, "-n", namespace)
        release_jobs(jobs)


def hand_over(ext: k8s.ApiextensionsV1Api, release: str, namespace: str) -> None:
    """What NOTES.txt tells the user to run (`kubectl label` and `kubectl annotate` the CRD),
    as one patch."""
    patch = {
        "metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": release,
                "meta.helm.sh/release-namespace": namespace,
            },
        }
    }
    ext.patch_custom_resource_definition(CRD_NAME, patch)


def release_jobs(jobs: Jobs) -> None:
    """Delete the test's jobs: no operator runs to remove the finalizer that the release's
    admission policy put on them, so drop it first (else the namespace never goes)."""
    listed = jobs.custom.list_namespaced_custom_object(GROUP, VERSION, jobs.ns, PLURAL)
    for job in listed["items"]:
        name = job["metadata"]["name"]
        try:
            jobs.custom.patch_namespaced_custom_object(
                GROUP, VERSION, jobs.ns, PLURAL, name, {"metadata": {"finalizers": None}}
            )
            jobs.delete(name)
        except ApiException as e:
            if e.status != 404:
                raise
