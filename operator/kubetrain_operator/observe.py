"""What the operator sees of a job, reduced to what ``status.decide`` looks at: its pods
(``summarize_pod``), its Ray job and the runtime's final report in the driver log
(``parse_final_report``), all gathered in one ``Observed``. Pure: the I/O that fetches
them lives in ``reconcile.py`` and ``podwatch.py``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from kubetrain.api.contract import parse_event
from kubetrain.api.v1alpha1 import TrainingJobSpec, TrainingJobStatus
from kubetrain.errors import SpecError

from .naming import ANNOTATION_TEMPLATE, JobRef

#: Container waiting reasons that mean the cluster will not come up by itself. They are
#: surfaced at once; the job fails when the startup deadline passes.
BLOCKING_REASONS = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError",
     "CreateContainerError", "RunContainerError"}
)  # fmt: skip
#: Reasons no amount of waiting can fix: fail at once instead of at the deadline.
DETERMINISTIC_REASONS = frozenset({"InvalidImageName", "ErrImageNeverPull"})
RayStatus = Literal[
    "PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED", "NOT_FOUND", "UNREACHABLE"
]  # fmt: skip


@dataclass(frozen=True)
class PodState:
    """What matters of one pod, small enough to keep thousands in the operator's pod store."""

    name: str
    role: str
    phase: str
    ready: bool
    terminating: bool
    node: str | None = None
    created: str | None = None
    problem: tuple[str, str] | None = None  # (reason, message) from scheduler or kubelet
    template: str | None = None  # the pod-template hash it was built with
    gated: bool = False  # held back by a scheduling gate (e.g. Kueue, until admitted)


def summarize_pod(body: dict[str, Any]) -> PodState:
    """Reduce a pod to a PodState, finding the reason it cannot run, if any: the
    scheduler's Unschedulable message, a kubelet waiting reason, or a failed container."""
    meta, spec, status = body.get("metadata", {}), body.get("spec", {}), body.get("status", {})
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = conditions.get("Ready", {}).get("status") == "True"
    problem: tuple[str, str] | None = None
    scheduled = conditions.get("PodScheduled", {})
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        problem = ("Unschedulable", scheduled.get("message", ""))
    containers = (status.get("initContainerStatuses") or []) + (
        status.get("containerStatuses") or []
    )
    for container in containers:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason")
        if reason in BLOCKING_REASONS or reason in DETERMINISTIC_REASONS:
            message = waiting.get("message") or ""
            problem = (reason, f"container {container.get('name')}: {message}".rstrip(": "))
            break
    phase = status.get("phase", "Pending")
    if phase in ("Failed", "Succeeded") and problem is None:
        reason = status.get("reason") or _oom_killed(containers) or "PodFailed"
        detail = status.get("message") or _terminated(containers) or f"pod phase {phase}"
        problem = (reason, detail)
    return PodState(
        name=meta.get("name", ""),
        role=(meta.get("labels") or {}).get("kubetrain.io/role", ""),
        phase=phase,
        ready=ready,
        terminating=meta.get("deletionTimestamp") is not None,
        node=spec.get("nodeName"),
        created=meta.get("creationTimestamp"),
        problem=problem,
        template=(meta.get("annotations") or {}).get(ANNOTATION_TEMPLATE),
        gated=bool(spec.get("schedulingGates")),
    )


def _oom_killed(containers: list[dict[str, Any]]) -> str | None:
    """``OOMKilled`` when a container was ended for exceeding its memory limit."""
    for container in containers:
        done = (container.get("state") or {}).get("terminated") or {}
        if done.get("reason") == "OOMKilled":
            return "OOMKilled"
    return None


def _terminated(containers: list[dict[str, Any]]) -> str:
    for container in containers:
        done = (container.get("state") or {}).get("terminated")
        if done:
            return (
                f"container {container.get('name')} exited with code "
                f"{done.get('exitCode')} ({done.get('reason', 'Error')})"
            )
    return ""


@dataclass(frozen=True)
class FinalReport:
    """Final results recovered from the Ray job's logs (``KUBETRAIN_EVENT`` lines), so
    that they survive even when the live status reporter could not write."""

    metrics: dict[str, float] = field(default_factory=dict)
    key_metric: str | None = None
    artifacts: dict[str, Any] | None = None
    data_stats: dict[str, Any] | None = None
    #: The one line the runtime gave when it finished (its error, when it failed).
    message: str | None = None


@dataclass(frozen=True)
class RayJobState:
    status: RayStatus
    message: str = ""
    final: FinalReport | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class Observed:
    """Everything ``decide`` looks at. ``spec_error`` is set instead of ``spec`` when
    validation failed."""

    job: JobRef
    generation: int
    status: TrainingJobStatus
    now: datetime
    spec: TrainingJobSpec | None = None
    spec_error: SpecError | None = None
    expected_pods: tuple[str, ...] = ()
    #: Template hash of each expected pod as the current spec builds it (empty: unknown).
    pod_templates: Mapping[str, str] = field(default_factory=dict)
    pods: tuple[PodState, ...] = ()
    ray: RayJobState | None = None
    submit_enabled: bool = True
    #: Why checkpoints and outputs would not be on shared storage (None: they are).
    storage_problem: str | None = None
    #: ``runPolicy.ttlSecondsAfterFinished`` as written, for a spec that failed validation
    #: (a rejected job is cleaned up by its TTL like any other finished job).
    raw_ttl: int | None = None

    @property
    def ttl_after_finished(self) -> int | None:
        return self.spec.runPolicy.ttlSecondsAfterFinished if self.spec else self.raw_ttl


def parse_final_report(logs: str) -> FinalReport | None:
    """Fold the runtime's ``KUBETRAIN_EVENT {json}`` log lines into final results: the last
    metrics, artifacts and data statistics win. Unparseable lines are skipped."""
    metrics: dict[str, float] = {}
    key_metric: str | None = None
    artifacts: dict[str, Any] | None = None
    data_stats: dict[str, Any] | None = None
    message: str | None = None
    found = False
    for line in logs.splitlines():
        event = parse_event(line)
        if event is None:
            continue
        found = True
        if isinstance(event.get("metrics"), dict):
            metrics.update(
                {k: float(v) for k, v in event["metrics"].items() if isinstance(v, int | float)}
            )
        key_metric = event.get("keyMetric") or key_metric
        if isinstance(event.get("artifacts"), dict):
            artifacts = {**(artifacts or {}), **event["artifacts"]}
        if isinstance(event.get("dataStats"), dict):
            data_stats = {**(data_stats or {}), **event["dataStats"]}
        if event.get("event") == "finished" and isinstance(event.get("message"), str):
            message = event["message"]
        if event.get("event") == "checkpoint" and event.get("uri"):
            checkpoint = {"latestCheckpoint": event["uri"], "checkpointEpoch": event.get("epoch")}
            artifacts = {**(artifacts or {}), **checkpoint}
    if not found:
        return None
    return FinalReport(metrics, key_metric, artifacts, data_stats, message)
