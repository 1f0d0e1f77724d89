"""A small async Kubernetes API client over aiohttp, with the outcomes an operator expects.

Why not the official client: building model objects from every response costs milliseconds
per job at scale, and its async sibling drags in another 50 MB; kopf already gives us the
credentials (:class:`kopf.ConnectionInfo`) and aiohttp. Bodies stay plain dicts.

409 AlreadyExists on create and 404 NotFound on delete are normal outcomes, not errors
(children are created idempotently); 429 and 5xx are retried with backoff, honouring
Retry-After, since a real ServiceAccount is subject to API Priority and Fairness.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import aiohttp
import msgspec
import orjson

from kubetrain.api.v1alpha1 import GROUP, PLURAL, VERSION

from . import metrics

log = logging.getLogger(__name__)

#: Plural resource names of the kinds the operator touches, by (apiVersion, kind).
PLURALS: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "Event"): "events",
    ("rbac.authorization.k8s.io/v1", "Role"): "roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
    (f"{GROUP}/{VERSION}", "TrainingJob"): PLURAL,
    ("scheduling.volcano.sh/v1beta1", "PodGroup"): "podgroups",
}
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    """A response the operator cannot treat as a normal outcome."""

    def __init__(self, status: int, method: str, path: str, body: Any) -> None:
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else str(body)[:300]
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    plural = PLURALS[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}"


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    return f"{collection_path(api_version, kind, namespace)}/{name}"


def job_path(namespace: str, name: str) -> str:
    return object_path(f"{GROUP}/{VERSION}", "TrainingJob", namespace, name)


class KubeApi:
    """One aiohttp session to the API server, authenticated as kopf logged in."""

    def __init__(
        self,
        server: str,
        session: aiohttp.ClientSession,
        *,
        backoffs: tuple[float, ...] = (0.2, 0.5, 1, 2, 4, 8),
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.server = server.rstrip("/")
        self.session = session
        self.backoffs = backoffs
        self._sleep = sleep

    @classmethod
    def from_connection_info(cls, info: Any, *, timeout: float = 30) -> KubeApi:
        """Build from a :class:`kopf.ConnectionInfo` (what ``@kopf.on.login`` returned)."""
        session = aiohttp.ClientSession(
            headers=info.as_http_headers(),
            cookie_jar=aiohttp.DummyCookieJar(),  # the API server sets none: skip the lookups
            connector=aiohttp.TCPConnector(
                ssl=info.as_ssl_context(), limit=64, enable_cleanup_closed=True
            ),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )
        return cls(info.server, session)

    async def close(self) -> None:
        await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        raw: bool = False,
    ) -> tuple[int, Any]:
        """Send one request, retrying throttling and server errors; returns (status,
        parsed body) for every other answer, leaving its meaning to the caller."""
        url = f"{self.server}{path}"
        headers = {"Content-Type": content_type} if body is not None else {}
        data = orjson.dumps(body) if body is not None else None
        attempt = 0
        while True:
            try:
                async with self.session.request(
                    method, url, data=data, params=params, headers=headers
                ) as resp:
                    status = resp.status
                    content = await resp.read()
                    retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                metrics.API_ERRORS.labels(method=method, code="connection").inc()
                if attempt >= len(self.backoffs):
                    raise ApiError(0, method, path, str(exc)) from exc
                log.debug("%s %s: %r, retrying in %.1fs", method, path, exc, self.backoffs[attempt])
                await self._sleep(self.backoffs[attempt])
                attempt += 1
                continue
            if status in RETRIED_STATUSES:
                metrics.API_ERRORS.labels(method=method, code=str(status)).inc()
                if status == 429:
                    metrics.THROTTLED.labels(method=method).inc()
                if attempt < len(self.backoffs):
                    delay = _delay(retry_after, self.backoffs[attempt])
                    log.debug("%s %s: HTTP %s, retrying in %.1fs", method, path, status, delay)
                    await self._sleep(delay)
                    attempt += 1
                    continue
            return status, (content.decode(errors="replace") if raw else _parsed(content))

    # ---------------------------------------------------------------- outcomes

    async def create(self, obj: dict[str, Any]) -> Literal["created", "exists"]:
        """Create; an object of that name that exists already counts as done."""
        meta = obj["metadata"]
        path = collection_path(obj["apiVersion"], obj["kind"], meta["namespace"])
        # The created object comes back in full; nothing here needs it, and decoding it
        # was a measurable share of the operator's CPU at scale.
        status, text = await self.request("POST", path, body=obj, raw=True)
        if status in (200, 201, 202):
            return "created"
        if status == 409:
            return "exists"
        metrics.API_ERRORS.labels(method="POST", code=str(status)).inc()
        raise ApiError(status, "POST", path, _parsed(text))

    async def delete(
        self, api_version: str, kind: str, namespace: str, name: str, *, grace: int | None = None
    ) -> bool:
        """Delete in the background; False when it was already gone."""
        path = object_path(api_version, kind, namespace, name)
        options: dict[str, Any] = {"propagationPolicy": "Background"}
        if grace is not None:
            options["gracePeriodSeconds"] = grace
        status, body = await self.request("DELETE", path, body=options)
        if status in (200, 202):
            return True
        if status == 404:
            return False
        metrics.API_ERRORS.labels(method="DELETE", code=str(status)).inc()
        raise ApiError(status, "DELETE", path, body)

    async def patch_job_status(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> str | None:
        """Merge-patch the status subresource; the job's new resourceVersion ("" when the
        answer has none), or None when the job is gone. Of the whole job that comes back,
        only the version is decoded (a write per transition, at a thousand jobs)."""
        path = f"{job_path(namespace, name)}/status"
        status, text = await self.request(
            "PATCH",
            path,
            body={"status": patch},
            content_type="application/merge-patch+json",
            raw=True,
        )
        if status == 200:
            return _resource_version(text)
        if status == 404:
            return None
        metrics.API_ERRORS.labels(method="PATCH", code=str(status)).inc()
        raise ApiError(status, "PATCH", path, _parsed(text))

    def service_proxy_url(self, namespace: str, service: str, port: int) -> str:
        """Base URL of a Service as reached through the API server's proxy."""
        return f"{self.server}/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy"


class _Meta(msgspec.Struct):
    resourceVersion: str = ""


class _Versioned(msgspec.Struct):
    metadata: _Meta = msgspec.field(default_factory=_Meta)


_decode_versioned = msgspec.json.Decoder(_Versioned).decode


def _resource_version(text: str) -> str:
    try:
        return _decode_versioned(text).metadata.resourceVersion
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ""


def _parsed(content: bytes | str) -> Any:
    """The JSON of a response body; the text itself when it is not JSON."""
    try:
        return orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        return content.decode(errors="replace") if isinstance(content, bytes) else content


def _delay(retry_after: str | None, fallback: float) -> float:
    """At least the server's Retry-After, plus up to `fallback` of jitter: API Priority and
    Fairness answers every rejected request "Retry-After: 1", and requests retried in
    lockstep collide again at each whole second (measured: a 50-job burst through a
    3-seat share took 6 min)."""
    if retry_after:
        try:
            return min(float(retry_after), 30.0) + fallback * random.random()
        except ValueError:
            pass
    return fallback * (0.5 + random.random())
