"""A small async client of Ray's Job Submission REST API (the dashboard's ``/api/jobs/``).

The operator never imports ``ray``: it needs four calls, and Ray's own SDK is hundreds of
megabytes and pins its own aiohttp. The base URL is either the head Service (operator in
the cluster) or the API server's service proxy (operator outside), with the same session
that carries the proxy's credentials.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from . import metrics

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


class RayJobsError(Exception):
    """The dashboard could not be reached or answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class JobInfo:
    submission_id: str
    status: str  # PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED
    message: str
    start_time_ms: int | None
    end_time_ms: int | None
    #: The driver's exit code, once it ended (Ray's ``driver_exit_code``).
    exit_code: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class RayJobsClient:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        token: str | None = None,
        timeout: float = 10,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.session = session
        # X-Ray-Authorization passes through the API server's proxy, which would consume
        # a plain Authorization header for itself.
        self.headers = {"X-Ray-Authorization": f"Bearer {token}"} if token else {}
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _call(self, op: str, method: str, path: str, body: Any = None) -> tuple[int, str]:
        try:
            async with self.session.request(
                method,
                f"{self.base}{path}",
                json=body,
                headers=self.headers,
                timeout=self.timeout,
            ) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            metrics.RAY_ERRORS.labels(op=op).inc()
            where = f"the Ray dashboard at {self.base}"
            raise RayJobsError(f"{op}: cannot reach {where}: {exc!r}") from exc

    def _fail(self, op: str, status: int, text: str) -> RayJobsError:
        metrics.RAY_ERRORS.labels(op=op).inc()
        return RayJobsError(f"{op}: HTTP {status}: {text.strip()[:500]}", status)

    async def submit(self, entrypoint: str, submission_id: str, **extra: Any) -> bool:
        """Submit under a fixed id; False when a job with that id exists already (a retry
        after an operator restart), which is the idempotent outcome, not an error."""
        body = {"entrypoint": entrypoint, "submission_id": submission_id, **extra}
        status, text = await self._call("submit", "POST", "/api/jobs/", body)
        if status == 200:
            return True
        # Ray answers a duplicate id with 400, or 500 when its job agent refused it; in
        # either case, a job under our id means the submission happened before.
        if "already exists" in text or await self.get(submission_id) is not None:
            return False
        raise self._fail("submit", status, text)

    async def get(self, submission_id: str) -> JobInfo | None:
        """The job's state, None when Ray does not know it (e.g. the head restarted)."""
        status, text = await self._call("get", "GET", f"/api/jobs/{submission_id}")
        if status == 404:
            return None
        if status != 200:
            raise self._fail("get", status, text)
        data = json.loads(text)
        return JobInfo(
            submission_id=data.get("submission_id") or submission_id,
            status=data.get("status", "PENDING"),
            message=data.get("message") or "",
            start_time_ms=data.get("start_time"),
            end_time_ms=data.get("end_time"),
            exit_code=data.get("driver_exit_code"),
        )

    async def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop the job; False when it was not running or is unknown."""
        status, text = await self._call("stop", "POST", f"/api/jobs/{submission_id}/stop")
        if status == 404:
            return False
        if status != 200:
            raise self._fail("stop", status, text)
        return bool(json.loads(text).get("stopped"))

    async def logs(self, submission_id: str) -> str:
        """The driver's whole log so far."""
        status, text = await self._call("logs", "GET", f"/api/jobs/{submission_id}/logs")
        if status == 404:
            return ""
        if status != 200:
            raise self._fail("logs", status, text)
        return str(json.loads(text).get("logs", ""))
