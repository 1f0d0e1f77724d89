"""Every example TrainingJob, applied with kubectl, trains inside the cluster: real Ray head
and worker pods on the real node, Ray Data and Ray Train in them, status written back by the
runtime, outputs on the namespace's claim, and every child gone with the job.

The operator is the chart's, running as a pod from its image (``operator_release``); the
test process only runs ``kubectl`` and ``helm``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from e2e_support import (
    OUTPUT_CLAIM,
    RELEASE,
    RELEASE_NAMESPACE,
    REPO_ROOT,
    RESTRICTED,
    children_left,
    follow_job,
    get_json,
    report,
    shrunk_example,
)
from kube_session import localcluster

from kubetrain_runtime.datasets import write_digits_png

pytestmark = pytest.mark.e2e

EXAMPLES = sorted(p.stem for p in (REPO_ROOT / "examples").glob("*.yaml"))
#: What the runtime writes under a job's output root (``runtime/kubetrain_runtime/outputs.py``).
OUTPUTS = {"model/model.pt", "metrics.json", "data_report.json"}
CHILD_KINDS = "pods,services,configmaps,serviceaccounts,roles,rolebindings"


def kubetrain_cli(kubeconfig: object, namespace: str):
    """The ``kubetrain`` cluster commands as a user runs them, with the test's kubeconfig."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "kubetrain.cli", *args, "-n", namespace],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip

    return run


def failure_report(workspace, status: dict) -> str:
    """The status and the end of the driver's log on the claim: the message in status is
    cut short, and the cause of a failed attempt is often only in the log."""
    log_uri = status.get("artifacts", {}).get("logUri", "")
    tail = workspace.exec("sh", "-c", f"tail -c 6000 {log_uri} 2>&1 || true") if log_uri else ""
    return f"{json.dumps(status, indent=2)[-3000:]}\n--- {log_uri or 'no driver log'}:\n{tail}"


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_trains_in_the_cluster(example, workspace, kubectl, cluster_info, tmp_path):
    job = shrunk_example(example)
    name = job["metadata"]["name"]
    if example == "iris-csv-mlp":  # its CSV sits beside the manifest: put it where pods see it
        workspace.copy_in(REPO_ROOT / "examples" / "data" / "iris-dirty.csv",
                          "/output/data/iris-dirty.csv")  # fmt: skip
    if example == "digits-images-cnn":  # its PNG class folders, as its header writes them
        folder = tmp_path / "digits-png"
        write_digits_png(folder, scale=4)
        workspace.copy_in(folder, "/output/data/digits-png")
    kubectl("apply", "-n", workspace.name, "-f", "-", stdin=yaml.safe_dump(job))

    final, timeline = follow_job(kubectl, workspace.name, name)
    status = final["status"]
    report(f"example:{example}", {"milestones": timeline.seen, "status": {
        k: status.get(k) for k in ("phase", "reason", "message", "keyMetric", "metrics", "attempts")
    }})  # fmt: skip
    assert status["phase"] == "Succeeded", failure_report(workspace, status)

    # The cluster ran on the real node, and status moved through both stages with live data.
    node_sets = [s["nodes"] for s in timeline.samples if s["nodes"]]
    assert node_sets, "no Ray pod was ever seen scheduled"
    if not cluster_info.external:
        assert all(nodes == [localcluster.REAL_NODE] for nodes in node_sets), node_sets
    for milestone in ("pods_running", "ray_up", "stage_data", "stage_training", "succeeded"):
        assert milestone in timeline.seen, timeline.seen
    assert timeline.seen["stage_data"] <= timeline.seen["stage_training"]
    live = [s for s in timeline.samples if s["phase"] == "Running" and s["progress"].get("percent")]
    assert live, "no live progress was seen while the job ran"
    running = [s for s in timeline.samples if s["phase"] == "Running"]
    assert any(s["dataStats"] for s in running), "no data statistics while the job ran"
    assert any(s["metrics"] for s in running), "no metrics while the job ran"
    assert status["progress"]["percent"] == 100
    assert status["progress"]["epoch"] == job["spec"]["training"]["epochs"]
    assert status["metrics"] and status["keyMetric"]
    assert status["dataStats"]["rowsRead"] > 0

    # The printer columns show progress and the key metric.
    table = kubectl("get", "trainingjob", name, "-n", workspace.name).stdout
    header, row = table.splitlines()[:2]
    assert "PROGRESS" in header and "METRIC" in header
    assert "Succeeded" in row and "100" in row and status["keyMetric"] in row

    # The outputs are on the claim, where status says they are.
    artifacts = status["artifacts"]
    root = artifacts["outputUri"]
    assert root.startswith("/output/"), root
    files = workspace.files(root)
    assert files >= OUTPUTS, sorted(files)
    if job["spec"].get("output", {}).get("plots", True):
        assert any(f.startswith("plots/") and f.endswith(".png") for f in files), sorted(files)
    assert any(f.startswith("checkpoints/") for f in files), sorted(files)
    history = json.loads(workspace.exec("cat", f"{root}/metrics.json"))
    assert history, "metrics.json is empty"

    # The driver's log outlives the Ray cluster: on the claim, and in the cluster for
    # `kubetrain logs` (Ray's own copy while the head is kept, else the saved one).
    assert artifacts["logUri"] == f"{root}/logs/driver.log", artifacts
    assert "logs/driver.log" in files, sorted(files)
    cli = kubetrain_cli(cluster_info.kubeconfig, workspace.name)
    logs = cli("logs", name)
    assert logs.returncode == 0, logs.stderr
    assert "KUBETRAIN_EVENT" in logs.stdout, logs.stdout[-2000:]
    kept_head = job["spec"].get("runPolicy", {}).get("cleanupPolicy") in ("KeepHead", "KeepAll")
    assert ("Ray job" if kept_head else "saved copy") in logs.stderr, logs.stderr
    described = cli("describe", name).stdout
    assert "Phase:       Succeeded" in described, described
    assert f"driver log: {root}/logs/driver.log" in described, described
    assert name in cli("list").stdout

    # Deleting the job removes every child.
    uid = final["metadata"]["uid"]
    kubectl("delete", "trainingjob", name, "-n", workspace.name, "--wait", "--timeout=120s")
    assert children_left(kubectl, workspace.name, uid, CHILD_KINDS) == []


def test_the_operator_runs_as_a_pod_from_its_image(operator_release, images, cluster_info, helm):
    (pod,) = operator_release["pods"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == images.operator
    assert pod["status"]["phase"] == "Running"
    assert all(c["ready"] for c in pod["status"]["containerStatuses"])
    if not cluster_info.external:
        assert pod["spec"]["nodeName"] == localcluster.REAL_NODE
    # The chart's own `helm test`: the operator ready, TrainingJobs served, from a pod.
    tested = helm("test", RELEASE, "-n", RELEASE_NAMESPACE, "--timeout", "120s", timeout=180)
    assert "Phase:          Succeeded" in tested.stdout, tested.stdout


def test_namespaces_enforce_restricted_pod_security(workspace, kubectl, images):
    """The namespaces the jobs ran in reject a pod that breaks the restricted standard, so
    the Ray pods that started there passed it."""
    labels = get_json(kubectl, "namespace", workspace.name)["metadata"]["labels"]
    assert RESTRICTED.items() <= labels.items()
    root_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "runs-as-root"},
        "spec": {"containers": [{"name": "c", "image": images.runtime,
                                 "securityContext": {"runAsUser": 0}}],
                 "volumes": [{"name": "o", "persistentVolumeClaim": {"claimName": OUTPUT_CLAIM}}]},
    }  # fmt: skip
    refused = kubectl("apply", "-n", workspace.name, "-f", "-", stdin=json.dumps(root_pod),
                      check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr and "restricted" in refused.stderr
