"""Faults in the middle of training, on real pods: a worker or the head killed, the operator
killed, the job suspended and resumed, a worker out of memory.

Each job either recovers from its last checkpoint on the claim, with a metrics history that
has every epoch once, or fails with a reason that names the pod and why. How long the
operator took to notice each fault, and the job to train again, goes to the tier's report
(``e2e_support.REPORT``) for the notes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from e2e_support import (
    TERMINAL,
    Kubectl,
    Workspace,
    children_left,
    follow_job,
    get_json,
    report,
    shrunk_example,
)

pytestmark = pytest.mark.e2e

#: Enough epochs (about a second each on the node) that a fault lands mid-training.
EPOCHS = 30
OPERATOR_PODS = ("-n", "kubetrain-system", "-l", "app.kubernetes.io/name=kubetrain")

Status = dict[str, Any]


def long_job(name: str, epochs: int = EPOCHS, **run_policy: Any) -> dict[str, Any]:
    """The shrunk sine-rnn example, with every epoch run (no early stopping) and
    checkpointed, so that the history after a fault can be checked epoch by epoch."""
    job = shrunk_example("sine-rnn")
    job["metadata"]["name"] = name
    training = job["spec"]["training"]
    training["epochs"] = epochs
    training.pop("earlyStopping", None)
    job["spec"]["runPolicy"] |= {"cleanupPolicy": "DeleteCluster", **run_policy}
    return job


def apply(kubectl: Kubectl, namespace: str, job: dict[str, Any]) -> str:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(job))
    return get_json(kubectl, "trainingjob", job["metadata"]["name"], "-n", namespace)["metadata"][
        "uid"
    ]


def wait_for(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    what: str,
    check: Callable[[Status], bool],
    timeout: float = 400,
) -> tuple[Status, float]:
    """Poll the job's status until ``check`` holds; return it and the seconds it took."""
    began = time.monotonic()
    while True:
        status = get_json(kubectl, "trainingjob", name, "-n", namespace).get("status") or {}
        if check(status):
            return status, round(time.monotonic() - began, 1)
        if status.get("phase") in TERMINAL:
            raise AssertionError(f"{name} ended while waiting for {what}: {status}")
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{name}: no {what} within {timeout:.0f} s: {status}")
        time.sleep(0.5)


def checkpoint_at(epoch: int) -> Callable[[Status], bool]:
    return lambda st: ((st.get("artifacts") or {}).get("checkpointEpoch") or 0) >= epoch


def ray_pods(kubectl: Kubectl, namespace: str, uid: str) -> list[dict[str, Any]]:
    selector = f"kubetrain.io/job-uid={uid}"
    return get_json(kubectl, "pods", "-n", namespace, "-l", selector)["items"]


def pod_of(kubectl: Kubectl, namespace: str, uid: str, role: str) -> dict[str, Any]:
    pods = [p for p in ray_pods(kubectl, namespace, uid)
            if p["metadata"]["labels"].get("kubetrain.io/role") == role]  # fmt: skip
    assert pods, f"no {role} pod"
    return pods[0]


def kill_pod(kubectl: Kubectl, namespace: str, name: str) -> float:
    """Delete a pod at once, as a node failure or a chaos tool would; return the moment."""
    kubectl("delete", "pod", name, "-n", namespace, "--grace-period=0", "--force", "--wait=false")
    return time.monotonic()


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def operator_back(kubectl: Kubectl, old: str, since: float, timeout: float = 120) -> float:
    """Seconds from ``since`` until an operator pod other than ``old`` is Ready."""
    while True:
        pods = get_json(kubectl, "pods", *OPERATOR_PODS)["items"]
        if any(p["metadata"]["name"] != old and is_ready(p) for p in pods):
            return round(time.monotonic() - since, 1)
        assert time.monotonic() - since < timeout, "no new operator pod became Ready"
        time.sleep(0.5)


def retrained(
    kubectl: Kubectl, namespace: str, name: str, attempt: int, since: float
) -> dict[str, float]:
    """Wait for attempt ``attempt`` to train its first epoch; seconds from ``since`` to the
    resubmission and to that epoch."""

    def training(st: Status) -> bool:
        return st.get("attempts") == attempt and (st.get("progress") or {}).get("stage") == (
            "training"
        )

    status, _ = wait_for(kubectl, namespace, name, f"attempt {attempt} training", training)
    submitted = round(time.monotonic() - since, 1)
    epoch = (status.get("progress") or {}).get("epoch") or 0
    wait_for(
        kubectl,
        namespace,
        name,
        "a new epoch",
        lambda st: ((st.get("progress") or {}).get("epoch") or 0) > epoch,
    )
    return {"training_again_s": submitted, "first_new_epoch_s": round(time.monotonic() - since, 1)}


def assert_history_whole(workspace: Workspace, status: Status, epochs: int) -> dict[str, Any]:
    """metrics.json has every epoch exactly once, and says where training resumed."""
    root = status["artifacts"]["outputUri"]
    metrics = json.loads(workspace.exec("cat", f"{root}/metrics.json"))
    seen = [int(entry["epoch"]) for entry in metrics["history"]]
    assert seen == list(range(1, epochs + 1)), f"gaps or repeats in the history: {seen}"
    assert status["progress"]["epoch"] == epochs
    return metrics


def summary(status: Status) -> dict[str, Any]:
    keys = ("phase", "reason", "message", "attempts", "failedAttempts", "attemptHistory")
    return {k: status.get(k) for k in keys}


# ------------------------------------------------------------------ the scenarios


@pytest.mark.parametrize(
    ("role", "backoff", "reason"),
    [("worker", 2, "WorkerPodLost"), ("head", 1, "HeadPodLost")],
    ids=["worker", "head"],
)
def test_a_killed_pod_mid_training_resumes_from_the_last_checkpoint(
    workspace, kubectl, role, backoff, reason
):
    """A worker or the head deleted at once, mid-training: the job is retried within its
    backoffLimit, on a rebuilt cluster when the head went, from the checkpoint."""
    ns, name = workspace.name, f"{role}-kill"
    uid = apply(kubectl, ns, long_job(name, backoffLimit=backoff))
    before, _ = wait_for(kubectl, ns, name, "a checkpoint", checkpoint_at(3))
    first = {p["metadata"]["uid"] for p in ray_pods(kubectl, ns, uid)}
    victim = pod_of(kubectl, ns, uid, role)["metadata"]["name"]
    killed = kill_pod(kubectl, ns, victim)
    retrying, detected = wait_for(
        kubectl, ns, name, "Retrying", lambda st: st.get("phase") == "Retrying"
    )
    assert retrying["reason"] == reason and victim in retrying["message"], retrying
    assert f"retry 1 of {backoff}" in retrying["message"], retrying
    timings = retrained(kubectl, ns, name, 2, killed)
    if role == "head":
        rebuilt = {p["metadata"]["uid"] for p in ray_pods(kubectl, ns, uid)}
        assert not first & rebuilt, "the workers of the lost head were kept"
    final, _ = follow_job(kubectl, ns, name, timeout=600)
    status = final["status"]
    report(
        f"fault:{role}-killed",
        {
            "detect_s": detected,
            **timings,
            "checkpoint_at_kill": before["artifacts"]["checkpointEpoch"],
            "while_retrying": retrying["message"],
            **summary(status),
        },
    )
    assert (status["phase"], status["attempts"], status["failedAttempts"]) == ("Succeeded", 2, 1)
    assert [r["reason"] for r in status["attemptHistory"]] == [reason, "Succeeded"]
    metrics = assert_history_whole(workspace, status, EPOCHS)
    assert metrics["resumedFromEpoch"] >= before["artifacts"]["checkpointEpoch"]
    assert children_left(kubectl, ns, uid) == []


def test_a_killed_head_without_retries_fails_naming_the_head(workspace, kubectl):
    ns = workspace.name
    uid = apply(kubectl, ns, long_job("head-final", backoffLimit=0))
    wait_for(kubectl, ns, "head-final", "a checkpoint", checkpoint_at(1))
    head = pod_of(kubectl, ns, uid, "head")["metadata"]["name"]
    killed = kill_pod(kubectl, ns, head)
    final, _ = follow_job(kubectl, ns, "head-final", timeout=120)
    detected = round(time.monotonic() - killed, 1)
    status = final["status"]
    report("fault:head-killed-no-retry", {"detect_s": detected, **summary(status)})
    assert (status["phase"], status["reason"]) == ("Failed", "HeadPodLost"), status
    assert f"Ray head pod {head} was deleted" in status["message"]
    assert status["failedAttempts"] == 1 and len(status["attemptHistory"]) == 1
    assert children_left(kubectl, ns, uid) == []


def test_an_operator_restart_mid_run_duplicates_nothing(workspace, kubectl):
    ns = workspace.name
    epochs = 3 * EPOCHS  # still training when the new operator takes over
    job = long_job("operator-kill", epochs=epochs, cleanupPolicy="KeepHead")
    uid = apply(kubectl, ns, job)
    wait_for(kubectl, ns, "operator-kill", "a checkpoint", checkpoint_at(2))
    pods_before = {p["metadata"]["uid"] for p in ray_pods(kubectl, ns, uid)}
    (operator,) = get_json(kubectl, "pods", *OPERATOR_PODS)["items"]
    killed = kill_pod(kubectl, "kubetrain-system", operator["metadata"]["name"])
    back = operator_back(kubectl, operator["metadata"]["name"], killed)
    during, _ = wait_for(kubectl, ns, "operator-kill", "Running", lambda st: True)
    assert during["phase"] == "Running", "the job ended before the new operator was up"
    seen: set[str] = set()
    while True:  # every pod seen until the end is one of the first ones
        seen |= {p["metadata"]["uid"] for p in ray_pods(kubectl, ns, uid)}
        status = get_json(kubectl, "trainingjob", "operator-kill", "-n", ns)["status"]
        if status.get("phase") in TERMINAL:
            break
        assert time.monotonic() - killed < 600, status
        time.sleep(1)
    finished = round(time.monotonic() - killed, 1)
    head = pod_of(kubectl, ns, uid, "head")["metadata"]["name"]
    jobs = kubectl(
        "exec",
        "-n",
        ns,
        head,
        "--",
        "python",
        "-c",
        "import json, urllib.request; print(json.dumps([j['submission_id'] for j in "
        "json.load(urllib.request.urlopen('http://127.0.0.1:8265/api/jobs/'))]))",
    )
    submissions = json.loads(jobs.stdout)
    report(
        "fault:operator-restarted",
        {
            "operator_ready_again_s": back,
            "job_finished_after_s": finished,
            "ray_submissions": submissions,
            **summary(status),
        },
    )
    assert status["phase"] == "Succeeded", status
    assert status["attempts"] == 1 and not status.get("failedAttempts")
    assert seen == pods_before, "a Ray pod was created again after the operator restarted"
    assert submissions == [status["submissionId"]]
    assert_history_whole(workspace, status, epochs)


def test_suspend_then_resume_continues_from_the_checkpoint(workspace, kubectl):
    ns = workspace.name
    uid = apply(kubectl, ns, long_job("suspend-resume"))
    before, _ = wait_for(kubectl, ns, "suspend-resume", "a checkpoint", checkpoint_at(3))

    def patch(suspend: bool) -> float:
        body = json.dumps({"spec": {"runPolicy": {"suspend": suspend}}})
        kubectl("patch", "trainingjob", "suspend-resume", "-n", ns, "--type=merge", "-p", body)
        return time.monotonic()

    suspended_at = patch(True)
    suspended, detected = wait_for(
        kubectl, ns, "suspend-resume", "Suspended", lambda st: st.get("phase") == "Suspended"
    )
    assert children_left(kubectl, ns, uid) == [], "pods stayed while suspended"
    pods_gone = round(time.monotonic() - suspended_at, 1)
    resumed_at = patch(False)
    timings = retrained(kubectl, ns, "suspend-resume", 2, resumed_at)
    final, _ = follow_job(kubectl, ns, "suspend-resume", timeout=600)
    status = final["status"]
    report(
        "fault:suspend-resume",
        {
            "suspended_s": detected,
            "pods_gone_s": pods_gone,
            "checkpoint_at_suspend": before["artifacts"]["checkpointEpoch"],
            "while_suspended": suspended["message"],
            **timings,
            **summary(status),
        },
    )
    assert status["phase"] == "Succeeded" and not status.get("failedAttempts"), status
    assert [r["reason"] for r in status["attemptHistory"]] == ["Suspended", "Succeeded"]
    metrics = assert_history_whole(workspace, status, EPOCHS)
    assert metrics["resumedFromEpoch"] >= before["artifacts"]["checkpointEpoch"]


def test_a_worker_out_of_memory_is_reported_and_retried_by_the_backoff_limit(workspace, kubectl):
    """A model far too large for its worker's memory limit (test-only). Ray's memory monitor
    stops the training process near the limit (or, when it is too slow, the kernel kills it
    and the pod fails): either way the attempt ends OOMKilled, and each attempt says so."""
    ns = workspace.name
    job = long_job("oom", epochs=2, backoffLimit=1)
    job["spec"]["model"]["rnn"] |= {"hiddenSize": 4096, "layers": 2}
    job["spec"]["training"]["resourcesPerWorker"]["memory"] = "1536Mi"
    uid = apply(kubectl, ns, job)
    final, timeline = follow_job(kubectl, ns, "oom", timeout=900)
    status = final["status"]
    report("fault:worker-oom", {"milestones": timeline.seen, **summary(status)})
    assert (status["phase"], status["reason"]) == ("Failed", "OOMKilled"), status
    assert "backoffLimit 1 reached" in status["message"]
    history = status["attemptHistory"]
    assert [(r["attempt"], r["reason"]) for r in history] == [(1, "OOMKilled"), (2, "OOMKilled")]
    # The worker is blamed, with the field to raise, never the head: whether Ray's memory
    # monitor stopped the process (the runtime's line) or the kernel killed it (the pod's).
    for said in (status["message"], *(r["message"] for r in history)):
        assert "spec.training.resourcesPerWorker.memory" in said, said
        assert "spec.cluster.head" not in said and "worker" in said, said
    assert children_left(kubectl, ns, uid) == []
