"""A job whose images and checkpoints live in a bucket of a real S3 server (versitygw, on the
test machine, reached by the pods at the node's address), with credentials from a Secret
that the spec names: a worker killed mid-training, and the job resumes from the bucket's
checkpoint. The secret never shows in status, Events or the driver's log. A wrong
credential fails the job at once as InvalidInput, naming the URI and the cause."""

from __future__ import annotations

import json
import os
import secrets

import pytest
from e2e_support import children_left, follow_job, report
from kube_session import localcluster
from object_store import s3_filesystem
from test_recovery import apply, checkpoint_at, kill_pod, pod_of, wait_for

from kubetrain_runtime.datasets import write_digits_png

pytestmark = pytest.mark.e2e

#: Epochs of about a second each on the node (a checkpoint to the bucket every one): the
#: kill at the second checkpoint lands mid-training. With 10 the job had finished all its
#: epochs before the kill, and the retry rightly started over.
EPOCHS = 30
#: Images in the bucket (the first of the 1797 digits): listing and reading stay short.
DIGITS = 600


@pytest.fixture
def pod_endpoint(object_store, cluster_info) -> str:
    """The store as pods reach it: on the node's own address."""
    if cluster_info.external and not os.environ.get("KUBETRAIN_E2E_S3_ENDPOINT"):
        pytest.skip("an external cluster: set KUBETRAIN_E2E_S3_ENDPOINT to a store its pods reach")
    return os.environ.get("KUBETRAIN_E2E_S3_ENDPOINT") or object_store.endpoint_for(
        localcluster.node_ip()
    )


@pytest.fixture
def team_bucket(object_store, tmp_path_factory):
    """A bucket owned by a plain user (not the store's root), holding the digits as PNG
    class folders; yields (bucket, access key, secret key)."""
    bucket = f"team-{secrets.token_hex(3)}"
    key, secret = f"user-{bucket}", secrets.token_hex(12)
    object_store.create_user(key, secret, buckets=[bucket])
    folder = tmp_path_factory.mktemp("digits")
    write_digits_png(folder, scale=2, limit=DIGITS)
    fs = s3_filesystem(object_store.endpoint, key, secret)
    fs.put(str(folder) + "/", f"{bucket}/digits-png/", recursive=True)
    return bucket, key, secret


def secret_manifest(name: str, key: str, secret: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "type": "Opaque",
            "stringData": {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}}  # fmt: skip


def bucket_job(name: str, bucket: str, endpoint: str, secret_name: str) -> dict:
    return {
        "apiVersion": "kubetrain.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "data": {
                "source": {"uri": {"path": f"s3://{bucket}/digits-png/", "format": "images"}},
                "images": {"size": [16, 16], "mode": "L", "augment": {"cropPadding": 1}},
            },
            "model": {
                "type": "cnn",
                "cnn": {"channels": [8, 16], "kernelSizes": [3, 3], "hiddenUnits": 32},
            },
            "training": {
                "epochs": EPOCHS,
                "batchSize": 64,
                "workers": 2,
                "optimizer": {"learningRate": 0.003},
                "checkpoint": {"everyEpochs": 1, "keep": 3},
                "resourcesPerWorker": {"cpu": "500m", "memory": "2Gi"},
            },
            "cluster": {"nodePool": "cpu", "head": {"resources": {"cpu": "700m", "memory": "3Gi"}}},
            "output": {"uri": f"s3://{bucket}/runs/{name}"},
            "storage": {"secretName": secret_name, "endpoint": endpoint},
            "runPolicy": {"backoffLimit": 2},
        },
    }


def test_images_from_a_bucket_survive_a_lost_worker_resuming_from_the_bucket(
    workspace, kubectl, object_store, team_bucket, pod_endpoint
):
    bucket, key, secret = team_bucket
    ns, name = workspace.name, "bucket-digits"
    kubectl("apply", "-n", ns, "-f", "-", stdin=json.dumps(secret_manifest("creds", key, secret)))
    uid = apply(kubectl, ns, bucket_job(name, bucket, pod_endpoint, "creds"))
    before, _ = wait_for(kubectl, ns, name, "a checkpoint", checkpoint_at(2), timeout=600)
    assert before["artifacts"]["latestCheckpoint"].startswith(f"s3://{bucket}/runs/{name}/")
    worker = pod_of(kubectl, ns, uid, "worker")
    env = {e["name"]: e for e in worker["spec"]["containers"][0]["env"]}
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # by reference only
        assert env[variable] == {"name": variable, "valueFrom": {"secretKeyRef": {
            "name": "creds", "key": variable}}}  # fmt: skip
    assert env["AWS_ENDPOINT_URL"]["value"] == pod_endpoint
    victim = worker["metadata"]["name"]
    kill_pod(kubectl, ns, victim)
    retrying, detected = wait_for(kubectl, ns, name, "Retrying",
                                  lambda st: st.get("phase") == "Retrying")  # fmt: skip
    assert retrying["reason"] == "WorkerPodLost", retrying
    final, timeline = follow_job(kubectl, ns, name, timeout=900)
    status = final["status"]
    report(
        "bucket:worker-killed",
        {
            "detect_s": detected,
            "milestones": timeline.seen,
            "phase": status.get("phase"),
            "checkpoint_at_kill": before["artifacts"]["checkpointEpoch"],
        },
    )
    assert status["phase"] == "Succeeded", json.dumps(status)[-2000:]
    history = [(a["reason"], a.get("message", "")) for a in status["attemptHistory"]]
    assert status["attempts"] == 2, history

    fs = s3_filesystem(object_store.endpoint, key, secret)
    log = fs.cat(f"{bucket}/runs/{name}/logs/driver.log").decode()
    report("bucket:driver-log", log[-6000:].splitlines())
    metrics = json.loads(fs.cat(f"{bucket}/runs/{name}/metrics.json"))
    assert [int(h["epoch"]) for h in metrics["history"]] == list(range(1, EPOCHS + 1))
    decisions = [line for line in log.splitlines() if "epoch 1" in line or "resuming" in line]
    assert metrics["resumedFromEpoch"], decisions
    assert metrics["resumedFromEpoch"] >= before["artifacts"]["checkpointEpoch"]
    assert status["dataStats"]["images"]["shape"] == [1, 16, 16]
    assert status["dataStats"]["rowsRead"] == DIGITS
    assert len(status["dataStats"]["classCounts"]) == 10

    # The secret was written nowhere: status, Events, the driver's log.
    events = kubectl("get", "events", "-n", ns, "-o", "json").stdout
    for text in (json.dumps(final), events, log):
        assert secret not in text
    assert children_left(kubectl, ns, uid) == []


def test_wrong_credentials_fail_at_once_as_invalid_input(
    workspace, kubectl, object_store, team_bucket, pod_endpoint
):
    bucket, key, _ = team_bucket
    ns, name = workspace.name, "bucket-wrong-key"
    kubectl("apply", "-n", ns, "-f", "-",
            stdin=json.dumps(secret_manifest("wrong", key, "not-the-secret")))  # fmt: skip
    apply(kubectl, ns, bucket_job(name, bucket, pod_endpoint, "wrong"))
    final, _ = follow_job(kubectl, ns, name, timeout=600)
    status = final["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "InvalidInput"), status
    assert f"s3://{bucket}/digits-png/" in status["message"], status["message"]
    assert "the credentials are wrong" in status["message"], status["message"]
    assert status["attempts"] == 1 and not status.get("failedAttempts", 0) > 1
