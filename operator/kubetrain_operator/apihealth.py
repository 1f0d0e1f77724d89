"""The API server's health as the operator sees it.

When etcd stalls, the operator's watches simply go quiet and its writes hang: nothing fails,
so nothing would say why jobs stopped moving. The operator therefore polls the API server's
``/readyz`` (whose checks include etcd) and reports the answer in a gauge and on its own
``/readyz``, which the chart uses as the Deployment's readiness probe. Liveness stays with
kopf: an outage of the API server is no reason to restart the operator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from . import metrics
from .kube import KubeApi

log = logging.getLogger(__name__)

#: How often ``/readyz`` is asked; an outage shows within about this long.
POLL_SECONDS = 5.0
#: A stalled etcd makes ``/readyz`` hang rather than fail: a slow answer is an unready one.
ANSWER_SECONDS = 4.0


@dataclass
class ApiHealth:
    """The last answer of the API server's ``/readyz``."""

    ready: bool = True
    reason: str = ""
    since: float = field(default_factory=time.monotonic)

    def observe(self, ready: bool, reason: str = "") -> None:
        """Record one answer; the gauge and the failure count follow, and a change is logged
        once rather than every poll."""
        metrics.API_READY.set(1 if ready else 0)
        if not ready:
            metrics.API_UNREADY.inc()
        if ready != self.ready:
            log.warning("API server %s%s", "ready again" if ready else "not ready: ", reason)
            self.ready, self.since = ready, time.monotonic()
        self.reason = reason

    def describe(self) -> tuple[bool, str]:
        """(ready, text) for the operator's own ``/readyz``."""
        if self.ready:
            return True, "ok"
        return (
            False,
            f"API server not ready for {time.monotonic() - self.since:.0f} s: {self.reason}",
        )


async def ask_readyz(kube: KubeApi) -> tuple[bool, str]:
    """One ``GET /readyz``, without the client's retries: each poll is one sample."""
    timeout = aiohttp.ClientTimeout(total=ANSWER_SECONDS)
    try:
        async with kube.session.get(f"{kube.server}/readyz", timeout=timeout) as resp:
            text = (await resp.text())[:200].strip()
            return resp.status == 200, f"HTTP {resp.status} {text}".strip()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return False, f"no answer within {ANSWER_SECONDS:g} s ({type(exc).__name__})"


async def watch(kube: Callable[[], KubeApi | None], health: ApiHealth) -> None:
    """Poll for as long as the operator runs (a background task started at login)."""
    while True:
        client = kube()
        if client is not None:
            health.observe(*await ask_readyz(client))
        await asyncio.sleep(POLL_SECONDS)
