"""Pure status computation: every phase and reason, terminal-state rules, change detection."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from kubetrain.api.v1alpha1 import TrainingJobStatus
from kubetrain.errors import SpecError
from kubetrain_operator import builders
from kubetrain_operator.actions import (
    DeleteJob,
    DeletePods,
    DeleteService,
    EnsureCluster,
    StopRayJob,
    SubmitRayJob,
)
from kubetrain_operator.config import OperatorConfig
from kubetrain_operator.observe import (
    FinalReport,
    Observed,
    PodState,
    RayJobState,
    parse_final_report,
    summarize_pod,
)
from kubetrain_operator.status import (
    decide,
    next_deadline,
    submission_failed,
    timestamp,
)
from kubetrain_operator.validation import resolve_placement

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
EARLIER = timestamp(NOW - timedelta(seconds=5))


def pod(name, *, role="worker", phase="Running", ready=True, node="n1", problem=None,
        terminating=False, created=EARLIER):  # fmt: skip
    return PodState(name, role, phase, ready, terminating, node, created, problem)


def cluster_pods(job, spec, **kw):
    names = builders.expected_pod_names(job, spec)
    return tuple(pod(n, role="head" if n.endswith("head") else "worker", **kw) for n in names)


def observe(job, spec, status=None, pods=(), ray=None, now=NOW, **kw):
    return Observed(
        job=job,
        generation=2,
        status=TrainingJobStatus.model_validate(status or {}),
        now=now,
        spec=spec,
        expected_pods=builders.expected_pod_names(job, spec) if spec else (),
        pods=tuple(pods),
        ray=ray,
        **kw,
    )


def cond(status, type_):
    return next((c for c in status.conditions if c.type == type_), None)


def actions_of(plan, kind):
    return [a for a in plan.actions if isinstance(a, kind)]


def running(job, attempts=1, failed=None, **extra):
    return {
        "phase": "Running",
        "attempts": attempts,
        "failedAttempts": failed,
        "submissionId": job.submission_id(attempts),
        "startTime": EARLIER,
        **extra,
    }


# ---------------------------------------------------------------- provisioning


def test_a_new_job_creates_its_cluster_and_is_pending(job, make_spec):
    spec = make_spec(training__workers=2)
    plan = decide(observe(job, spec))
    assert plan.actions == [EnsureCluster(builders.expected_pod_names(job, spec), setup=True)]
    st = plan.status
    assert (st.phase, st.reason) == ("Pending", "Scheduling")
    assert st.startTime == timestamp(NOW) and st.observedGeneration == 2
    assert st.rayClusterName == "iris-3f2a9"
    assert st.dashboardURL == "http://iris-3f2a9-head.team-a.svc:8265"
    ready = cond(st, "ClusterReady")
    assert (ready.status, ready.reason, ready.observedGeneration) == ("False", "Scheduling", 2)
    assert [e.reason for e in plan.events] == ["Scheduling"]


def test_scheduled_but_not_ready_is_provisioning(job, make_spec):
    spec = make_spec()
    pods = cluster_pods(job, spec, ready=False, phase="Pending")
    plan = decide(observe(job, spec, {"phase": "Pending", "startTime": EARLIER}, pods))
    assert (plan.status.phase, plan.status.reason) == ("Provisioning", "Provisioning")
    assert plan.actions == []


def test_only_missing_pods_are_created(job, make_spec):
    spec = make_spec(training__workers=2)
    pods = cluster_pods(job, spec)[:2]
    plan = decide(observe(job, spec, {"phase": "Provisioning"}, pods))
    assert plan.actions == [EnsureCluster((job.worker_pod(1),), setup=False)]


def test_a_terminating_pod_is_not_recreated_until_gone(job, make_spec):
    spec = make_spec()
    pods = (pod(job.head_pod, role="head"), pod(job.worker_pod(0), terminating=True))
    plan = decide(observe(job, spec, {"phase": "Provisioning"}, pods))
    assert actions_of(plan, EnsureCluster) == []


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("Unschedulable", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
        ("ImagePullBackOff", "Back-off pulling image"),
        ("CrashLoopBackOff", "back-off 40s restarting failed container"),
    ],
)
def test_blocking_problems_surface_then_fail_at_the_startup_deadline(
    job, make_spec, reason, message
):
    spec = make_spec(runPolicy__startupDeadlineSeconds=60)
    pods = cluster_pods(job, spec, ready=False, phase="Pending", problem=(reason, message))
    start = {"phase": "Pending", "startTime": EARLIER}
    plan = decide(observe(job, spec, start, pods))
    assert plan.status.phase in ("Pending", "Provisioning")
    assert plan.status.reason == reason and message in plan.status.message
    assert cond(plan.status, "ClusterReady").reason == reason
    assert plan.events[-1].type == "Warning"

    late = NOW + timedelta(seconds=61)
    plan = decide(observe(job, spec, plan.status.model_dump(), pods, now=late))
    assert (plan.status.phase, plan.status.reason) == ("Failed", reason)
    assert "startupDeadlineSeconds (60s)" in plan.status.message and message in plan.status.message
    assert cond(plan.status, "Failed").status == "True"
    assert plan.status.completionTime == timestamp(late)
    assert set(actions_of(plan, DeletePods)[0].names) == {p.name for p in pods}
    assert plan.events[-1].type == "Warning"


def test_startup_deadline_without_a_known_cause(job, make_spec):
    spec = make_spec(runPolicy__startupDeadlineSeconds=10)
    pods = cluster_pods(job, spec, ready=False)
    plan = decide(
        observe(job, spec, {"phase": "Provisioning"}, pods, now=NOW + timedelta(seconds=60))
    )
    assert (plan.status.phase, plan.status.reason) == ("Failed", "StartupDeadlineExceeded")


def test_a_deterministic_image_error_fails_at_once(job, make_spec):
    spec = make_spec()
    pods = cluster_pods(job, spec, ready=False, problem=("InvalidImageName", "bad ref"))
    plan = decide(observe(job, spec, {"phase": "Provisioning"}, pods))
    assert (plan.status.phase, plan.status.reason) == ("Failed", "InvalidImageName")


def test_gang_start_submits_only_when_every_pod_is_ready(job, make_spec):
    spec = make_spec(training__workers=2)
    pods = list(cluster_pods(job, spec))
    pods[-1] = replace(pods[-1], ready=False)
    plan = decide(observe(job, spec, {"phase": "Provisioning"}, pods))
    assert actions_of(plan, SubmitRayJob) == []

    plan = decide(observe(job, spec, {"phase": "Provisioning"}, cluster_pods(job, spec)))
    assert actions_of(plan, SubmitRayJob) == [SubmitRayJob(1)]
    st = plan.status
    assert (st.phase, st.reason, st.attempts) == ("Running", "RayJobSubmitted", 1)
    assert st.submissionId == job.submission_id(1)
    assert st.progress.stage == "data"
    assert cond(st, "ClusterReady").status == "True" and cond(st, "Running").status == "True"


def test_submission_disabled_stops_at_a_ready_cluster(job, make_spec):
    spec = make_spec()
    plan = decide(observe(job, spec, {}, cluster_pods(job, spec), submit_enabled=False))
    assert (plan.status.phase, plan.status.reason) == ("Provisioning", "ClusterReady")
    assert actions_of(plan, SubmitRayJob) == []


def test_failed_submission_keeps_the_attempt_for_the_next_look(job, make_spec):
    spec = make_spec()
    obs = observe(job, spec, {"phase": "Provisioning"}, cluster_pods(job, spec))
    plan = submission_failed(obs, "HTTP 500")
    assert (plan.status.phase, plan.status.reason) == ("Provisioning", "SubmissionFailed")
    assert plan.status.attempts is None and plan.status.submissionId is None
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "SubmissionFailed")]
    again = submission_failed(replace(obs, status=plan.status), "HTTP 500")
    assert again.events == [] and again.patch(plan.status) == {}


# --------------------------------------------------------------------- running


def test_running_follows_ray(job, make_spec):
    spec = make_spec()
    obs = observe(job, spec, running(job), cluster_pods(job, spec), RayJobState("RUNNING"))
    plan = decide(obs)
    assert plan.status.phase == "Running" and plan.actions == []
    assert cond(plan.status, "Running").reason == "RayJobRunning"


def test_unreachable_ray_keeps_the_phase_and_says_why(job, make_spec):
    spec = make_spec()
    st = running(job)
    ray = RayJobState("UNREACHABLE", "get: cannot reach the dashboard")
    plan = decide(observe(job, spec, st, cluster_pods(job, spec), ray))
    assert plan.status.phase == "Running" and plan.actions == [] and plan.events == []
    condition = cond(plan.status, "Running")
    assert (condition.reason, condition.message) == ("RayUnreachable", ray.message)


def test_success_keeps_final_metrics_and_cleans_up(job, make_spec):
    spec = make_spec(runPolicy__cleanupPolicy="KeepHead")
    final = FinalReport({"val_accuracy": 0.97}, "val_accuracy=0.97", {"modelUri": "/o/m.pt"})
    st = running(job, progress={"stage": "training", "percent": 90}, metrics={"loss": 0.1})
    obs = observe(job, spec, st, cluster_pods(job, spec), RayJobState("SUCCEEDED", final=final))
    plan = decide(obs)
    s = plan.status
    assert (s.phase, s.reason) == ("Succeeded", "Succeeded")
    assert s.metrics == {"val_accuracy": 0.97, "loss": 0.1}
    assert s.keyMetric == "val_accuracy=0.97" and s.artifacts.modelUri == "/o/m.pt"
    assert s.progress.percent == 100
    # A finished job's pods go within a second: nothing on them is left to save.
    assert actions_of(plan, DeletePods) == [DeletePods((job.worker_pod(0),), grace=1)]
    assert actions_of(plan, DeleteService) == []
    assert cond(s, "Succeeded").status == "True"
    assert plan.events[-1].type == "Normal"


@pytest.mark.parametrize(
    ("ray_status", "reason"),
    [("FAILED", "RayJobFailed"), ("STOPPED", "RayJobStopped"), ("NOT_FOUND", "RayJobLost")],
)
def test_a_failed_ray_job_is_retried_on_the_same_cluster(job, make_spec, ray_status, reason):
    spec = make_spec(runPolicy__backoffLimit=2)
    pods = cluster_pods(job, spec)
    obs = observe(job, spec, running(job), pods, RayJobState(ray_status, "boom"))
    plan = decide(obs)
    assert (plan.status.phase, plan.status.reason) == ("Retrying", reason)
    assert plan.status.failedAttempts == 1
    assert actions_of(plan, DeletePods) == [] and actions_of(plan, EnsureCluster) == []
    # Next look: the cluster is healthy, so attempt 2 goes to the same cluster.
    plan = decide(observe(job, spec, plan.status.model_dump(), pods))
    assert actions_of(plan, SubmitRayJob) == [SubmitRayJob(2)]
    assert (plan.status.phase, plan.status.attempts) == ("Running", 2)
    assert "resuming from the last checkpoint" in plan.status.message


def test_the_backoff_limit_ends_in_failed(job, make_spec):
    spec = make_spec(runPolicy__backoffLimit=1)
    st = running(job, attempts=2, failed=1)
    obs = observe(job, spec, st, cluster_pods(job, spec), RayJobState("FAILED", "oom"))
    plan = decide(obs)
    assert (plan.status.phase, plan.status.reason) == ("Failed", "RayJobFailed")
    assert "backoffLimit 1 reached" in plan.status.message and plan.status.failedAttempts == 2
    assert actions_of(plan, DeleteService) == [DeleteService()]


def test_a_broken_cluster_stops_the_job_and_rebuilds(job, make_spec):
    spec = make_spec(training__workers=2)
    pods = list(cluster_pods(job, spec))
    pods[1] = replace(pods[1], phase="Failed", problem=("Evicted", "node lost"))
    obs = observe(job, spec, running(job), pods, RayJobState("RUNNING"))
    plan = decide(obs)
    assert (plan.status.phase, plan.status.reason) == ("Retrying", "Evicted")
    assert f"Ray worker pod {job.worker_pod(0)} failed: node lost" in plan.status.message
    assert StopRayJob(job.submission_id(1)) in plan.actions
    assert DeletePods((job.worker_pod(0),)) in plan.actions
    record = plan.status.attemptHistory[-1]
    assert (record.attempt, record.reason) == (1, "Evicted")


def test_a_deleted_worker_is_named_and_only_it_is_recreated(job, make_spec):
    spec = make_spec(training__workers=2)
    pods = [p for p in cluster_pods(job, spec) if p.name != job.worker_pod(1)]
    plan = decide(observe(job, spec, running(job), pods, RayJobState("RUNNING")))
    assert (plan.status.phase, plan.status.reason) == ("Retrying", "WorkerPodLost")
    assert f"Ray worker pod {job.worker_pod(1)} was deleted" in plan.status.message
    assert actions_of(plan, DeletePods) == []
    retry = decide(observe(job, spec, plan.status.model_dump(), pods))
    assert actions_of(retry, EnsureCluster) == [EnsureCluster((job.worker_pod(1),), False)]


def test_a_lost_head_rebuilds_the_whole_cluster(job, make_spec):
    spec = make_spec(training__workers=2)
    pods = [p for p in cluster_pods(job, spec) if p.name != job.head_pod]
    plan = decide(observe(job, spec, running(job), pods, RayJobState("UNREACHABLE")))
    assert (plan.status.phase, plan.status.reason) == ("Retrying", "HeadPodLost")
    assert job.head_pod in plan.status.message
    assert DeletePods((job.worker_pod(0), job.worker_pod(1))) in plan.actions


def test_a_lost_head_with_no_retries_left_fails_naming_the_head(job, make_spec):
    spec = make_spec(runPolicy__backoffLimit=0)
    head = pod(
        job.head_pod,
        role="head",
        phase="Failed",
        problem=("OOMKilled", "container ray-head exited with code 137 (OOMKilled)"),
    )
    pods = [head, *(p for p in cluster_pods(job, spec) if p.name != job.head_pod)]
    plan = decide(observe(job, spec, running(job), pods, RayJobState("UNREACHABLE")))
    assert (plan.status.phase, plan.status.reason) == ("Failed", "OOMKilled")
    assert f"Ray head pod {job.head_pod} failed" in plan.status.message
    memory = spec.cluster.head.resources.memory
    assert f"raise spec.cluster.head.resources.memory (now {memory})" in plan.status.message
    assert plan.status.attemptHistory[-1].message in plan.status.message


def test_a_pod_that_exits_before_submission_is_a_counted_attempt(job, make_spec):
    spec = make_spec(runPolicy__backoffLimit=1)
    oom = ("OOMKilled", "container ray-worker exited with code 137 (OOMKilled)")
    pods = [replace(p, phase="Failed", ready=False, problem=oom) if p.role == "worker" else p
            for p in cluster_pods(job, spec)]  # fmt: skip
    first = decide(observe(job, spec, {"phase": "Provisioning", "startTime": EARLIER}, pods))
    st = first.status
    assert (st.phase, st.reason, st.attempts, st.failedAttempts) == ("Retrying", "OOMKilled", 1, 1)
    assert DeletePods((job.worker_pod(0),)) in first.actions
    assert f"Ray worker pod {job.worker_pod(0)} failed" in st.message
    assert "raise spec.training.resourcesPerWorker.memory (now " in st.message
    assert "head" not in st.message
    # The next look may still see the same failed pod (not yet deleted): not counted twice.
    again = decide(observe(job, spec, st.model_dump(), pods, now=NOW + timedelta(seconds=1)))
    assert again.status.failedAttempts == 1
    # The pod of attempt 2 fails too: backoffLimit 1 is reached.
    later = NOW + timedelta(seconds=30)
    pods2 = [replace(p, created=timestamp(later)) if p.role == "worker" else p for p in pods]
    final = decide(observe(job, spec, st.model_dump(), pods2, now=later))
    assert (final.status.phase, final.status.reason) == ("Failed", "OOMKilled")
    assert [r.attempt for r in final.status.attemptHistory] == [1, 2]


def test_active_deadline_stops_ray_and_fails(job, make_spec):
    spec = make_spec(runPolicy__activeDeadlineSeconds=30)
    st = running(job, startTime=timestamp(NOW - timedelta(seconds=31)))
    obs = observe(job, spec, st, cluster_pods(job, spec), RayJobState("RUNNING"))
    plan = decide(obs)
    assert (plan.status.phase, plan.status.reason) == ("Failed", "DeadlineExceeded")
    assert plan.actions[0] == StopRayJob(job.submission_id(1))


# ------------------------------------------------------------------- suspend


def test_suspend_stops_ray_and_deletes_pods_then_resume_recreates(job, make_spec):
    spec = make_spec(runPolicy__suspend=True)
    pods = cluster_pods(job, spec)
    plan = decide(observe(job, spec, running(job), pods, RayJobState("RUNNING")))
    assert (plan.status.phase, plan.status.reason) == ("Suspended", "Suspended")
    assert [r.reason for r in plan.status.attemptHistory] == ["Suspended"]
    assert plan.actions == [
        StopRayJob(job.submission_id(1)),
        DeletePods(tuple(p.name for p in pods)),
    ]
    assert cond(plan.status, "Suspended").status == "True"

    resumed = make_spec(runPolicy__suspend=False)
    later = NOW + timedelta(minutes=5)
    plan = decide(observe(job, resumed, plan.status.model_dump(), (), now=later))
    assert plan.status.phase == "Pending" and plan.status.startTime == timestamp(later)
    assert cond(plan.status, "Suspended").status == "False"
    assert actions_of(plan, EnsureCluster)[0].setup is True
    assert "Resumed" in [e.reason for e in plan.events]


# ------------------------------------------------------------ terminal states


def test_validation_failure_creates_nothing(job):
    obs = observe(
        job, None, spec_error=SpecError("unknown node pool", field="spec.cluster.nodePool")
    )
    plan = decide(obs)
    assert (plan.status.phase, plan.status.reason) == ("Failed", "ValidationFailed")
    assert plan.status.message == "spec.cluster.nodePool: unknown node pool"
    assert plan.actions == []
    again = decide(replace(obs, status=plan.status))
    assert again.actions == [] and again.patch(plan.status) == {} and again.events == []


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
@pytest.mark.parametrize(
    "change",
    [
        {"ray": RayJobState("RUNNING")},
        {"spec_suspend": True},
        {"pods": "ready"},
    ],
)
def test_terminal_phases_are_never_resurrected(job, make_spec, phase, change):
    spec = make_spec(runPolicy__suspend=change.get("spec_suspend", False),
                     runPolicy__cleanupPolicy="KeepAll")  # fmt: skip
    st = {"phase": phase, "reason": "X", "completionTime": EARLIER, "metrics": {"acc": 1.0},
          "observedGeneration": 2}  # fmt: skip
    pods = cluster_pods(job, spec) if change.get("pods") else ()
    plan = decide(observe(job, spec, st, pods, change.get("ray")))
    assert plan.status.phase == phase
    assert plan.patch(TrainingJobStatus.model_validate(st)) == {}
    assert not actions_of(plan, SubmitRayJob) and not actions_of(plan, EnsureCluster)


def test_a_spec_edited_after_the_end_is_observed_and_changes_nothing_else(job, make_spec):
    """GitOps tools (kstatus, Argo CD) wait while observedGeneration is behind."""
    spec = make_spec(runPolicy__cleanupPolicy="KeepAll")
    st = {"phase": "Succeeded", "reason": "Succeeded", "completionTime": EARLIER,
          "observedGeneration": 1}  # fmt: skip
    plan = decide(observe(job, spec, st))
    assert plan.patch(TrainingJobStatus.model_validate(st)) == {"observedGeneration": 2}
    assert plan.actions == [] and plan.events == []


def test_cleanup_finishes_after_an_interruption_and_ttl_deletes(job, make_spec):
    spec = make_spec(runPolicy__ttlSecondsAfterFinished=60)
    st = {"phase": "Failed", "completionTime": timestamp(NOW)}
    plan = decide(observe(job, spec, st, cluster_pods(job, spec)))
    assert actions_of(plan, DeletePods) and actions_of(plan, DeleteService)
    assert not actions_of(plan, DeleteJob)
    plan = decide(observe(job, spec, plan.status.model_dump(), (), now=NOW + timedelta(seconds=60)))
    assert plan.actions == [DeleteJob()]


# -------------------------------------------------------------- change detection


def test_status_is_written_only_when_it_changed(job, make_spec):
    spec = make_spec()
    pods = cluster_pods(job, spec, ready=False, phase="Pending")
    first = decide(observe(job, spec, {}, pods))
    assert first.patch(TrainingJobStatus()) != {}
    second = decide(
        observe(job, spec, first.status.model_dump(), pods, now=NOW + timedelta(seconds=1))
    )
    assert second.patch(first.status) == {}
    assert second.events == []


def test_condition_transition_time_moves_only_when_its_status_changes(job, make_spec):
    spec = make_spec()
    pods = cluster_pods(job, spec, ready=False, phase="Pending")
    first = decide(observe(job, spec, {}, pods)).status
    later = NOW + timedelta(seconds=30)
    problem = cluster_pods(job, spec, ready=False, phase="Pending", problem=("Unschedulable", "x"))
    second = decide(observe(job, spec, first.model_dump(), problem, now=later)).status
    assert cond(second, "ClusterReady").reason == "Unschedulable"
    assert cond(second, "ClusterReady").lastTransitionTime == timestamp(NOW)


def test_reporter_fields_are_never_overwritten(job, make_spec):
    spec = make_spec()
    st = running(job, progress={"stage": "training", "epoch": 3}, metrics={"loss": 0.2})
    plan = decide(observe(job, spec, st, cluster_pods(job, spec), RayJobState("RUNNING")))
    patch = plan.patch(TrainingJobStatus.model_validate(st))
    assert patch and not patch.keys() & {"progress", "metrics", "dataStats", "artifacts"}


# ------------------------------------------------------------------ pod summary


def _pod_body(status, deleting=False):
    meta = {"name": "p", "labels": {"kubetrain.io/role": "head"}, "creationTimestamp": EARLIER}
    if deleting:
        meta["deletionTimestamp"] = EARLIER
    return {"metadata": meta, "spec": {"nodeName": "n1"}, "status": status}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}, None),
        (
            {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes",
                    }
                ],
            },
            ("Unschedulable", "0/3 nodes"),
        ),
        (
            {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": "ray-head",
                        "state": {
                            "waiting": {"reason": "ImagePullBackOff", "message": "not found"}
                        },
                    }
                ],
            },
            ("ImagePullBackOff", "container ray-head: not found"),
        ),
        (
            {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "ray-head",
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    }
                ],
            },
            ("CrashLoopBackOff", "container ray-head: back-off"),
        ),
        (
            {"phase": "Failed", "reason": "Evicted", "message": "low memory"},
            ("Evicted", "low memory"),
        ),
        (
            {
                "phase": "Failed",
                "containerStatuses": [
                    {"name": "c", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
                ],
            },
            ("OOMKilled", "container c exited with code 137 (OOMKilled)"),
        ),
    ],
)
def test_summarize_pod_finds_the_reason(status, expected):
    state = summarize_pod(_pod_body(status))
    assert state.problem == expected
    assert state.role == "head" and state.node == "n1"


def test_summarize_pod_sees_ready_and_terminating():
    ready = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    assert summarize_pod(_pod_body(ready)).ready is True
    assert summarize_pod(_pod_body(ready, deleting=True)).terminating is True


def test_final_report_from_log_lines():
    logs = "\n".join(
        [
            "starting",
            'KUBETRAIN_EVENT {"metrics": {"loss": 0.5}, "dataStats": {"rowsRead": 150}}',
            "KUBETRAIN_EVENT not json",
            '(pid=1) KUBETRAIN_EVENT {"metrics": {"loss": 0.2, "acc": 0.9}, "keyMetric": "acc"}',
            'KUBETRAIN_EVENT {"event": "checkpoint", "uri": "/o/ckpt/2", "epoch": 2}',
            'KUBETRAIN_EVENT {"artifacts": {"modelUri": "/o/model.pt"}}',
        ]
    )
    report = parse_final_report(logs)
    assert report.metrics == {"loss": 0.2, "acc": 0.9}
    assert report.key_metric == "acc"
    assert report.artifacts == {
        "modelUri": "/o/model.pt",
        "latestCheckpoint": "/o/ckpt/2",
        "checkpointEpoch": 2,
    }
    assert report.data_stats == {"rowsRead": 150}
    assert parse_final_report("nothing here") is None


# ------------------------------------------------------------- skipping looks


def test_next_deadline_is_the_startup_deadline_while_provisioning(job, make_spec):
    spec = make_spec(runPolicy__startupDeadlineSeconds=60, runPolicy__activeDeadlineSeconds=600)
    pods = cluster_pods(job, spec, ready=False)
    obs = observe(job, spec, {"phase": "Provisioning", "startTime": EARLIER}, pods)
    assert next_deadline(obs) == NOW - timedelta(seconds=5) + timedelta(seconds=60)


@pytest.mark.parametrize(
    ("status", "ttl", "expected"),
    [
        ({"phase": "Failed", "completionTime": EARLIER}, 30, NOW + timedelta(seconds=25)),
        ({"phase": "Succeeded", "completionTime": EARLIER}, None, None),
        ({"phase": "Suspended", "startTime": EARLIER}, 30, None),
        ({}, None, NOW),
    ],
)
def test_next_deadline_of_other_phases(job, make_spec, status, ttl, expected):
    spec = make_spec(runPolicy__ttlSecondsAfterFinished=ttl)
    assert next_deadline(observe(job, spec, status)) == expected


def test_pods_created_but_not_yet_seen_are_not_created_again(job, make_spec, make_config):
    from kubetrain_operator.reconcile import Context, _with_expected_pods

    ctx = Context(make_config())
    ctx.expectations[job.uid] = {job.head_pod: 1e18, job.worker_pod(0): 1e18}
    seen = _with_expected_pods(ctx, job.uid, (pod(job.head_pod, role="head"),))
    assert [(p.name, p.phase) for p in seen] == [
        (job.head_pod, "Running"),
        (job.worker_pod(0), "Pending"),
    ]
    plan = decide(observe(job, make_spec(), {"phase": "Provisioning"}, seen))
    assert actions_of(plan, EnsureCluster) == []
    assert ctx.expectations[job.uid] == {job.worker_pod(0): 1e18}, "seen pods are forgotten"


def test_a_rejected_job_is_deleted_by_its_ttl_too(job):
    """An invalid spec has no parsed runPolicy; the TTL as written still applies."""
    error = SpecError("unknown node pool", field="spec.cluster.nodePool")
    failed = {"phase": "Failed", "reason": "ValidationFailed", "completionTime": EARLIER}
    obs = observe(job, None, failed, spec_error=error, raw_ttl=30)
    assert next_deadline(obs) == NOW + timedelta(seconds=25)
    assert decide(obs).actions == []
    assert decide(replace(obs, now=NOW + timedelta(seconds=25))).actions == [DeleteJob()]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"runPolicy": {"ttlSecondsAfterFinished": 30}}, 30),
        ({"runPolicy": {"ttlSecondsAfterFinished": "30"}}, None),
        ({"runPolicy": {"ttlSecondsAfterFinished": True}}, None),
        ({"runPolicy": {"ttlSecondsAfterFinished": -1}}, None),
        ({"runPolicy": None}, None),
        (None, None),
    ],
)
def test_raw_ttl_is_taken_only_when_usable(raw, expected):
    from kubetrain_operator.reconcile import _raw_ttl

    assert _raw_ttl(raw) == expected


@pytest.mark.parametrize(
    ("phase", "deadline_in", "expected"),
    [
        ("Provisioning", None, 300.0),  # pods and job are watched: only the resync
        ("Provisioning", 2.0, 2.0),  # the startup deadline
        ("Running", None, 5.0),  # Ray's state is polled every interval
        ("Running", 60.0, 5.0),
        ("Running", 1.0, 1.0),  # activeDeadlineSeconds comes first
        ("Failed", 30.0, 30.0),  # finished: only the TTL
        ("Succeeded", None, None),  # finished, no TTL: only on a change
        ("Suspended", None, None),
        ("Failed", -3.0, 0.0),  # overdue: at once
    ],
)
def test_next_look_in(make_config, phase, deadline_in, expected):
    from kubetrain_operator.reconcile import Context, LastLook, Sight

    ctx = Context(make_config())
    deadline = None if deadline_in is None else NOW + timedelta(seconds=deadline_in)
    ctx.looks["u"] = LastLook(Sight("41", ()), deadline)
    assert ctx.next_look_in("u", {"phase": phase}, 5.0, NOW) == expected
    assert ctx.next_look_in("never-looked", {"phase": phase}, 5.0, NOW) == 5.0, "unrecorded"


def test_a_job_whose_runtime_finished_is_looked_at_often(make_config):
    """The runtime's final report comes a second or two before Ray says the job ended:
    the outcome is read then, not a follow interval later. An epoch's report is not it."""
    from kubetrain_operator.reconcile import FINISHING_LOOK_SECONDS, Context

    ctx = Context(make_config())
    final = {"phase": "Running", "progress": {"stage": "finishing"},
             "metrics": {"wall_seconds": 12.0, "val_loss": 0.1}}  # fmt: skip
    assert ctx.next_look_in("u", final, 5.0, NOW) == FINISHING_LOOK_SECONDS
    epoch = {"phase": "Running", "progress": {"stage": "training"}, "metrics": {"val_loss": 1}}
    assert ctx.next_look_in("u", epoch, 5.0, NOW) == 5.0


# ------------------------------------------------------- spec.cluster edits


def templated(job, spec, template, **kw):
    return tuple(replace(p, template=template) for p in cluster_pods(job, spec, **kw))


def test_pods_from_an_older_spec_are_replaced_before_the_job_runs(job, make_spec):
    spec = make_spec()
    names = builders.expected_pod_names(job, spec)
    pods = templated(job, spec, "old")  # all Running and Ready, but built from the old spec
    obs = observe(job, spec, {"phase": "Pending", "startTime": EARLIER}, pods,
                  pod_templates=dict.fromkeys(names, "new"))  # fmt: skip
    plan = decide(obs)
    assert actions_of(plan, DeletePods) == [DeletePods(names)]
    assert not actions_of(plan, SubmitRayJob), "never gang-start an outdated cluster"
    assert [e.reason for e in plan.events if e.reason == "ClusterSpecChanged"]

    rebuilt = templated(job, spec, "new")
    after = decide(replace(obs, pods=rebuilt, status=plan.status))
    assert not actions_of(after, DeletePods) and actions_of(after, SubmitRayJob)


def test_an_edit_never_disrupts_a_running_attempt(job, make_spec):
    spec = make_spec()
    names = builders.expected_pod_names(job, spec)
    obs = observe(job, spec, running(job), templated(job, spec, "old"), RayJobState("RUNNING"),
                  pod_templates=dict.fromkeys(names, "new"))  # fmt: skip
    plan = decide(obs)
    assert plan.status.phase == "Running"
    assert not actions_of(plan, DeletePods) and not actions_of(plan, StopRayJob)
    up_to_date = cond(plan.status, "ClusterUpToDate")
    assert (up_to_date.status, up_to_date.reason) == ("False", "SpecChanged")

    # The attempt fails: the retry rebuilds the outdated pods from the new spec ...
    failed = decide(replace(obs, status=plan.status, ray=RayJobState("FAILED", "boom")))
    assert failed.status.phase == "Retrying"
    retry = decide(replace(obs, status=failed.status, ray=None))
    assert actions_of(retry, DeletePods) == [DeletePods(names)]
    # ... and once every pod is current, the condition says so.
    current = templated(job, spec, "new", ready=False, phase="Pending")
    done = decide(replace(obs, status=retry.status, pods=current, ray=None))
    up_to_date = cond(done.status, "ClusterUpToDate")
    assert (up_to_date.status, up_to_date.reason) == ("True", "SpecApplied")


def test_pods_without_a_template_hash_are_left_alone(job, make_spec):
    """Pods an older operator made carry no hash: an upgrade does not rebuild them."""
    spec = make_spec()
    names = builders.expected_pod_names(job, spec)
    obs = observe(job, spec, {"phase": "Provisioning", "startTime": EARLIER},
                  cluster_pods(job, spec), pod_templates=dict.fromkeys(names, "new"))  # fmt: skip
    assert not actions_of(decide(obs), DeletePods)


# ------------------------------------------------------------ queues (Kueue)


def test_a_queued_gang_waits_without_a_startup_deadline_then_counts_from_admission(job, make_spec):
    from kubetrain_operator.naming import JobRef

    queued_job = JobRef(job.name, job.namespace, job.uid, queue="gpu-team")
    spec = make_spec(runPolicy__startupDeadlineSeconds=60)
    hour_ago = timestamp(NOW - timedelta(hours=1))
    gated = tuple(replace(p, gated=True, node=None, phase="Pending", ready=False)
                  for p in cluster_pods(queued_job, spec, created=hour_ago))  # fmt: skip
    obs = observe(queued_job, spec, {"phase": "Pending", "startTime": hour_ago}, gated)
    plan = decide(obs)
    assert (plan.status.phase, plan.status.reason) == ("Pending", "Queued")
    assert "gpu-team" in plan.status.message
    assert cond(plan.status, "Queued").status == "True"
    assert next_deadline(replace(obs, status=plan.status)) is None, "no deadline while queued"

    # Admitted an hour after the pods were made: the 60 s start-up clock starts now.
    released = tuple(replace(p, gated=False) for p in gated)
    admitted = decide(replace(obs, status=plan.status, pods=released))
    assert admitted.status.phase != "Failed"
    queued = cond(admitted.status, "Queued")
    assert (queued.status, queued.reason) == ("False", "Admitted")
    later = replace(obs, status=admitted.status, pods=released, now=NOW + timedelta(seconds=61))
    assert decide(later).status.reason == "StartupDeadlineExceeded"


def test_summarize_pod_sees_a_scheduling_gate():
    gate = {"name": "kueue.x-k8s.io/admission"}
    scheduled = {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}
    body = {
        "metadata": {"name": "p"},
        "spec": {"schedulingGates": [gate]},
        "status": {"phase": "Pending", "conditions": [scheduled]},
    }
    state = summarize_pod(body)
    assert state.gated and state.problem is None


# ------------------------------------------------------------------ shared storage


def test_a_job_without_shared_storage_gets_a_condition_and_one_warning(job, make_spec):
    problem = builders.shared_storage_problem(make_spec(), OperatorConfig())
    assert problem and "spec.output.volumeClaim" in problem
    first = decide(observe(job, make_spec(), storage_problem=problem))
    condition = cond(first.status, "SharedStorage")
    assert (condition.status, condition.reason) == ("False", "NoSharedStorage")
    assert [e.reason for e in first.events].count("NoSharedStorage") == 1
    again = decide(observe(job, make_spec(), first.status.model_dump(), storage_problem=problem))
    assert "NoSharedStorage" not in [e.reason for e in again.events]


@pytest.mark.parametrize(
    ("output", "outputVolume", "shared"),
    [
        ({}, "", False),
        ({"uri": "s3://bucket/runs"}, "", True),
        ({"uri": "/data/runs"}, "", False),
        ({"uri": "file:///data/runs"}, "", False),
        ({"volumeClaim": "runs"}, "", True),
        ({}, "team-runs", True),
        ({"uri": "/output/mine"}, "team-runs", True),
        ({"uri": "/elsewhere", "volumeClaim": "runs"}, "", False),
    ],
)
def test_what_counts_as_shared_storage(output, outputVolume, shared, job, make_spec, make_config):
    spec = make_spec(output=output)
    config = make_config(outputVolume=outputVolume or None)
    assert (builders.shared_storage_problem(spec, config) is None) == shared
    plan = decide(observe(job, spec, storage_problem=builders.shared_storage_problem(spec, config)))
    assert cond(plan.status, "SharedStorage").status == ("True" if shared else "False")


def test_the_jobs_claim_is_mounted_in_every_pod_and_receives_the_outputs(
    job, make_spec, make_config
):
    spec = make_spec(output={"volumeClaim": "runs"}, training__workers=2)
    config = make_config()
    kids = builders.build_children(job, spec, resolve_placement(spec, config), config)
    for pod_ in kids.pods:
        volumes = {v["name"]: v for v in pod_["spec"]["volumes"]}
        assert volumes["output"]["persistentVolumeClaim"] == {"claimName": "runs"}
        mounts = pod_["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "output", "mountPath": "/output"} in mounts
    document = builders.runtime_spec_document(job, spec, config)
    assert document["spec"]["output"]["uri"] == f"/output/{job.namespace}/{job.cluster}"


def test_a_job_writing_to_an_object_store_does_not_mount_the_default_volume(make_spec, make_config):
    config = make_config(outputVolume="team-runs")
    assert builders.output_claim(make_spec(output={"uri": "s3://b/runs"}), config) is None
    assert builders.output_claim(make_spec(), config) == "team-runs"
    mine = make_spec(output={"uri": "s3://b/runs", "volumeClaim": "mine"})
    assert builders.output_claim(mine, config) == "mine"


def failed_ray_job(job, spec, message: str, *, exit_code: int, text: str | None = None):
    """The decision for a Ray job whose entrypoint exited ``exit_code`` after a final
    ``finished`` event with ``message`` (``text``: Ray's own message for the job)."""
    final = parse_final_report(
        f'KUBETRAIN_EVENT {{"event": "finished", "succeeded": false, "message": "{message}"}}'
    )
    text = text or f"Job entrypoint command failed with exit code {exit_code}"
    ray = RayJobState("FAILED", text, final, exit_code)
    return decide(observe(job, spec, running(job), cluster_pods(job, spec), ray))


def test_a_runtime_that_found_its_input_wrong_is_not_retried(job, make_spec):
    """Exit code 2 is the runtime's bad-input exit (a missing data file, say): another
    attempt would fail the same way, whatever backoffLimit allows."""
    spec = make_spec(runPolicy={"backoffLimit": 3})
    missing = "data file /data/x.csv does not exist"
    st = failed_ray_job(job, spec, missing, exit_code=2).status
    assert (st.phase, st.reason, st.failedAttempts) == ("Failed", "InvalidInput", None)
    assert st.message == "attempt 1: data file /data/x.csv does not exist"
    plan = failed_ray_job(job, spec, missing, exit_code=1, text="worker died")
    assert (plan.status.phase, plan.status.failedAttempts) == ("Retrying", 1)


def test_a_worker_out_of_memory_is_reported_as_oomkilled_and_retried(job, make_spec):
    """Exit code 3: Ray's memory monitor stopped a worker before the kernel did. The
    attempt counts against backoffLimit like a pod the kernel OOM-killed."""
    spec = make_spec(runPolicy={"backoffLimit": 1})
    message = "training failed: a training worker ran out of memory"
    st = failed_ray_job(job, spec, message, exit_code=3).status
    assert (st.phase, st.reason, st.failedAttempts) == ("Retrying", "OOMKilled", 1)
    assert "ran out of memory" in st.message
    assert st.attemptHistory[-1].reason == "OOMKilled"


# ------------------------------------------------------- kstatus: Reconciling, Stalled


def settled(status):
    """(status, reason) of the two conditions kstatus reads on any resource."""
    return {t: (cond(status, t).status, cond(status, t).reason) for t in ("Reconciling", "Stalled")}


def test_reconciling_and_stalled_follow_the_phase(job, make_spec):
    """kstatus (Flux, kpt) knows no phases: Reconciling True reads InProgress, Stalled True
    Failed, both False Current. Their message is the phase's."""
    spec = make_spec(runPolicy__backoffLimit=0)
    pods = cluster_pods(job, spec)
    pending = decide(observe(job, spec)).status
    assert settled(pending) == {"Reconciling": ("True", "Scheduling"),
                                "Stalled": ("False", "Scheduling")}  # fmt: skip
    assert cond(pending, "Reconciling").message == pending.message

    later = NOW + timedelta(seconds=30)
    running_ = decide(observe(job, spec, pending.model_dump(), pods, now=later)).status
    assert settled(running_)["Reconciling"] == ("True", "RayJobSubmitted")
    assert cond(running_, "Reconciling").lastTransitionTime == timestamp(NOW), "still True"

    ok = decide(observe(job, spec, running_.model_dump(), pods, RayJobState("SUCCEEDED"))).status
    assert settled(ok) == {"Reconciling": ("False", "Succeeded"), "Stalled": ("False", "Succeeded")}
    assert cond(ok, "Succeeded").status == "True", "kubectl wait --for=condition=Succeeded"

    ray = RayJobState("FAILED", "boom")
    failed = decide(observe(job, spec, running_.model_dump(), pods, ray)).status
    assert settled(failed) == {"Reconciling": ("False", "RayJobFailed"),
                               "Stalled": ("True", "RayJobFailed")}  # fmt: skip
    assert cond(failed, "Stalled").message == failed.message
    assert cond(failed, "Failed").status == "True"


def test_a_suspended_job_is_settled_and_a_resumed_one_reconciles_again(job, make_spec):
    spec = make_spec(runPolicy__suspend=True)
    plan = decide(observe(job, spec, running(job), cluster_pods(job, spec), RayJobState("RUNNING")))
    assert settled(plan.status) == {"Reconciling": ("False", "Suspended"),
                                    "Stalled": ("False", "Suspended")}  # fmt: skip
    later = NOW + timedelta(minutes=5)
    resumed = make_spec(runPolicy__suspend=False)
    again = decide(observe(job, resumed, plan.status.model_dump(), (), now=later)).status
    assert settled(again)["Reconciling"] == ("True", "Scheduling")
    assert cond(again, "Reconciling").lastTransitionTime == timestamp(later)


def test_a_failed_submission_says_so_in_reconciling(job, make_spec):
    spec = make_spec()
    plan = submission_failed(observe(job, spec, {}, cluster_pods(job, spec)), "HTTP 500")
    reconciling = cond(plan.status, "Reconciling")
    assert (reconciling.status, reconciling.reason) == ("True", "SubmissionFailed")
    assert reconciling.message == plan.status.message
