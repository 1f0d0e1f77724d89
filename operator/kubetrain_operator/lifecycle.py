"""What the kopf handlers delegate to: operator settings at startup, login, cleanup, and the
per-job daemon that reconciles when something changed and writes status and Events."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import kopf

from . import apihealth, builders, metrics
from .actions import Event
from .apihealth import ApiHealth
from .config import OperatorConfig
from .kube import ApiError, KubeApi
from .naming import LABEL_MANAGED_BY, MANAGED_BY, JobRef
from .podwatch import PodStore, PodWatch
from .reconcile import Context, reconcile
from .status import now_utc

FINALIZER = "kubetrain.io/finalizer"
#: How often the job versions in kopf's live bodies are compared (seconds).
TICK = 0.5
#: How long a woken daemon waits for related changes before it looks (seconds).
SETTLE = 0.2
#: How long a daemon waits for the watch to show its own status write before looking anyway.
CONSISTENCY_TIMEOUT = 10.0
PEERING_DEFAULT = "kubetrain"


class LeanStatusDiffBaseStorage(kopf.StatusDiffBaseStorage):
    """kopf's status-stored diff base, with the same essence, built without deep-copying
    the whole object first: kopf builds one for watch events, and status is most of an
    object's bytes (measured ~8% of the CPU when kopf still watched the pods)."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        if extra_fields:
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata") or {}
        slim = {k: v for k, v in body.items() if k not in ("status", "metadata")}
        slim["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
        return super().build(body=slim)


class LeanStatusProgressStorage(kopf.StatusProgressStorage):
    """kopf's status-stored progress, minus a deep copy per watch event: kopf only clears
    essences it has just built or decoded (fresh objects), so clearing in place is safe."""

    def clear(self, *, essence: Any) -> Any:
        status = essence.get("status") or {}
        kopf_stanza = status.get("kopf") or {}
        kopf_stanza.pop("progress", None)
        if "kopf" in status and not kopf_stanza:
            del status["kopf"]
        self.remove_empty_stanzas(essence)
        return essence


class KopfBackoffs:
    """kopf's request retries (429, 5xx, connection errors), never given up: kopf's own
    (1..21 s, 9 attempts) give up after about a minute, and an object whose finalizer
    could not be added then gets no daemon until it changes again. Seen under API Priority
    and Fairness throttling (a burst through a small share): jobs stuck, never provisioned.
    Jittered (each step up to twice as long), so that requests rejected together are not
    retried together. Each iteration is a fresh sequence: kopf iterates once per request."""

    STEPS = (1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)
    CAP = 30.0

    def __iter__(self) -> Iterator[float]:
        for step in itertools.chain(self.STEPS, itertools.repeat(self.CAP)):
            yield step * (1 + random.random())


def configure(settings: kopf.OperatorSettings, memo: Any, config: OperatorConfig) -> None:
    """kopf settings tuned for many jobs (see BENCHMARKS.md, Operator)."""
    settings.persistence.finalizer = FINALIZER
    # kopf's bookkeeping stays in status (status.kopf is preserved by the CRD schema): no
    # annotation PATCHes on the main resource, no extra watch events.
    settings.persistence.progress_storage = LeanStatusProgressStorage(
        field="status.kopf.progress", touch_field="status.kopf.dummy"
    )
    settings.persistence.diffbase_storage = LeanStatusDiffBaseStorage(
        field="status.kopf.last-handled-configuration"
    )
    # Explicit watch timeouts: a silently dead watch connection otherwise goes unnoticed.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    # The server's Retry-After stays the minimum; False lets kopf wait its own (jittered)
    # backoff when longer, instead of exactly the Retry-After (see KopfBackoffs).
    settings.networking.enforce_retry_after = False
    settings.networking.error_backoffs = KopfBackoffs()
    # One replica (Deployment strategy Recreate); peering only when the admin names it.
    settings.peering.standalone = config.peeringName is None
    settings.peering.name = config.peeringName or PEERING_DEFAULT
    settings.peering.clusterwide = not config.namespaces
    settings.peering.priority = config.peeringPriority
    # Events are posted by the operator's own client for transitions (reconcile.py); kopf
    # posts none, log lines included.
    settings.posting.enabled = False
    settings.posting.loggers = False
    # Resources are discovered once at start: no cluster-wide CRD/namespace watch, so the
    # same RBAC rules work as a ClusterRole and as per-namespace Roles.
    settings.scanning.disabled = True
    ctx = memo.ctx = Context(config)
    memo.followers = Followers()
    # Only our own pods come down the stream (server-side label selector).
    memo.pods = PodWatch(
        lambda: ctx.kube,
        f"{LABEL_MANAGED_BY}={MANAGED_BY}",
        config.namespaces,
        PodStore(on_change=memo.followers.wake),
    )
    memo.background = []
    memo.api_health = ApiHealth()
    metrics.serve(config.metricsPort, memo.api_health.describe)


async def login(memo: Any, settings: kopf.OperatorSettings, **kwargs: Any) -> Any:
    """In-cluster service account first, else the kubeconfig; our API client reuses the
    same credentials, so kopf and kubetrain always act as the same identity."""
    info = kopf.login_with_service_account(settings=settings, **kwargs)
    info = info or kopf.login_with_kubeconfig(settings=settings, **kwargs)
    if info is None:
        raise kopf.LoginError("no in-cluster service account and no kubeconfig found")
    ctx: Context = memo.ctx
    old, ctx.kube = ctx.kube, KubeApi.from_connection_info(info)
    if old is not None:
        await old.close()
    memo.pods.start()  # reconnects by itself with the new session after a re-login
    if not memo.background:
        memo.background.append(asyncio.create_task(memo.followers.run(), name="kubetrain-tick"))
        health = apihealth.watch(lambda: ctx.kube, memo.api_health)
        memo.background.append(asyncio.create_task(health, name="kubetrain-api-health"))
    return info


async def cleanup(memo: Any) -> None:
    for task in getattr(memo, "background", ()):
        task.cancel()
    if getattr(memo, "pods", None) is not None:
        await memo.pods.stop()
    ctx: Context | None = getattr(memo, "ctx", None)
    if ctx is not None:
        await ctx.close()


async def follow(body: kopf.Body, memo: Any, logger: Any, stopped: Any) -> None:
    """Follow one job for its whole life (a kopf daemon).

    The daemon sleeps until something it decides from changed: its job (a new
    resourceVersion, seen by :class:`Followers`) or its pods (the pod watch), or until the
    next moment a decision could change by itself (a deadline, the TTL), or, while the job
    runs, ``followIntervalSeconds`` (Ray's state is not watched). So a suspend or a pod
    failure is acted on within about half a second, while a thousand waiting jobs cost
    nothing (``Context.next_look_in``).

    A wake-up waits ``SETTLE`` seconds first, so that a job's pods changing together (as
    they do: created, bound and started in a burst) are decided on once, as the
    Kubernetes Job controller batches pod updates. After writing status the daemon waits
    (up to ``CONSISTENCY_TIMEOUT``) for the watch to bring that write back, so that no look
    decides from a status it has already changed. API errors are retried on the next look.
    """
    ctx: Context = memo.ctx
    followers: Followers = memo.followers
    uid = body["metadata"]["uid"]
    await memo.pods.synced.wait()  # before it, existing pods would look missing
    wake = followers.add(uid, body)
    try:
        await _follow(body, ctx, pods=memo.pods.store, wake=wake, logger=logger, stopped=stopped)
    finally:
        followers.remove(uid, wake)
        ctx.forget(uid)


@dataclass(frozen=True)
class OwnWrite:
    """A status patch of ours that the watched body may not show yet."""

    resource_version: str
    at: float  # on the event loop's clock


async def _follow(
    body: kopf.Body, ctx: Context, *, pods: PodStore, wake: asyncio.Event, logger: Any, stopped: Any
) -> None:
    meta = body["metadata"]
    uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
    interval = ctx.config.followIntervalSeconds
    clock = asyncio.get_running_loop().time
    written: OwnWrite | None = None
    events: list[Event] = []

    while not stopped:
        if written is not None:
            version = body["metadata"].get("resourceVersion")
            left = written.at + CONSISTENCY_TIMEOUT - clock()
            if not _caught_up(version, written.resource_version) and left > 0:
                wake.clear()  # (a set Event would return at once, and never yield)
                await _sleep_until_woken(wake, left)
                continue
            written = None
        wake.clear()  # changes from here on wake the next round
        retry = False
        events.clear()
        try:
            decided_from = builders.decision_basis(body)
            changes = await reconcile(dict(body), ctx, pods.get(uid), events.append, logger)
            if events:
                # Before the status they describe: an operator killed in between would lose
                # them otherwise (the next look sees the stored status, no transition); a
                # look repeated after a restart, from the same stored state, names them the same.
                await ctx.post_events(JobRef(name, namespace, uid), events, decided_from)
            if changes and ctx.kube is not None:
                new_version = await ctx.kube.patch_job_status(namespace, name, changes)
                if new_version is None:
                    return  # the job is gone
                written = OwnWrite(new_version, clock()) if new_version else None
        except ApiError as exc:
            metrics.RECONCILE_ERRORS.labels(kind="api").inc()
            logger.warning("will look again in %.0fs: %s", interval, exc)
            retry = True
        if written is not None:
            continue
        status = body.get("status") or {}
        timeout = interval if retry else ctx.next_look_in(uid, status, interval, now_utc())
        if await _sleep_until_woken(wake, timeout):
            await asyncio.sleep(SETTLE)


async def _sleep_until_woken(wake: asyncio.Event, timeout: float | None) -> bool:
    """Wait for the wake-up or the timeout (None: no timeout); True when woken."""
    try:
        async with asyncio.timeout(timeout):
            await wake.wait()
        return True
    except TimeoutError:
        return False


@dataclass
class Follower:
    """One job's daemon as the ticker sees it: kopf's live body, and the version last seen."""

    body: Any
    wake: asyncio.Event
    seen_version: str | None


class Followers:
    """The daemons' wake-ups. The pod watch wakes a job's daemon when its pods change; one
    ticker wakes it when its job changed, by comparing resourceVersions in kopf's live
    bodies: a thousand dictionary reads a tick, instead of a thousand daemons each waking
    up to poll (kopf has no per-object change notification for daemons)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Follower] = {}

    def add(self, uid: str, body: Any) -> asyncio.Event:
        follower = Follower(body, asyncio.Event(), body["metadata"].get("resourceVersion"))
        self._jobs[uid] = follower
        return follower.wake

    def remove(self, uid: str, wake: asyncio.Event) -> None:
        if uid in self._jobs and self._jobs[uid].wake is wake:
            del self._jobs[uid]

    def wake(self, uid: str) -> None:
        follower = self._jobs.get(uid)
        if follower is not None:
            follower.wake.set()

    def tick(self) -> None:
        for follower in self._jobs.values():
            version = follower.body["metadata"].get("resourceVersion")
            if version != follower.seen_version:
                follower.seen_version = version
                follower.wake.set()

    async def run(self, every: float = TICK) -> None:
        while True:
            await asyncio.sleep(every)
            self.tick()


def _caught_up(live: str | None, written: str) -> bool:
    """Whether the watched job already includes our write. resourceVersions are opaque,
    but etcd's are increasing integers; anything else counts only when equal."""
    if live == written:
        return True
    if live and live.isdigit() and written.isdigit():
        return int(live) >= int(written)
    return False
