"""The operator's view of its pods: one list+watch stream, reduced to :class:`PodState`.

Why not a kopf index: kopf runs every watch event of every pod through its full handler
machinery (diff base, progress storage, handler invocation), and decodes it with the
standard ``json`` module. A job's three pods bring a dozen events on the way to Ready, and
at a thousand jobs that was the largest share of the operator's CPU (BENCHMARKS.md). Here each
event is decoded by msgspec into :data:`WatchEvent`, which names only the fields that
:func:`~.observe.summarize_pod` reads: managed fields, container specs and the rest are skipped
without being built. Then a small frozen summary; a job's follower is woken only when its
summary actually changed.

The store is trustworthy only after the first complete list (``synced``): a follower that
looked earlier would take existing pods for missing and create them again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

import aiohttp
import msgspec

from . import metrics
from .kube import KubeApi
from .naming import LABEL_JOB_UID
from .observe import PodState, summarize_pod

log = logging.getLogger(__name__)

#: Server-side watch timeout; the stream is reopened from the last resourceVersion after it.
WATCH_SECONDS = 300
LIST_PAGE = 500
BACKOFFS = (0.5, 1, 2, 5, 10, 30)


# What the pod watch decodes of each event: the fields summarize_pod and the store read,
# nothing else. Keys a TypedDict does not name are skipped by the decoder; total=False
# because the API omits empty fields, and None because it may also send them as null.


class _Meta(TypedDict, total=False):
    name: str | None
    namespace: str | None
    resourceVersion: str | None
    creationTimestamp: str | None
    deletionTimestamp: str | None
    labels: dict[str, str] | None
    annotations: dict[str, str] | None


class _Spec(TypedDict, total=False):
    nodeName: str | None
    schedulingGates: list[dict[str, str]] | None


class _Condition(TypedDict, total=False):
    type: str | None
    status: str | None
    reason: str | None
    message: str | None


class _Waiting(TypedDict, total=False):
    reason: str | None
    message: str | None


class _Terminated(TypedDict, total=False):
    exitCode: int | None
    reason: str | None


class _ContainerState(TypedDict, total=False):
    waiting: _Waiting | None
    terminated: _Terminated | None


class _ContainerStatus(TypedDict, total=False):
    name: str | None
    state: _ContainerState | None


class _PodStatus(TypedDict, total=False):
    phase: str | None
    reason: str | None
    message: str | None
    conditions: list[_Condition] | None
    containerStatuses: list[_ContainerStatus] | None
    initContainerStatuses: list[_ContainerStatus] | None


class _WatchObject(TypedDict, total=False):
    """A pod; or, in an ERROR event, a Status (``status`` is then a string)."""

    metadata: _Meta | None
    spec: _Spec | None
    status: _PodStatus | str | None
    code: int | None
    message: str | None


class WatchEvent(TypedDict, total=False):
    type: str | None
    object: _WatchObject | None


_typed_decoder = msgspec.json.Decoder(WatchEvent)


def decode_event(line: bytes) -> Any:
    """One watch event, decoded only as far as :data:`WatchEvent` names; an event of
    another shape (a field of an unexpected type) is decoded in full instead, never lost."""
    try:
        return _typed_decoder.decode(line)
    except msgspec.ValidationError:
        return msgspec.json.decode(line)


class Expired(Exception):
    """The watch's resourceVersion is too old (HTTP 410 Gone): list again."""


@dataclass
class PodStore:
    """Pods by job uid, and who to tell when a job's pods change. Pure: no I/O."""

    by_job: dict[str, dict[str, PodState]] = field(default_factory=dict)
    namespace_of: dict[str, str] = field(default_factory=dict)
    on_change: Callable[[str], None] = lambda uid: None

    def get(self, uid: str) -> tuple[PodState, ...]:
        return tuple(self.by_job.get(uid, {}).values())

    def apply(self, kind: str, pod: Mapping[str, Any]) -> bool:
        """Apply one watch event (ADDED, MODIFIED, DELETED); True when a job's view changed."""
        meta = pod.get("metadata") or {}
        uid = (meta.get("labels") or {}).get(LABEL_JOB_UID)
        name = meta.get("name")
        if not uid or not name:
            return False
        pods = self.by_job.get(uid)
        if kind == "DELETED":
            if pods is None or pods.pop(name, None) is None:
                return False
            if not pods:
                del self.by_job[uid]
                self.namespace_of.pop(uid, None)
        else:
            state = summarize_pod(pod)  # type: ignore[arg-type]
            if pods is None:
                pods = self.by_job[uid] = {}
                self.namespace_of[uid] = meta.get("namespace", "")
            elif pods.get(name) == state:
                return False  # a change that does not matter to any decision
            pods[name] = state
        self.on_change(uid)
        return True

    def replace(self, listed: Iterable[Mapping[str, Any]], namespace: str | None = None) -> None:
        """Take a complete listing (of one namespace, or of all) as the new truth, and tell
        every job whose view changed: events missed while disconnected are not lost."""
        stale = [u for u, ns in self.namespace_of.items() if namespace in (None, ns)]
        old = {uid: self.by_job.pop(uid) for uid in stale}
        for uid in stale:
            del self.namespace_of[uid]
        notify, self.on_change = self.on_change, lambda uid: None
        try:
            for pod in listed:
                self.apply("ADDED", pod)
        finally:
            self.on_change = notify
        fresh = [u for u, ns in self.namespace_of.items() if namespace in (None, ns)]
        for uid in old.keys() | set(fresh):
            if old.get(uid) != self.by_job.get(uid):
                notify(uid)


async def json_lines(
    chunks: AsyncIterator[bytes], decode: Callable[[bytes], Any] = msgspec.json.decode
) -> AsyncIterator[Any]:
    """Decode a newline-delimited JSON stream of any line length (aiohttp's own readline
    refuses lines over 64 KiB, and a pod with a large environment can exceed that). Each
    chunk is searched once: a long line arriving in many chunks costs linear time."""
    line = bytearray()
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            line += chunk[start:end]
            if line.strip():
                yield decode(line)
            line.clear()
            start = end + 1
        line += chunk[start:]
    if line.strip():
        yield decode(line)


class PodWatch:
    """List+watch of the operator's pods (by label), cluster-wide or per namespace, kept in
    a :class:`PodStore`; reconnects from the last resourceVersion and lists again on 410."""

    def __init__(
        self,
        api: Callable[[], KubeApi | None],
        selector: str,
        namespaces: Iterable[str] = (),
        store: PodStore | None = None,
    ) -> None:
        self.api = api
        self.selector = selector
        self.namespaces = tuple(namespaces) or (None,)
        self.store = store or PodStore()
        self._synced = {ns: False for ns in self.namespaces}
        self.synced = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(ns), name=f"kubetrain-pods-{ns or 'all'}")
                for ns in self.namespaces
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def _path(self, namespace: str | None) -> str:
        return f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"

    async def _run(self, namespace: str | None) -> None:
        """Forever: list, then watch until the stream ends or expires. Errors are logged and
        retried with backoff; the operator must never silently stop seeing its pods."""
        failures = 0
        version: str | None = None
        while True:
            api = self.api()
            try:
                if api is None:
                    raise ConnectionError("not logged in yet")
                if version is None:
                    version = await self._list(api, namespace)
                version = await self._watch(api, namespace, version)
                failures = 0
            except Expired:
                version = None  # resume impossible: list again
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.POD_WATCH_RESTARTS.inc()
                delay = BACKOFFS[min(failures, len(BACKOFFS) - 1)]
                failures += 1
                log.warning("pod watch (%s) failed, retrying in %.1fs: %s",
                            namespace or "all namespaces", delay, exc)  # fmt: skip
                await asyncio.sleep(delay)

    async def _list(self, api: KubeApi, namespace: str | None) -> str:
        items: list[Any] = []
        params = {"labelSelector": self.selector, "limit": str(LIST_PAGE)}
        while True:
            status, body = await api.request("GET", self._path(namespace), params=params)
            if status == 410:
                raise Expired()  # a continue token expired mid-listing
            if status != 200:
                raise ConnectionError(f"listing pods: HTTP {status}: {body}")
            items.extend(body.get("items") or ())
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                break
            params = {**params, "continue": token}
        self._replace(namespace, items)
        return str(body["metadata"]["resourceVersion"])

    def _replace(self, namespace: str | None, items: list[Any]) -> None:
        self.store.replace(items, namespace)
        self._synced[namespace] = True
        if all(self._synced.values()):
            self.synced.set()

    async def _watch(self, api: KubeApi, namespace: str | None, version: str) -> str:
        params = {
            "labelSelector": self.selector,
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": version,
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        url = f"{api.server}{self._path(namespace)}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=WATCH_SECONDS + 30)
        async with api.session.get(url, params=params, timeout=timeout) as resp:
            if resp.status == 410:
                raise Expired()
            if resp.status != 200:
                raise ConnectionError(f"watching pods: HTTP {resp.status}: {await resp.text()}")
            async for event in json_lines(resp.content.iter_any(), decode_event):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired()
                    raise ConnectionError(f"watch error: {obj.get('message')}")
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.store.apply(kind, obj)
        return version
