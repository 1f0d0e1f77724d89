"""The ``kubetrain`` cluster commands against the real API server, run as a user runs them
(a subprocess with a kubeconfig), judged by what they print.

No Ray runs here: the test plays the job. The operator's part (phase, conditions, the saved
driver log) is written as the operator writes it; the runtime's part (stages, data
statistics, epochs) goes through the runtime's own ``StatusReporter`` with a ServiceAccount
token that may patch only this job's status, as in a Ray head pod."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import pytest
import yaml
from operator_fixtures import GROUP, PLURAL, VERSION, Jobs, job_body

from kubetrain.api.v1alpha1 import DataStats, Progress, RuleDrop, TrainingJob
from kubetrain.client import Client, ClusterError
from kubetrain_runtime.status_reporter import StatusPatcher, StatusReporter

pytestmark = pytest.mark.cluster


@pytest.fixture
def jobs(kube_api: k8s.ApiClient, namespace: str, trainingjob_crd: Any) -> Jobs:
    return Jobs(kube_api, namespace)


def kubetrain(
    kubeconfig: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "kubetrain.cli", *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def manifest(tmp_path: Path, name: str, **spec: Any) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job_body(name, **spec)))
    return path


def patch_status(jobs: Jobs, name: str, status: dict[str, Any]) -> None:
    jobs.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, jobs.ns, PLURAL, name, {"status": status}
    )


def runtime_patcher(kube_api: k8s.ApiClient, namespace: str, name: str) -> StatusPatcher:
    """A token of a ServiceAccount that may patch only this job's status (the runtime's)."""
    core, rbac = k8s.CoreV1Api(kube_api), k8s.RbacAuthorizationV1Api(kube_api)
    account = f"{name}-runtime"
    core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
    rule = {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"],
            "resourceNames": [name], "verbs": ["get", "patch"]}  # fmt: skip
    rbac.create_namespaced_role(namespace, {"metadata": {"name": account}, "rules": [rule]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": account},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    })  # fmt: skip
    token = core.create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    cfg = kube_api.configuration
    return StatusPatcher(cfg.host, namespace, name, token, cfg.ssl_ca_cert)


def condition(kind: str, reason: str, message: str) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": now}  # fmt: skip


def play(jobs: Jobs, kube_api: k8s.ApiClient, name: str, *, succeed: bool) -> None:
    """The job's life as the operator and the runtime write it, a beat between steps."""
    beat = 0.6
    time.sleep(3)  # the watching CLI starts (and sees the job without status) first
    waiting = "waiting for 2 Ray pods to be running and ready"
    for phase, reason in (("Pending", "Scheduling"), ("Provisioning", "Provisioning")):
        patch_status(jobs, name, {"phase": phase, "reason": reason, "message": waiting})
        time.sleep(beat)
    cluster = f"{name}-0123abcd"
    patch_status(jobs, name, {
        "phase": "Running", "reason": "RayJobSubmitted", "message": "attempt 1 submitted",
        "attempts": 1, "rayClusterName": cluster, "submissionId": f"kubetrain-{name}-1",
        "conditions": [condition("Running", "RayJobSubmitted", "attempt 1 submitted")],
    })  # fmt: skip
    stored = TrainingJob.model_validate(jobs.get(name))
    reporter = StatusReporter(stored, patcher=runtime_patcher(kube_api, jobs.ns, name),
                              min_interval=0)  # fmt: skip
    reporter.stage("data")
    time.sleep(beat)
    stats = DataStats(rowsRead=150, rowsAfterCleaning=147, trainRows=117, validationRows=30,
                      droppedByRule=[RuleDrop(rule="dropNulls", dropped=3)])  # fmt: skip
    reporter.data_ready(stats, {})
    reporter.stage("training")
    time.sleep(beat)
    if not succeed:
        patch_status(jobs, name, {
            "phase": "Failed", "reason": "OOMKilled", "message": "attempt 1: worker 0 ran out "
            "of memory (limit 1Gi)", "conditions": [condition("Failed", "OOMKilled", "oom")],
        })  # fmt: skip
        return
    for epoch in (1, 2, 3):
        progress = Progress(stage="training", epoch=epoch, totalEpochs=3, percent=30 * epoch,
                            samplesPerSecond=5000.0, etaSeconds=3 - epoch)  # fmt: skip
        reporter.epoch(progress, {"train_loss": 1.0 / epoch, "val_accuracy": 0.8 + epoch / 100})
        time.sleep(beat)
    reporter.stage("finishing")
    log_map = f"{cluster}-driver-log"
    jobs.core.create_namespaced_config_map(jobs.ns, {
        "metadata": {"name": log_map},
        "data": {"driver.log": "reading iris\nepoch 3/3 val_accuracy=0.83\nfinished\n"},
    })  # fmt: skip
    patch_status(jobs, name, {
        "phase": "Succeeded", "reason": "Succeeded", "message": "attempt 1 succeeded",
        "progress": {"percent": 100, "epoch": 3, "totalEpochs": 3, "stage": "finishing"},
        "metrics": {"val_accuracy": 0.83, "train_loss": 0.33, "epoch": 3},
        "keyMetric": "val_accuracy=0.83",
        "artifacts": {"outputUri": f"/output/{name}", "modelUri": f"/output/{name}/model/model.pt",
                      "logUri": f"/output/{name}/logs/driver.log", "logConfigMap": log_map},
        "conditions": [condition("Succeeded", "Succeeded", "attempt 1 succeeded")],
    })  # fmt: skip


@pytest.fixture
def played(jobs: Jobs, kube_api: k8s.ApiClient):
    threads: list[threading.Thread] = []

    def start(name: str, *, succeed: bool = True) -> None:
        thread = threading.Thread(
            target=play, args=(jobs, kube_api, name), kwargs={"succeed": succeed}
        )
        thread.start()
        threads.append(thread)

    yield start
    for thread in threads:
        thread.join(timeout=60)


def test_submit_watch_get_describe_and_logs_of_a_job_that_succeeds(
    jobs: Jobs, kubeconfig_path: Path, tmp_path: Path, played
):
    path = manifest(tmp_path, "iris-ok")
    ns = ["-n", jobs.ns]
    submitted = kubetrain(kubeconfig_path, "submit", str(path), *ns)
    assert submitted.returncode == 0, submitted.stderr
    assert submitted.stdout.strip() == "trainingjob.kubetrain.io/iris-ok created"
    again = kubetrain(kubeconfig_path, "submit", str(path), *ns)
    assert again.stdout.strip() == "trainingjob.kubetrain.io/iris-ok unchanged", again.stderr
    document = yaml.safe_load(path.read_text())
    document["spec"]["runPolicy"] = {"ttlSecondsAfterFinished": 600}
    path.write_text(yaml.safe_dump(document))
    edited = kubetrain(kubeconfig_path, "submit", str(path), *ns)
    assert edited.stdout.strip() == "trainingjob.kubetrain.io/iris-ok configured", edited.stderr
    assert jobs.get("iris-ok")["spec"]["runPolicy"]["ttlSecondsAfterFinished"] == 600
    path.write_text(path.read_text().replace("epochs: 1", "epochs: 3"))
    immutable = kubetrain(kubeconfig_path, "submit", str(path), *ns)
    assert immutable.returncode == 1 and immutable.stderr.count("\n") == 1, immutable.stderr
    assert "spec.training" in immutable.stderr and "immutable" in immutable.stderr
    assert jobs.get("iris-ok")["spec"]["training"]["epochs"] == 1

    played("iris-ok")
    watched = kubetrain(kubeconfig_path, "watch", "iris-ok", *ns)
    print(watched.stdout)
    assert watched.returncode == 0, watched.stderr
    out = watched.stdout
    for seen in (
        "Waiting for pods",
        "Starting the Ray cluster",
        "Reading and cleaning",
        "150 rows → 147 after cleaning → 117 train / 30 validation",
        "epoch 3/3",
        "✓ iris-ok",
        "attempt 1 succeeded",
        "/output/iris-ok/model/model.pt",
    ):
        assert seen in out, (seen, out)  # fmt: skip
    assert out.index("Reading and cleaning") < out.index("epoch 1/3") < out.index("epoch 3/3")

    table = kubetrain(kubeconfig_path, "get", *ns).stdout
    print(table)
    header, row = table.splitlines()
    assert header.split() == ["NAME", "PHASE", "STAGE", "PROGRESS", "METRIC", "MODEL", "AGE"]
    assert row.split()[:6] == [
        "iris-ok",
        "Succeeded",
        "finishing",
        "100%",
        "val_accuracy=0.83",
        "mlp",
    ]
    listed = kubetrain(kubeconfig_path, "list", *ns).stdout.splitlines()
    assert [line.split()[:6] for line in listed] == [header.split()[:6], row.split()[:6]]

    described = kubetrain(kubeconfig_path, "describe", "iris-ok", *ns)
    print(described.stdout)
    text = described.stdout
    for seen in (
        "Phase:       Succeeded (Succeeded)",
        "Succeeded=True Succeeded: attempt 1 succeeded",
        "rows read: 150",
        "dropped by dropNulls: 3",
        "val_accuracy = 0.83",
        "driver log: /output/iris-ok/logs/driver.log",
        "model: /output/iris-ok/model/model.pt",
    ):
        assert seen in text, (seen, text)  # fmt: skip

    logs = kubetrain(kubeconfig_path, "logs", "iris-ok", *ns)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "reading iris\nepoch 3/3 val_accuracy=0.83\nfinished\n"
    assert "saved copy (configmap iris-ok-0123abcd-driver-log" in logs.stderr


def test_watch_of_a_job_that_fails_exits_1_with_its_reason(
    jobs: Jobs, kubeconfig_path: Path, tmp_path: Path, played
):
    path = manifest(tmp_path, "iris-oom")
    assert kubetrain(kubeconfig_path, "submit", str(path), "-n", jobs.ns).returncode == 0
    played("iris-oom", succeed=False)
    watched = kubetrain(kubeconfig_path, "watch", "iris-oom", "-n", jobs.ns)
    print(watched.stdout, watched.stderr)
    assert watched.returncode == 1
    assert "failed" in watched.stdout
    assert watched.stderr.strip().splitlines()[-1] == (
        "error: trainingjob iris-oom failed: attempt 1: worker 0 ran out of memory (limit 1Gi)"
    )
    row = kubetrain(kubeconfig_path, "get", "iris-oom", "-n", jobs.ns).stdout
    print(row)
    assert row.splitlines()[1].split()[:3] == ["iris-oom", "Failed", "training"]
    described = kubetrain(kubeconfig_path, "describe", "iris-oom", "-n", jobs.ns).stdout
    print(described)
    assert "Phase:       Failed (OOMKilled)" in described
    assert "Message:     attempt 1: worker 0 ran out of memory (limit 1Gi)" in described
    logs = kubetrain(kubeconfig_path, "logs", "iris-oom", "-n", jobs.ns)
    print(logs.stderr)
    assert logs.returncode == 1 and logs.stderr.startswith("error: no driver log for trainingjob")


def test_suspend_resume_and_delete(jobs: Jobs, kubeconfig_path: Path, tmp_path: Path):
    ns = ["-n", jobs.ns]
    assert (
        kubetrain(kubeconfig_path, "submit", str(manifest(tmp_path, "pausable")), *ns).returncode
        == 0
    )
    out = kubetrain(kubeconfig_path, "suspend", "pausable", *ns)
    assert out.stdout.strip() == "trainingjob.kubetrain.io/pausable suspended", out.stderr
    assert jobs.get("pausable")["spec"]["runPolicy"]["suspend"] is True
    out = kubetrain(kubeconfig_path, "resume", "pausable", *ns)
    assert out.stdout.strip() == "trainingjob.kubetrain.io/pausable resumed", out.stderr
    assert jobs.get("pausable")["spec"]["runPolicy"]["suspend"] is False
    out = kubetrain(kubeconfig_path, "delete", "pausable", *ns)
    assert out.stdout.strip() == "trainingjob.kubetrain.io/pausable deleted", out.stderr
    deadline = time.monotonic() + 30
    while jobs.get("pausable") is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert jobs.get("pausable") is None


def test_errors_are_one_line_with_the_cause(
    jobs: Jobs, kubeconfig_path: Path, tmp_path: Path, sa_api_client, kube_api
):
    ns = ["-n", jobs.ns]
    missing = kubetrain(kubeconfig_path, "get", "nope", *ns)
    assert missing.returncode == 1
    assert missing.stderr == f"error: trainingjob 'nope' not found in namespace '{jobs.ns}'\n"

    invalid = tmp_path / "bad.yaml"
    invalid.write_text(yaml.safe_dump(job_body("bad", training={"epochs": 0})))
    refused = kubetrain(kubeconfig_path, "submit", str(invalid), *ns)
    assert refused.returncode == 2
    assert "spec.training.epochs" in refused.stderr and jobs.get("bad") is None

    nowhere = subprocess.run(
        [sys.executable, "-m", "kubetrain.cli", "list"], capture_output=True, text=True,
        env={**os.environ, "KUBECONFIG": str(tmp_path / "absent"), "HOME": str(tmp_path)},
        check=False,
    )  # fmt: skip
    assert nowhere.returncode == 1
    assert nowhere.stderr == f"error: no kubeconfig at {tmp_path / 'absent'}\n"

    # RBAC: a ServiceAccount with no rights, through a token kubeconfig of its own.
    k8s.CoreV1Api(kube_api).create_namespaced_service_account(
        jobs.ns, {"metadata": {"name": "nobody"}}
    )
    token = (
        k8s.CoreV1Api(kube_api)
        .create_namespaced_service_account_token(
            "nobody", jobs.ns, {"spec": {"expirationSeconds": 600}}
        )
        .status.token
    )
    config = yaml.safe_load(kubeconfig_path.read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    (tmp_path / "nobody.kubeconfig").write_text(yaml.safe_dump(config))
    denied = kubetrain(tmp_path / "nobody.kubeconfig", "list", *ns)
    assert denied.returncode == 1
    line = denied.stderr.strip()
    assert line.startswith("error: list trainingjobs: forbidden by RBAC: ") and "\n" not in line
    assert f"system:serviceaccount:{jobs.ns}:nobody" in line

    # The CRD not installed: asked for a resource type the server does not serve.
    client = Client(kubeconfig=kubeconfig_path, namespace=jobs.ns)
    with pytest.raises(ClusterError) as err:
        client._call(
            "list",
            client._custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            jobs.ns,
            "nothings",
        )
    assert str(err.value).startswith("the TrainingJob CRD is not installed in this cluster")


def test_the_python_client_submits_waits_and_reads_status(
    jobs: Jobs, kubeconfig_path: Path, played
):
    client = Client(kubeconfig=kubeconfig_path, namespace=jobs.ns)
    job = TrainingJob.model_validate(job_body("from-python"))
    assert client.submit(job).outcome == "created"
    played("from-python")
    seen: list[str] = []
    final = client.wait("from-python", timeout=60, on_change=lambda j: seen.append(
        (j.get("status") or {}).get("phase") or "<new>"))  # fmt: skip
    assert final.phase == "Succeeded" and final.keyMetric == "val_accuracy=0.83"
    assert seen[-1] == "Succeeded" and "Running" in seen
    assert client.status("from-python").metrics["val_accuracy"] == pytest.approx(0.83)
