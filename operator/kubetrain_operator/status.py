"""Pure status computation: what the operator observed in, the status it should write and
the actions it should take out.

Level-triggered: every call sees the whole picture (the job's spec and last status, its
pods as they are, its Ray job as Ray reports it, the clock) and decides from that alone,
so a missed event, an operator restart or a transient error never loses work. Terminal
phases are final: once Succeeded or Failed, nothing here changes the phase again.

Condition types: ``ClusterReady`` (head and every worker Running and Ready), ``Running``
(the Ray job runs), ``Suspended``, ``Succeeded``, ``Failed``; and, from the phase, the two
that kstatus (Flux, kpt, cli-utils) reads on any resource: ``Reconciling`` (True while the
job waits, starts, runs or retries) and ``Stalled`` (True once Failed). A Succeeded or a
Suspended job has both False: settled, so kstatus says Current. Both are always present
(False rather than absent) so that ``kubectl wait --for=condition=Reconciling=False`` waits
for a job to settle. ``observedGeneration`` follows every spec edit, also after the end, so
that GitOps tools never wait for a look at the current spec that would change nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from kubetrain.api.contract import OPERATOR_STATUS_FIELDS, RUNTIME_STATUS_FIELDS
from kubetrain.api.crd import DEFAULT_MAX_LENGTH
from kubetrain.api.raynode import HEAD_RESOURCES_FIELD, WORKER_RESOURCES_FIELD
from kubetrain.api.v1alpha1 import (
    MAX_ATTEMPT_RECORDS,
    TERMINAL_PHASES,
    Artifacts,
    AttemptRecord,
    Condition,
    DataStats,
    Progress,
    TrainingJobSpec,
    TrainingJobStatus,
)
from kubetrain.errors import EXIT_OUT_OF_MEMORY, UserError

from .actions import (
    Action,
    DeleteJob,
    DeletePods,
    DeleteService,
    EnsureCluster,
    Event,
    SaveDriverLog,
    StopRayJob,
    SubmitRayJob,
)
from .naming import ROLE_HEAD
from .observe import DETERMINISTIC_REASONS, FinalReport, Observed, PodState


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with seconds, as Kubernetes writes it."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


#: The longest deadline or TTL that is told apart from never (a thousand years): the
#: schema allows any int64 seconds, which neither timedelta nor datetime can hold.
LONGEST_DURATION = timedelta(days=365_000)


def _seconds(count: int) -> timedelta:
    return timedelta(seconds=min(count, LONGEST_DURATION.total_seconds()))


def _after(moment: datetime, seconds: int) -> datetime:
    """``moment`` plus ``seconds``, or the end of time where datetime cannot go further."""
    try:
        return moment + _seconds(seconds)
    except OverflowError:
        return datetime.max.replace(tzinfo=timezone.utc)


def fit_message(message: str) -> str:
    """A status message within the CRD's limit: the API server refuses a longer one, and a
    message can quote what the user wrote (a rejected value of up to 1024 characters)."""
    if len(message) <= DEFAULT_MAX_LENGTH:
        return message
    return message[: DEFAULT_MAX_LENGTH - 3] + "..."


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 time from the status, None when absent or unreadable: the CRD's schema
    says only "string", and whoever may write the status may write anything there, so an
    unreadable time counts as unknown (a naive one as UTC) rather than failing every look."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass
class Plan:
    status: TrainingJobStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def patch(self, current: TrainingJobStatus) -> dict[str, Any]:
        """The status merge-patch, empty when nothing changed (then nothing is written)."""
        return status_patch(current, self.status)


def status_patch(current: TrainingJobStatus, desired: TrainingJobStatus) -> dict[str, Any]:
    before = current.model_dump(mode="json", exclude_none=True)
    after = desired.model_dump(mode="json", exclude_none=True)
    patch: dict[str, Any] = {}
    for key in (*OPERATOR_STATUS_FIELDS, *RUNTIME_STATUS_FIELDS):
        if before.get(key) != after.get(key):
            # A field the desired status drops is deleted with null (merge-patch).
            patch[key] = after.get(key)
    return patch


# ------------------------------------------------------------------ the decider


@dataclass(frozen=True)
class ClusterHealth:
    ready: bool
    missing: tuple[str, ...]  # absent: to create (not while an old one is terminating)
    broken: tuple[str, ...]  # failed for good: to delete, then recreate
    problem: tuple[str, str] | None
    all_scheduled: bool
    started_at: datetime | None  # creation of the oldest current pod
    outdated: tuple[str, ...] = ()  # built from an older spec: to replace while not running
    gated: bool = False  # some pod waits for admission (a queue), not for the scheduler


def assess_cluster(
    expected: Iterable[str], pods: Iterable[PodState], templates: Mapping[str, str] | None = None
) -> ClusterHealth:
    by_name = {p.name: p for p in pods}
    templates = templates or {}
    missing, broken, created, outdated = [], [], [], []
    gated = False
    problem: tuple[str, str] | None = None
    ready = scheduled = True
    for name in expected:
        pod = by_name.get(name)
        if pod is None:
            missing.append(name)
            ready = scheduled = False
            continue
        if pod.created:
            created.append(parse_time(pod.created))
        if pod.terminating:
            ready = scheduled = False
            continue
        if pod.phase in ("Failed", "Succeeded"):
            broken.append(name)
        elif pod.template and templates.get(name, pod.template) != pod.template:
            outdated.append(name)
            ready = False
        if not (pod.phase == "Running" and pod.ready):
            ready = False
        if pod.node is None:
            scheduled = False
        gated = gated or pod.gated
        if pod.problem and (problem is None or pod.role == ROLE_HEAD):
            problem = (pod.problem[0], f"pod {name}: {pod.problem[1]}")
    started = min((c for c in created if c is not None), default=None)
    return ClusterHealth(
        ready, tuple(missing), tuple(broken), problem, scheduled, started, tuple(outdated), gated
    )


class _Writer:
    """Applies transitions to a status copy, recording an Event for each change."""

    def __init__(self, obs: Observed) -> None:
        self.obs = obs
        self.status = obs.status.model_copy(deep=True)
        self.actions: list[Action] = []
        self.events: list[Event] = []

    @property
    def stamp(self) -> str:
        return timestamp(self.obs.now)

    def condition(self, type_: str, status: bool, reason: str, message: str = "") -> None:
        value = "True" if status else "False"
        conditions = self.status.conditions
        old = next((c for c in conditions if c.type == type_), None)
        since = old.lastTransitionTime if old is not None and old.status == value else None
        new = Condition(
            type=type_,
            status=value,
            reason=reason,
            message=fit_message(message),
            lastTransitionTime=since or self.stamp,
            observedGeneration=self.obs.generation,
        )
        if old is None:
            conditions.append(new)
        else:
            conditions[conditions.index(old)] = new

    def phase(self, phase: str, reason: str, message: str, warning: bool = False) -> None:
        st = self.status
        if (st.phase, st.reason) != (phase, reason):
            kind: Literal["Normal", "Warning"] = "Warning" if warning else "Normal"
            self.events.append(Event(kind, reason, message or phase))
        st.phase, st.reason = phase, reason  # type: ignore[assignment]
        st.message = fit_message(message)

    def finish(self, succeeded: bool, reason: str, message: str) -> None:
        self.phase("Succeeded" if succeeded else "Failed", reason, message, not succeeded)
        self.status.completionTime = self.stamp
        self.condition("Running", False, reason, message)
        self.condition("Succeeded" if succeeded else "Failed", True, reason, message)

    def settle(self) -> None:
        """Conditions ``Reconciling`` and ``Stalled`` from the phase, with its reason and
        message: what kstatus' generic rules read (Reconciling True: InProgress, Stalled
        True: Failed, neither: Current), as no tool knows what our phases mean."""
        st = self.status
        reason, message = st.reason or st.phase or "Unknown", st.message or ""
        settled = st.phase in TERMINAL_PHASES or st.phase == "Suspended"
        self.condition("Reconciling", not settled, reason, message)
        self.condition("Stalled", st.phase == "Failed", reason, message)

    def plan(self) -> Plan:
        # A status that was terminal already keeps its conditions as they are (it is final).
        if self.obs.status.phase not in TERMINAL_PHASES:
            self.settle()
        return Plan(self.status, self.actions, self.events)


def decide(obs: Observed) -> Plan:
    """The next status and actions for one job."""
    w = _Writer(obs)
    st = w.status
    if st.phase in TERMINAL_PHASES:
        return _after_finish(obs, w)
    st.observedGeneration = obs.generation
    if obs.spec_error is not None or obs.spec is None:
        message = str(obs.spec_error or "spec missing")
        w.finish(False, "ValidationFailed", message)
        return w.plan()
    spec = obs.spec
    st.rayClusterName = obs.job.cluster
    st.dashboardURL = obs.job.dashboard_url
    if st.startTime is None:
        st.startTime = w.stamp
    _storage(w, obs.storage_problem)

    if spec.runPolicy.suspend:
        return _suspend(obs, w)
    if st.phase == "Suspended":
        # Resumed: the clock of activeDeadlineSeconds restarts, as for a Kubernetes Job.
        st.startTime = w.stamp
        w.condition("Suspended", False, "Resumed", "resumed from the last checkpoint")
        w.phase("Pending", "Resumed", "recreating the Ray cluster")

    deadline = spec.runPolicy.activeDeadlineSeconds
    started = parse_time(st.startTime)
    if deadline is not None and started and obs.now - started > _seconds(deadline):
        if st.phase == "Running" and st.submissionId:
            w.actions.append(StopRayJob(st.submissionId))
            _record_attempt(w, "DeadlineExceeded", "stopped at activeDeadlineSeconds")
        w.finish(False, "DeadlineExceeded", f"activeDeadlineSeconds ({deadline}s) exceeded")
        _cleanup(obs, w)
        return w.plan()

    health = assess_cluster(obs.expected_pods, obs.pods, obs.pod_templates)
    if st.phase == "Running":
        return _follow(obs, w, spec, health)
    return _provision(obs, w, spec, health)


def _storage(w: _Writer, problem: str | None) -> None:
    """Condition SharedStorage, with a Warning the first time it is missing: the job still
    runs (a single attempt that never loses a pod needs nothing shared), but a retry or a
    deleted head loses its checkpoints."""
    if problem is None:
        w.condition("SharedStorage", True, "SharedStorage", "checkpoints and outputs are shared")
        return
    if _condition_reason(w.status, "SharedStorage") != "NoSharedStorage":
        w.events.append(Event("Warning", "NoSharedStorage", problem))
    w.condition("SharedStorage", False, "NoSharedStorage", problem)


def _provision(obs: Observed, w: _Writer, spec: TrainingJobSpec, health: ClusterHealth) -> Plan:
    """Before the Ray job runs: repair and complete the cluster, then submit once it is
    ready, else wait (queued, or within the startup deadline) or fail fast."""
    failed_now = _failed_since_last_attempt(w.status, obs.pods, health.broken)
    if failed_now:
        # A Ray pod that exits before the job runs (OOMKilled at start, a crash) is a
        # failed attempt like one during training: counted, retried within backoffLimit.
        loss = _describe_loss(obs, failed_now)
        w.condition("ClusterReady", False, "ClusterFailed", loss.message)
        return _attempt_failed(obs, w, spec, loss, stop=False)
    _replace_pods(w, health)
    _create_missing(obs, w, health)
    queued = _queued(w, health)  # (also records the admission once the gates are gone)
    if health.ready:
        return _submit(obs, w, spec)
    if queued is not None:
        # Waiting in a queue is not a failure to start: no startup deadline meanwhile.
        w.condition("ClusterReady", False, "Queued", queued)
        if w.status.phase != "Retrying":
            w.phase("Pending", "Queued", queued)
        return w.plan()
    return _wait_for_cluster(obs, w, spec, health)


def _replace_pods(w: _Writer, health: ClusterHealth) -> None:
    """Delete broken pods, and pods built from an older spec.cluster (pool, resources,
    image, ...): they are created again from the new spec once gone."""
    if health.broken:
        w.actions.append(DeletePods(health.broken))
    if health.outdated:
        w.actions.append(DeletePods(health.outdated))
        names = ", ".join(health.outdated)
        w.events.append(
            Event("Normal", "ClusterSpecChanged", f"spec.cluster changed: replacing {names}")
        )
    elif _condition_reason(w.status, "ClusterUpToDate") == "SpecChanged" and not health.missing:
        w.condition(
            "ClusterUpToDate", True, "SpecApplied", "every pod is built from the current spec"
        )


def _create_missing(obs: Observed, w: _Writer, health: ClusterHealth) -> None:
    """Create missing pods. Setup objects are (re)applied with the first pods and whenever
    the whole cluster is missing; AlreadyExists answers make this idempotent."""
    if health.missing:
        setup = len(health.missing) == len(obs.expected_pods)
        w.actions.append(EnsureCluster(health.missing, setup))


def _submit(obs: Observed, w: _Writer, spec: TrainingJobSpec) -> Plan:
    """The cluster is ready: submit the next attempt (a retry resumes from its checkpoint)."""
    st = w.status
    w.condition("ClusterReady", True, "ClusterReady", "head and all workers are ready")
    if not obs.submit_enabled:
        w.phase("Provisioning", "ClusterReady", "Ray cluster ready; submission disabled")
        return w.plan()
    attempt = (st.attempts or 0) + 1
    st.attempts = attempt
    st.submissionId = obs.job.submission_id(attempt)
    w.actions.append(SubmitRayJob(attempt))
    resumed = attempt > 1
    message = f"attempt {attempt} submitted" + (", resuming from the last checkpoint"
                                                 if resumed else "")  # fmt: skip
    w.phase("Running", "RayJobSubmitted", message)
    w.condition("Running", True, "RayJobSubmitted", message)
    if st.progress is None:
        st.progress = Progress(stage="data", totalEpochs=spec.training.epochs)
    elif resumed:
        st.progress = st.progress.model_copy(update={"stage": "data"})
    return w.plan()


def _wait_for_cluster(
    obs: Observed, w: _Writer, spec: TrainingJobSpec, health: ClusterHealth
) -> Plan:
    """Not ready yet: say why, fail at once on a reason no wait can fix, and at the
    startup deadline on any other."""
    st = w.status
    if health.problem is not None:
        reason, message = health.problem
        if reason in DETERMINISTIC_REASONS:
            w.condition("ClusterReady", False, reason, message)
            w.finish(False, reason, message)
            _cleanup(obs, w)
            return w.plan()
    else:
        reason = "Provisioning" if health.all_scheduled else "Scheduling"
        message = f"waiting for {len(obs.expected_pods)} Ray pods to be running and ready"
    w.condition("ClusterReady", False, reason, message)
    if _past_startup_deadline(obs, w, spec, health, (reason, message)):
        return w.plan()
    if st.phase != "Retrying":
        phase = "Provisioning" if health.all_scheduled else "Pending"
        w.phase(phase, reason, message, warning=health.problem is not None)
    elif health.problem is not None:
        st.message = fit_message(message)
    return w.plan()


def _past_startup_deadline(
    obs: Observed,
    w: _Writer,
    spec: TrainingJobSpec,
    health: ClusterHealth,
    waiting: tuple[str, str],
) -> bool:
    """Fail the job (and clean up) once startupDeadlineSeconds has passed; True then."""
    limit = spec.runPolicy.startupDeadlineSeconds
    since = _startup_since(w.status, health, obs.now)
    if obs.now - since <= _seconds(limit):
        return False
    reason, message = waiting
    why = f"Ray cluster not ready within startupDeadlineSeconds ({limit}s)"
    final_reason = reason if health.problem else "StartupDeadlineExceeded"
    w.finish(False, final_reason, f"{why}: {message}" if health.problem else why)
    _cleanup(obs, w)
    return True


def _follow(obs: Observed, w: _Writer, spec: TrainingJobSpec, health: ClusterHealth) -> Plan:
    st = w.status
    ray = obs.ray
    if health.outdated:  # a running attempt is never disrupted by an edit
        w.condition("ClusterUpToDate", False, "SpecChanged",
                    "spec.cluster changed while running: applies when the cluster is rebuilt "
                    "(suspend and resume, or a retry)")  # fmt: skip
    if health.missing or health.broken:
        loss = _describe_loss(obs, (*health.missing, *health.broken))
        w.condition("ClusterReady", False, "ClusterFailed", loss.message)
        return _attempt_failed(obs, w, spec, loss, stop=True)
    if ray is None:
        return w.plan()
    if ray.status == "UNREACHABLE":  # keep the phase, say why nothing moves; look again later
        w.condition("Running", True, "RayUnreachable", ray.message)
        return w.plan()
    if ray.status in ("PENDING", "RUNNING"):
        w.condition("Running", True, "RayJobRunning", f"Ray job {st.submissionId} is running")
        return w.plan()
    if ray.status == "SUCCEEDED":
        _merge_final(w, ray.final)
        if st.progress is not None:
            st.progress = st.progress.model_copy(update={"percent": 100, "etaSeconds": 0})
        w.finish(True, "Succeeded", f"attempt {st.attempts} succeeded")
        _record_attempt(w, "Succeeded", "")
        _cleanup(obs, w)
        return w.plan()
    _merge_final(w, ray.final)
    # The runtime's own line when it gave one, else Ray's.
    said = (ray.final.message if ray.final else None) or ray.message
    if ray.status == "FAILED" and ray.exit_code == UserError.exit_code:
        # The runtime found the job or its data wrong: another attempt would fail the same way.
        w.finish(False, "InvalidInput", f"attempt {st.attempts}: {said}")
        _record_attempt(w, "InvalidInput", said)
        _cleanup(obs, w)
        return w.plan()
    if ray.status == "FAILED" and ray.exit_code == EXIT_OUT_OF_MEMORY:
        # Ray's memory monitor stopped a worker before the kernel did: the same cause.
        return _attempt_failed(obs, w, spec, Loss("OOMKilled", said), stop=False)
    reason = {"STOPPED": "RayJobStopped", "NOT_FOUND": "RayJobLost"}.get(ray.status, "RayJobFailed")
    message = said or f"Ray job {st.submissionId} ended {ray.status}"
    return _attempt_failed(obs, w, spec, Loss(reason, message), stop=False)


@dataclass(frozen=True)
class Loss:
    """Why an attempt failed, and whether the Ray cluster must be rebuilt for the next."""

    reason: str
    message: str
    head_lost: bool = False


def _describe_loss(obs: Observed, lost: Iterable[str]) -> Loss:
    """Name the pod that ended the attempt, the head first: a lost head takes the whole
    Ray cluster with it. A pod's own reason (OOMKilled, Evicted) wins over the generic."""
    lost = tuple(lost)
    head = obs.job.head_pod
    culprit = head if head in lost else lost[0]
    role = "head" if culprit == head else "worker"
    pod = next((p for p in obs.pods if p.name == culprit), None)
    if pod is None or pod.terminating:
        return Loss(f"{role.capitalize()}PodLost", f"Ray {role} pod {culprit} was deleted",
                    culprit == head)  # fmt: skip
    reason, detail = pod.problem or ("PodFailed", f"pod phase {pod.phase}")
    if reason == "PodFailed":
        reason = f"{role.capitalize()}PodFailed"
    if reason == "OOMKilled" and obs.spec is not None:
        detail += f"; {memory_advice(obs.spec, role)}"
    return Loss(reason, f"Ray {role} pod {culprit} failed: {detail}", culprit == head)


def memory_advice(spec: TrainingJobSpec, role: str) -> str:
    """The field to raise for a pod of this role that ran out of memory, with its value."""
    if role == "head":
        field, now = HEAD_RESOURCES_FIELD, spec.cluster.head.resources.memory
    else:
        field, now = WORKER_RESOURCES_FIELD, spec.training.resourcesPerWorker.memory
    return f"raise {field}.memory (now {now})"


def _failed_since_last_attempt(
    st: TrainingJobStatus, pods: Iterable[PodState], broken: Iterable[str]
) -> tuple[str, ...]:
    """Broken pods of the current attempt. A pod created before the last attempt ended
    already counted for it (the look after a failure may still see it, not yet deleted)."""
    ended = parse_time(st.attemptHistory[-1].finishedAt) if st.attemptHistory else None
    created = {p.name: parse_time(p.created) for p in pods}
    return tuple(
        name for name in broken
        if ended is None or (created.get(name) is not None and created[name] >= ended)
    )  # fmt: skip


def _attempt_failed(
    obs: Observed, w: _Writer, spec: TrainingJobSpec, loss: Loss, *, stop: bool
) -> Plan:
    """Count a failed attempt; retry (on the same cluster when it is healthy, else on a
    rebuilt one) while the backoff limit allows, from the last checkpoint."""
    st = w.status
    failed = (st.failedAttempts or 0) + 1
    st.failedAttempts = failed
    st.attempts = max(st.attempts or 0, failed)  # also when it failed before submission
    if stop and st.submissionId:
        w.actions.append(StopRayJob(st.submissionId))
    _record_attempt(w, loss.reason, loss.message)
    limit = spec.runPolicy.backoffLimit
    if failed <= limit:
        text = f"attempt {st.attempts} failed: {loss.message}; retry {failed} of {limit}"
        w.phase("Retrying", loss.reason, text, warning=True)
        w.condition("Running", False, loss.reason, text)
        if loss.head_lost:  # workers of a lost head belong to no cluster: rebuild it all
            doomed = tuple(p.name for p in obs.pods if not p.terminating)
        else:
            doomed = assess_cluster(obs.expected_pods, obs.pods).broken
        if doomed:
            w.actions.append(DeletePods(doomed))
        return w.plan()
    text = f"attempt {st.attempts} failed: {loss.message}" + (
        f" (backoffLimit {limit} reached)" if limit else ""
    )
    w.finish(False, loss.reason, text)
    _cleanup(obs, w)
    return w.plan()


def _record_attempt(w: _Writer, reason: str, message: str) -> None:
    st = w.status
    checkpoint = st.artifacts.checkpointEpoch if st.artifacts else None
    record = AttemptRecord(attempt=max(st.attempts or 1, 1), reason=reason,
                           message=fit_message(message),
                           finishedAt=w.stamp, checkpointEpoch=checkpoint)  # fmt: skip
    st.attemptHistory = [*st.attemptHistory, record][-MAX_ATTEMPT_RECORDS:]


def _suspend(obs: Observed, w: _Writer) -> Plan:
    st = w.status
    if st.phase == "Running" and st.submissionId:
        w.actions.append(StopRayJob(st.submissionId))
        _record_attempt(w, "Suspended", "stopped by spec.runPolicy.suspend")
    alive = tuple(p.name for p in obs.pods if not p.terminating)
    if alive:
        w.actions.append(DeletePods(alive))
    message = "suspended: Ray job stopped and pods deleted; checkpoints are kept"
    w.phase("Suspended", "Suspended", message)
    w.condition("Suspended", True, "Suspended", message)
    w.condition("ClusterReady", False, "Suspended", "pods deleted while suspended")
    if any(c.type == "Running" for c in st.conditions):
        w.condition("Running", False, "Suspended", message)
    return w.plan()


#: A finished job's pods hold nothing more to save (its outputs are written and its log
#: kept): they stop within a second instead of Ray's drain of about 5 s, and free the node
#: for the next job.
FINISHED_POD_GRACE_SECONDS = 1


def _cleanup(obs: Observed, w: _Writer) -> None:
    """Delete what the cleanup policy does not keep. Runs at the transition and on every
    later look, so an interrupted cleanup finishes (level-triggered)."""
    spec = obs.spec
    policy = spec.runPolicy.cleanupPolicy if spec else "DeleteCluster"
    keep = {
        "DeleteCluster": (),
        "KeepHead": (ROLE_HEAD,),
        "KeepAll": (ROLE_HEAD, "worker"),
    }[policy]
    doomed = tuple(p.name for p in obs.pods if not p.terminating and p.role not in keep)
    _save_driver_log(obs, w, doomed)
    if doomed:
        w.actions.append(DeletePods(doomed, grace=FINISHED_POD_GRACE_SECONDS))
    cleaned = _condition_reason(w.status, "ClusterReady") == "CleanedUp"
    if policy == "DeleteCluster" and not cleaned:
        w.actions.append(DeleteService())
    if policy != "KeepAll":
        w.condition("ClusterReady", False, "CleanedUp", f"cleanupPolicy {policy} applied")


def _save_driver_log(obs: Observed, w: _Writer, doomed: tuple[str, ...]) -> None:
    """Before the head pod goes, its Ray job's log is kept (once, for the last attempt)."""
    st = w.status
    head_doomed = any(p.name in doomed and p.role == ROLE_HEAD for p in obs.pods)
    artifacts = st.artifacts or Artifacts()
    if not head_doomed or not st.submissionId or artifacts.logConfigMap:
        return
    w.actions.append(SaveDriverLog(st.submissionId))
    st.artifacts = artifacts.model_copy(update={"logConfigMap": obs.job.driver_log_config_map})


def _after_finish(obs: Observed, w: _Writer) -> Plan:
    """Terminal phases are final: only cleanup and the TTL remain. A spec edited after the
    end is observed (and changes nothing), else kstatus and Argo CD would wait for ever."""
    st = w.status
    st.observedGeneration = obs.generation
    if st.phase == "Succeeded" and obs.ray is not None:
        _merge_final(w, obs.ray.final)
    if st.reason != "ValidationFailed":
        _cleanup(obs, w)
    ttl = obs.ttl_after_finished
    done = parse_time(st.completionTime)
    if ttl is not None and done is not None and obs.now - done >= _seconds(ttl):
        w.actions.append(DeleteJob())
    return w.plan()


def _merge_final(w: _Writer, final: FinalReport | None) -> None:
    """Fill final metrics and artifacts the reporter did not write (never overwrite)."""
    if final is None:
        return
    st = w.status
    if final.metrics:
        st.metrics = {**final.metrics, **st.metrics}
    if final.key_metric and not st.keyMetric:
        st.keyMetric = final.key_metric
    if final.artifacts and st.artifacts is None:
        st.artifacts = Artifacts.model_validate(final.artifacts)
    if final.data_stats and st.dataStats is None:
        st.dataStats = DataStats.model_validate(final.data_stats)


def _queued(w: _Writer, health: ClusterHealth) -> str | None:
    """While any pod is scheduling-gated, the message saying so (condition ``Queued``
    True); once the gates are gone, ``Queued`` turns False with the admission time, from
    which the startup deadline counts."""
    queue = w.obs.job.queue
    if health.gated:
        where = f" in Kueue queue {queue}" if queue else ""
        message = f"waiting for admission{where}: pods are held by a scheduling gate"
        w.condition("Queued", True, "SchedulingGated", message)
        return message
    if _condition_reason(w.status, "Queued") == "SchedulingGated":
        w.condition("Queued", False, "Admitted", "pods released for scheduling")
    return None


def _startup_since(st: TrainingJobStatus, health: ClusterHealth, now: datetime) -> datetime:
    """When the current cluster started coming up: its oldest pod, else the time the
    cluster was last seen not ready; never before the job left its queue."""
    since = health.started_at or _condition_since(st, "ClusterReady") or now
    admitted = (
        _condition_since(st, "Queued") if _condition_reason(st, "Queued") == "Admitted" else None
    )
    return max(since, admitted) if admitted else since


def next_deadline(obs: Observed) -> datetime | None:
    """The next moment at which ``decide`` could answer differently although nothing it
    observes has changed (a deadline or the TTL passing). Before then, and with the same
    observations, a look can be skipped: the answer was given and acted on already."""
    st, spec = obs.status, obs.spec
    moments: list[datetime] = []
    if st.phase in TERMINAL_PHASES:
        ttl, done = obs.ttl_after_finished, parse_time(st.completionTime)
        if ttl is not None and done is not None:
            moments.append(_after(done, ttl))
        return min(moments, default=None)
    if spec is None:
        return None
    if spec.runPolicy.suspend or st.phase == "Suspended":
        return None
    started = parse_time(st.startTime)
    if started is None:
        return obs.now  # never looked at yet
    if spec.runPolicy.activeDeadlineSeconds is not None:
        moments.append(_after(started, spec.runPolicy.activeDeadlineSeconds))
    if st.phase != "Running":
        health = assess_cluster(obs.expected_pods, obs.pods)
        if not health.gated:  # queued: no startup deadline runs
            since = _startup_since(st, health, obs.now)
            moments.append(_after(since, spec.runPolicy.startupDeadlineSeconds))
    return min(moments, default=None)


def _condition_since(st: TrainingJobStatus, type_: str) -> datetime | None:
    cond = next((c for c in st.conditions if c.type == type_), None)
    return parse_time(cond.lastTransitionTime) if cond else None


def _condition_reason(st: TrainingJobStatus, type_: str) -> str | None:
    cond = next((c for c in st.conditions if c.type == type_), None)
    return cond.reason if cond else None


def submission_failed(obs: Observed, error: str) -> Plan:
    """The plan when Ray refused or could not take the submission: everything ``decide``
    would do except the move to Running; the next look submits the same attempt again.
    The Warning event is posted once, not on every failed retry."""
    plan = decide(replace(obs, submit_enabled=False))
    events = [e for e in plan.events if e.reason != "ClusterReady"]
    phase = "Retrying" if obs.status.phase == "Retrying" else "Provisioning"
    message = f"submitting the Ray job failed: {error}"
    if (obs.status.phase, obs.status.reason) != (phase, "SubmissionFailed"):
        events.append(Event("Warning", "SubmissionFailed", message))
    st = plan.status
    st.phase, st.reason = phase, "SubmissionFailed"  # type: ignore[assignment]
    st.message = fit_message(message)
    w = _Writer(replace(obs, status=st))  # Reconciling says why, as the phase does
    return Plan(w.plan().status, plan.actions, events)
