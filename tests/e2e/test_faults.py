"""Faults that a user meets first, on real pods: a data path that does not exist, a deadline
shorter than the training, an image that no node has. Each ends Failed with a reason that
says why, and leaves no pod behind."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
import yaml
from e2e_support import children_left, follow_job, get_json, shrunk_example

pytestmark = pytest.mark.e2e


def _apply(kubectl, namespace: str, job: dict) -> str:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(job))
    return get_json(kubectl, "trainingjob", job["metadata"]["name"], "-n", namespace)["metadata"][
        "uid"
    ]


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def test_a_missing_data_file_fails_once_with_its_path(workspace, kubectl):
    job = shrunk_example("iris-csv-mlp")
    job["metadata"]["name"] = "no-data"
    job["spec"]["data"]["source"]["uri"]["path"] = "/output/data/not-there.csv"
    job["spec"]["runPolicy"] |= {"backoffLimit": 2, "cleanupPolicy": "DeleteCluster"}
    uid = _apply(kubectl, workspace.name, job)
    final, _ = follow_job(kubectl, workspace.name, "no-data", timeout=600)
    status = final["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "InvalidInput"), status
    assert "/output/data/not-there.csv" in status["message"]
    assert status["attempts"] == 1, "a wrong spec is not retried"
    assert children_left(kubectl, workspace.name, uid) == []


def test_a_deadline_shorter_than_the_training_stops_it(workspace, kubectl):
    job = shrunk_example("sine-rnn")
    job["metadata"]["name"] = "deadline"
    job["spec"]["training"]["epochs"] = 100_000  # hours at any speed, and no early stop
    job["spec"]["training"].pop("earlyStopping", None)
    job["spec"]["runPolicy"]["activeDeadlineSeconds"] = 60
    uid = _apply(kubectl, workspace.name, job)
    final, timeline = follow_job(kubectl, workspace.name, "deadline", timeout=300)
    status = final["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded"), status
    # The operator's clock starts at status.startTime, which can come before this test's
    # first look; its own two stamps (whole seconds, both truncated) bound the run from below.
    ran = _seconds_between(status["startTime"], status["completionTime"])
    assert ran >= 60, status
    assert timeline.seen["failed"] <= 120, timeline.seen
    assert children_left(kubectl, workspace.name, uid) == []


def test_an_image_no_node_has_is_shown_at_once_and_fails_at_the_startup_deadline(
    workspace, kubectl
):
    job = shrunk_example("sine-rnn")
    job["metadata"]["name"] = "no-image"
    job["spec"]["cluster"]["image"] = "localhost/kubetrain/does-not-exist:0"
    job["spec"]["runPolicy"]["startupDeadlineSeconds"] = 40
    uid = _apply(kubectl, workspace.name, job)
    started = time.monotonic()
    while True:
        status = get_json(kubectl, "trainingjob", "no-image", "-n", workspace.name).get("status")
        conditions = {c["type"]: c for c in (status or {}).get("conditions", [])}
        ready = conditions.get("ClusterReady", {})
        if ready.get("reason") in ("ImagePullBackOff", "ErrImagePull"):
            break
        assert time.monotonic() - started < 30, status
        time.sleep(1)
    shown = time.monotonic() - started
    final, _ = follow_job(kubectl, workspace.name, "no-image", timeout=120)
    status = final["status"]
    assert status["phase"] == "Failed", status
    assert status["reason"] in ("ImagePullBackOff", "ErrImagePull"), status
    assert "startupDeadlineSeconds" in status["message"]
    assert shown < 20
    assert children_left(kubectl, workspace.name, uid) == []
