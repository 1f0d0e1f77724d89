"""The I/O half of a reconciliation: gather what is (the job, its pods from the operator's
pod watch, its Ray job), let :func:`status.decide` say what should be, then do it.

The daemon in ``lifecycle.py`` calls :func:`reconcile`; nothing here decides anything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from pydantic import ValidationError

from kubetrain.api.contract import FINAL_METRIC, OPERATOR_STATUS_FIELDS
from kubetrain.api.v1alpha1 import TERMINAL_PHASES, TrainingJobSpec, TrainingJobStatus
from kubetrain.errors import SpecError

from . import builders, metrics, status
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
from .config import OperatorConfig
from .kube import ApiError, KubeApi
from .naming import DASHBOARD_PORT, KUEUE_QUEUE, ROLE_HEAD, ROLE_WORKER, JobRef
from .observe import Observed, PodState, RayJobState, parse_final_report
from .rayjobs import RayJobsClient, RayJobsError
from .validation import check_head_size, check_job_name, parse_spec, resolve_placement

log = logging.getLogger(__name__)
EVENT_COMPONENT = "kubetrain-operator"
#: A job that is neither running nor finished is looked at at least this often, changes or
#: not: a safety net, as controller-runtime's resync, not how anything is noticed.
RESYNC_SECONDS = 300.0
SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@dataclass(frozen=True)
class Sight:
    """What a look decided from, besides the clock: the job's version and its pods."""

    resource_version: str | None
    pods: tuple[PodState, ...]


@dataclass(frozen=True)
class LastLook:
    """A look that changed nothing: what it saw, and until when the same sight needs no
    new look (None: until something changes)."""

    sight: Sight
    quiet_until: datetime | None


@dataclass(frozen=True)
class SpecVersion:
    """What a parsed spec depends on: the generation (a spec only changes with it) and the
    queue its pods are labelled with."""

    generation: int
    queue: str | None


@dataclass(frozen=True)
class CachedSpec:
    version: SpecVersion
    parsed: ParsedSpec


#: How often a job whose runtime reported its end is looked at, until Ray says it ended.
FINISHING_LOOK_SECONDS = 0.5


def runtime_finished(status: Mapping[str, Any]) -> bool:
    """The runtime wrote its final report (its outputs are written; the driver exits)."""
    final = (status.get("progress") or {}).get("stage") == "finishing"
    return final and FINAL_METRIC in (status.get("metrics") or {})


@dataclass
class Context:
    """Operator-wide state, kept in kopf's memo: the config and the API sessions."""

    config: OperatorConfig
    kube: KubeApi | None = None
    ray_session: aiohttp.ClientSession | None = None
    #: Per job uid, its spec parsed for one version: parsing it on every look is the largest
    #: cost of a reconciliation.
    specs: dict[str, CachedSpec] = field(default_factory=dict)
    #: Pods this process created that the pod watch has not shown yet (the "expectations" of
    #: Kubernetes' own controllers): under load the watch lags behind the creates, and a
    #: look in between must not take them for missing and create them again.
    expectations: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Per job: what the last look saw, and until when the same sight needs no new look.
    looks: dict[str, LastLook] = field(default_factory=dict)
    #: Jobs creating their children at the same time (``concurrentProvisions``): under a
    #: burst, jobs finish provisioning one batch after another instead of all at the end.
    provision_slots: asyncio.Semaphore = field(init=False)
    instance: str = field(default_factory=socket.gethostname)
    in_cluster: bool = field(
        default_factory=lambda: (
            bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(SA_TOKEN)
        )
    )

    def __post_init__(self) -> None:
        self.provision_slots = asyncio.Semaphore(self.config.concurrentProvisions)

    def ray_client(self, job: JobRef) -> RayJobsClient:
        """Reach the job's dashboard through its Service in the cluster, else through the
        API server's service proxy with the operator's own credentials."""
        assert self.kube is not None, "not logged in yet"
        mode = self.config.ray.mode
        via_service = mode == "service" or (mode == "auto" and self.in_cluster)
        if via_service:
            if self.ray_session is None:
                self.ray_session = aiohttp.ClientSession()
            base, session = job.dashboard_url, self.ray_session
        else:
            base = self.kube.service_proxy_url(job.namespace, job.head_service, DASHBOARD_PORT)
            session = self.kube.session
        return RayJobsClient(
            base,
            session,
            token=self.config.ray.authToken,
            timeout=self.config.ray.requestTimeoutSeconds,
        )

    async def post_events(self, job: JobRef, events: list[Event], decided_from: str) -> None:
        """Post the Events of one look, named after the job version it decided from. They
        inform, and must not fail a look: failures are counted and logged."""
        if self.kube is None:
            return
        when = status.timestamp(status.now_utc())
        bodies = [
            builders.event_object(
                job,
                event,
                component=EVENT_COMPONENT,
                instance=self.instance,
                when=when,
                decided_from=decided_from,
            )
            for event in events
        ]
        await asyncio.gather(*(_post_event(self.kube, body) for body in bodies))

    def next_look_in(
        self, uid: str, status: Mapping[str, Any], interval: float, now: datetime
    ) -> float | None:
        """Seconds until a job must be looked at again although nothing it is woken by (its
        job, its pods) changed; None: only on a change. A running job: every ``interval``,
        as Ray's state is not watched, or every ``FINISHING_LOOK_SECONDS`` once its runtime
        reported the end (its driver exits in a second or two). Any other job: at its next
        deadline (startup, TTL), else at the resync period. A look that acted or wrote is
        followed by one more."""
        phase = status.get("phase")
        if runtime_finished(status):
            interval = min(interval, FINISHING_LOOK_SECONDS)
        look = self.looks.get(uid)
        if look is None:
            return interval
        deadline = look.quiet_until
        until = None if deadline is None else max(0.0, (deadline - now).total_seconds())
        if phase == "Running":
            return interval if until is None else min(interval, until)
        if phase in TERMINAL_PHASES or phase == "Suspended":
            return until
        return RESYNC_SECONDS if until is None else min(RESYNC_SECONDS, until)

    def forget(self, uid: str) -> None:
        """Drop a job's per-job state once its daemon ends (deleted, or operator stopping)."""
        metrics.observe_phase(uid, None)
        self.looks.pop(uid, None)
        self.expectations.pop(uid, None)
        self.specs.pop(uid, None)

    async def close(self) -> None:
        if self.kube is not None:
            await self.kube.close()
        if self.ray_session is not None:
            await self.ray_session.close()


# --------------------------------------------------------------- reconcile


EXPECTATION_TIMEOUT = 300.0  # as Kubernetes' own controllers
_BOUND = 100_000


def _bounded(table: dict[Any, Any]) -> dict[Any, Any]:
    """Per-job tables are cleared wholesale past a bound: jobs come and go, the operator
    stays up, and everything here can be rebuilt from the cluster on the next look."""
    if len(table) > _BOUND:
        table.clear()
    return table


def _with_expected_pods(ctx: Context, uid: str, pods: tuple[PodState, ...]) -> tuple[PodState, ...]:
    """The watched pods plus those created recently but not seen by the watch yet, as Pending
    placeholders, so that a lagging watch never causes a second create."""
    waiting = ctx.expectations.get(uid)
    if not waiting:
        return pods
    names = {p.name for p in pods}
    clock = time.monotonic()
    for name in list(waiting):
        if name in names or clock - waiting[name] > EXPECTATION_TIMEOUT:
            del waiting[name]
    if not waiting:
        ctx.expectations.pop(uid, None)
        return pods
    extra = tuple(
        PodState(
            name, ROLE_HEAD if name.endswith("-head") else ROLE_WORKER, "Pending", False, False
        )
        for name in sorted(waiting)
    )
    return pods + extra


def _job_ref(body: dict[str, Any]) -> JobRef:
    meta = body["metadata"]
    queue = (meta.get("labels") or {}).get(KUEUE_QUEUE)
    return JobRef(meta["name"], meta["namespace"], meta["uid"], queue or None)


def _current_status(raw: dict[str, Any] | None) -> TrainingJobStatus:
    """The stored status; fields that no longer parse are dropped rather than fatal."""
    raw = dict(raw or {})
    raw.pop("kopf", None)
    try:
        return TrainingJobStatus.model_validate(raw)
    except ValidationError:
        owned = {k: v for k, v in raw.items() if k in OPERATOR_STATUS_FIELDS}
        try:
            return TrainingJobStatus.model_validate(owned)
        except ValidationError:
            return TrainingJobStatus()


@dataclass(frozen=True)
class ParsedSpec:
    """What one generation of a job's spec means, worked out once per generation."""

    spec: TrainingJobSpec | None
    error: SpecError | None
    children: builders.Children | None = None
    pod_templates: dict[str, str] = field(default_factory=dict)


def _parse(job: JobRef, raw: Any, config: OperatorConfig) -> ParsedSpec:
    try:
        check_job_name(job.name)
        spec = parse_spec(raw)
        check_head_size(spec)
        children = builders.build_children(job, spec, resolve_placement(spec, config), config)
    except SpecError as exc:
        return ParsedSpec(None, exc)
    return ParsedSpec(spec, None, children, builders.pod_templates(children))


async def _post_event(kube: KubeApi, body: dict[str, Any]) -> None:
    try:
        await kube.create(body)
    except ApiError as exc:
        log.warning("could not post Event %s: %s", body.get("reason"), exc)


def _raw_ttl(raw: Any) -> int | None:
    """ttlSecondsAfterFinished from a spec that did not validate, when it is usable."""
    try:
        ttl = raw["runPolicy"]["ttlSecondsAfterFinished"]
    except (KeyError, TypeError):
        return None
    return ttl if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl >= 0 else None


async def _observe_ray(ctx: Context, job: JobRef, current: TrainingJobStatus) -> RayJobState | None:
    """Ask Ray about the current attempt, only while the job runs."""
    if current.phase != "Running" or not current.submissionId:
        return None
    client = ctx.ray_client(job)
    try:
        info = await client.get(current.submissionId)
        if info is None:
            return RayJobState("NOT_FOUND", f"Ray does not know {current.submissionId}")
        final = None
        if info.status in ("SUCCEEDED", "FAILED"):
            final = parse_final_report(await client.logs(current.submissionId))
        return RayJobState(info.status, info.message, final, info.exit_code)  # type: ignore[arg-type]
    except RayJobsError as exc:
        return RayJobState("UNREACHABLE", str(exc))


async def reconcile(
    body: dict[str, Any],
    ctx: Context,
    pods: Iterable[PodState],
    post_event: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any] = log,
) -> dict[str, Any]:
    """One look at one job; returns the status merge-patch (empty when unchanged)."""
    started = time.perf_counter()
    config = ctx.config
    job = _job_ref(body)
    current = _current_status(body.get("status"))
    generation = body["metadata"].get("generation", 1)
    version = SpecVersion(generation, job.queue)
    cached = ctx.specs.get(job.uid)
    if cached is None or cached.version != version:
        cached = CachedSpec(version, _parse(job, body.get("spec"), config))
        _bounded(ctx.specs)[job.uid] = cached
    parsed = cached.parsed
    spec, error = parsed.spec, parsed.error
    expected = builders.expected_pod_names(job, spec) if spec else ()
    seen = _with_expected_pods(ctx, job.uid, tuple(sorted(pods, key=lambda p: p.name)))
    now = status.now_utc()
    sight = Sight(body["metadata"].get("resourceVersion"), seen)
    last = ctx.looks.get(job.uid)
    unchanged = last is not None and last.sight == sight and current.phase != "Running"
    if unchanged and (last.quiet_until is None or now < last.quiet_until):  # type: ignore[union-attr]
        return {}  # nothing decide looks at has changed since it was answered
    ray = await _observe_ray(ctx, job, current)
    observed = Observed(
        raw_ttl=_raw_ttl(body.get("spec")) if spec is None else None,
        job=job,
        generation=generation,
        status=current,
        now=now,
        spec=spec,
        spec_error=error,
        expected_pods=expected,
        pod_templates=parsed.pod_templates,
        pods=seen,
        ray=ray,
        submit_enabled=config.ray.submit,
        storage_problem=builders.shared_storage_problem(spec, config) if spec else None,
    )
    plan = status.decide(observed)
    ctx.looks.pop(job.uid, None)
    try:
        await _execute(ctx, job, parsed.children, plan.actions, logger=logger)
    except RayJobsError as exc:
        plan = status.submission_failed(observed, str(exc))
    else:
        if not plan.actions and not plan.patch(current):
            _bounded(ctx.looks)[job.uid] = LastLook(sight, status.next_deadline(observed))
    for event in plan.events:
        post_event(event)
    metrics.observe_phase(job.uid, plan.status.phase)
    if plan.status.phase != current.phase and plan.status.phase:
        metrics.TRANSITIONS.labels(phase=plan.status.phase).inc()
    if error is not None and current.phase not in TERMINAL_PHASES:
        logger.warning("TrainingJob %s/%s is invalid: %s", job.namespace, job.name, error)
    metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
    return plan.patch(current)


async def _execute(
    ctx: Context,
    job: JobRef,
    children: builders.Children | None,
    actions: list[Action],
    *,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    kube = ctx.kube
    assert kube is not None, "not logged in yet"
    for action in actions:
        if isinstance(action, EnsureCluster):
            assert children is not None, "a valid spec was built"
            async with ctx.provision_slots:
                await _ensure_cluster(ctx, kube, job, children=children, action=action)
        elif isinstance(action, DeletePods):
            for name in action.names:
                ctx.expectations.get(job.uid, {}).pop(name, None)
            await asyncio.gather(
                *(
                    kube.delete("v1", "Pod", job.namespace, name, grace=action.grace)
                    for name in action.names
                )
            )
        elif isinstance(action, DeleteService):
            await kube.delete("v1", "Service", job.namespace, job.head_service)
        elif isinstance(action, SubmitRayJob):
            body = builders.submission_request(job, action.attempt, ctx.config)
            created = await ctx.ray_client(job).submit(**body)
            if not created:
                logger.info("Ray job %s exists already; following it", body["submission_id"])
        elif isinstance(action, StopRayJob):
            try:
                await ctx.ray_client(job).stop(action.submission_id)
            except RayJobsError as exc:  # the cluster may be gone already: best effort
                logger.info("could not stop Ray job %s: %s", action.submission_id, exc)
        elif isinstance(action, SaveDriverLog):
            await _save_driver_log(ctx, kube, job, action.submission_id, logger)
        elif isinstance(action, DeleteJob):
            await kube.delete(f"{builders.API_VERSION}", "TrainingJob", job.namespace, job.name)


async def _save_driver_log(
    ctx: Context, kube: KubeApi, job: JobRef, submission_id: str, logger: Any
) -> None:
    """Best effort, never blocking the cleanup: a head already gone has no log to give."""
    try:
        log = await ctx.ray_client(job).logs(submission_id)
        await kube.create(builders.driver_log_config_map(job, log))
    except (RayJobsError, ApiError) as exc:
        logger.warning("driver log of %s not saved: %s", submission_id, exc)


async def _ensure_cluster(
    ctx: Context,
    kube: KubeApi,
    job: JobRef,
    *,
    children: builders.Children,
    action: EnsureCluster,
) -> None:
    wanted = set(action.pods)
    waiting = _bounded(ctx.expectations).setdefault(job.uid, {})

    async def create_pod(pod: dict[str, Any]) -> None:
        await kube.create(pod)
        waiting[pod["metadata"]["name"]] = time.monotonic()

    if action.setup:
        # Every setup object before any pod, although pods need only their ServiceAccount:
        # setup is redone only while all pods are missing, so a RoleBinding sent with the
        # pods and lost to an operator killed mid-wave would never be created.
        for wave in children.setup_waves:
            await asyncio.gather(*(kube.create(obj) for obj in wave))
    pods = (create_pod(p) for p in children.pods if p["metadata"]["name"] in wanted)
    await asyncio.gather(*pods)
