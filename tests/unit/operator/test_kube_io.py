"""The Kubernetes API layer's outcomes against a local fake API server: 409 and 404 are
normal answers, 429 and 5xx are retried (honouring Retry-After), other errors raise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fake_api import start_fake_api

from kubetrain_operator.kube import ApiError, KubeApi
from kubetrain_operator.metrics import JOBS, observe_phase

pytestmark = pytest.mark.unit

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}


def serve(answers: list[tuple[Any, ...]], scenario: Callable[[KubeApi], Any]) -> Any:
    """Run ``scenario`` against a server that gives ``answers`` in order: (status, headers)
    or (status, headers, body)."""
    seen: list[tuple[str, str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append((request.method, request.path, body))
        status, headers, *body = answers.pop(0)
        payload = body[0] if body else {"message": f"HTTP {status}"}
        return web.json_response(payload, status=status, headers=headers)

    async def main() -> Any:
        runner, base = await start_fake_api(handler)
        delays: list[float] = []

        async def no_sleep(delay: float) -> None:
            delays.append(delay)

        async with aiohttp.ClientSession() as session:
            api = KubeApi(base, session, sleep=no_sleep)
            try:
                return await scenario(api), seen, delays
            finally:
                await runner.cleanup()

    return asyncio.run(main())


@pytest.mark.parametrize(("status", "outcome"), [(201, "created"), (409, "exists")])
def test_create_treats_already_exists_as_done(status, outcome):
    result, seen, _ = serve([(status, {})], lambda api: api.create(POD))
    assert result == outcome
    assert seen == [("POST", "/api/v1/namespaces/ns/pods", POD)]


def test_throttling_is_retried_after_the_servers_delay():
    answers = [(429, {"Retry-After": "3"}), (503, {}), (201, {})]
    result, seen, delays = serve(answers, lambda api: api.create(POD))
    assert result == "created" and len(seen) == 3
    assert 3.0 <= delays[0] <= 3.2 and len(delays) == 2  # Retry-After, plus jitter


def test_other_errors_raise_with_the_servers_message():
    with pytest.raises(ApiError, match="HTTP 422"):
        serve([(422, {})], lambda api: api.create(POD))


@pytest.mark.parametrize(("status", "deleted"), [(200, True), (404, False)])
def test_delete_treats_not_found_as_done(status, deleted):
    result, seen, _ = serve([(status, {})], lambda api: api.delete("v1", "Pod", "ns", "p"))
    assert result is deleted
    assert seen[0][:2] == ("DELETE", "/api/v1/namespaces/ns/pods/p")
    assert seen[0][2] == {"propagationPolicy": "Background"}


def test_status_patch_targets_the_subresource_and_returns_the_new_version():
    written = {"metadata": {"name": "j", "resourceVersion": "42"}, "spec": {}, "status": {}}
    patch = lambda api: api.patch_job_status("ns", "j", {"a": 1})  # noqa: E731
    result, seen, _ = serve([(200, {}, written)], patch)
    assert result == "42"
    assert serve([(200, {}, {"kind": "odd"})], patch)[0] == ""  # no version: no wait for it
    assert serve([(404, {})], patch)[0] is None  # the job is gone
    assert seen == [
        ("PATCH", "/apis/kubetrain.io/v1alpha1/namespaces/ns/trainingjobs/j/status",
         {"status": {"a": 1}}),
    ]  # fmt: skip


def test_jobs_by_phase_gauge():
    def gauge(phase: str) -> float:
        return JOBS.labels(phase=phase)._value.get()

    base_running, base_failed = gauge("Running"), gauge("Failed")
    observe_phase("uid-a", "Running")
    observe_phase("uid-b", "Running")
    observe_phase("uid-b", "Running")  # the same phase again counts once
    assert gauge("Running") == base_running + 2
    observe_phase("uid-b", "Failed")
    assert (gauge("Running"), gauge("Failed")) == (base_running + 1, base_failed + 1)
    observe_phase("uid-a", None)
    observe_phase("uid-b", None)
    observe_phase("uid-c", None)  # never seen: nothing to take away
    assert (gauge("Running"), gauge("Failed")) == (base_running, base_failed)


@pytest.mark.parametrize(
    ("live", "written", "caught_up"),
    [("12", "12", True), ("13", "12", True), ("11", "12", False), (None, "12", False),
     ("abc", "abd", False), ("abd", "abd", True)],
)  # fmt: skip
def test_a_daemon_waits_for_its_own_status_write(live, written, caught_up):
    from kubetrain_operator.lifecycle import _caught_up

    assert _caught_up(live, written) is caught_up


@pytest.mark.parametrize(
    ("mode", "in_cluster", "base"),
    [
        ("auto", False, "https://api:6443/api/v1/namespaces/ns/services/j-abcde-head:8265/proxy"),
        ("proxy", True, "https://api:6443/api/v1/namespaces/ns/services/j-abcde-head:8265/proxy"),
        ("auto", True, "http://j-abcde-head.ns.svc:8265"),
        ("service", False, "http://j-abcde-head.ns.svc:8265"),
    ],
)
def test_ray_is_reached_through_the_service_or_the_api_servers_proxy(mode, in_cluster, base):
    from kubetrain_operator.config import OperatorConfig
    from kubetrain_operator.naming import JobRef
    from kubetrain_operator.reconcile import Context

    async def scenario() -> str:
        async with aiohttp.ClientSession() as session:
            config = OperatorConfig.model_validate({"ray": {"mode": mode}})
            ctx = Context(config, kube=KubeApi("https://api:6443", session), in_cluster=in_cluster)
            client = ctx.ray_client(JobRef("j", "ns", "abcde-1"))
            await ctx.close()
            return client.base

    assert asyncio.run(scenario()) == base
