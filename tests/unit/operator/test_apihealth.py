"""The API server's health: each poll moves the gauge, and the operator's /readyz says it."""

from __future__ import annotations

import io
from typing import Any

import pytest

from kubetrain_operator import metrics
from kubetrain_operator.apihealth import ApiHealth

pytestmark = pytest.mark.unit


def _get(app: Any, path: str) -> tuple[str, bytes]:
    seen: list[str] = []
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO(b"")}
    body = b"".join(app(environ, lambda status, headers: seen.append(status)))
    return seen[0], body


def test_an_outage_is_reported_until_the_api_server_is_ready_again():
    health = ApiHealth()
    app = metrics._app(health.describe)
    failures = metrics.API_UNREADY._value.get()
    health.observe(False, "HTTP 500 [-]etcd failed")
    status, body = _get(app, "/readyz")
    assert status.startswith("503") and b"etcd failed" in body
    assert metrics.API_READY._value.get() == 0
    assert metrics.API_UNREADY._value.get() == failures + 1
    health.observe(True, "HTTP 200 ok")
    assert _get(app, "/readyz")[0].startswith("200")
    assert metrics.API_READY._value.get() == 1


def test_the_metrics_are_served_beside_the_probe():
    status, body = _get(metrics._app(ApiHealth().describe), "/metrics")
    assert status.startswith("200") and b"kubetrain_kube_api_ready" in body
