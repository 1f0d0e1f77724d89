"""Prometheus metrics, and the HTTP endpoint serving them with the readiness probe.

Jobs by phase are a gauge kept from the last phase each job was seen in (so it is correct
after an operator restart: every job is reconciled again at start).
"""

from __future__ import annotations

import threading
from collections import Counter as _Tally
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app

JOBS = Gauge("kubetrain_trainingjobs", "TrainingJobs by phase.", ["phase"])
RECONCILE_SECONDS = Histogram(
    "kubetrain_reconcile_seconds",
    "Time of one reconciliation of one TrainingJob (API calls included).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILE_ERRORS = Counter(
    "kubetrain_reconcile_errors_total", "Reconciliations that raised.", ["kind"]
)
API_ERRORS = Counter(
    "kubetrain_kube_api_errors_total",
    "Kubernetes API answers that were errors or retried (429, 5xx, connection).",
    ["method", "code"],
)
THROTTLED = Counter(
    "kubetrain_kube_api_throttled_total",
    "429 Too Many Requests from the API server (API Priority and Fairness, max-inflight), "
    "by method; each is retried after its Retry-After or a backoff.",
    ["method"],
)
RAY_ERRORS = Counter(
    "kubetrain_ray_api_errors_total", "Failed calls to a Ray dashboard's job API.", ["op"]
)
POD_WATCH_RESTARTS = Counter(
    "kubetrain_pod_watch_restarts_total", "Times the operator's pod watch failed and reconnected."
)
TRANSITIONS = Counter(
    "kubetrain_phase_transitions_total", "Phase transitions, by new phase.", ["phase"]
)

_lock = threading.Lock()
_phases: dict[str, str] = {}
_tally: _Tally[str] = _Tally()


def observe_phase(uid: str, phase: str | None) -> None:
    """Record a job's phase (None when the job is gone) and move the gauge: only the two
    phases concerned change, so a look costs the same with ten jobs or ten thousand."""
    with _lock:
        old = _phases.pop(uid, None) if phase is None else _phases.get(uid)
        if old == phase:
            return
        if phase is not None:
            _phases[uid] = phase
            _tally[phase] += 1
            JOBS.labels(phase=phase).set(_tally[phase])
        if old is not None:
            _tally[old] -= 1
            JOBS.labels(phase=old).set(_tally[old])


API_READY = Gauge(
    "kubetrain_kube_api_ready",
    "1 while the API server's /readyz (etcd included) answers 200, polled every few seconds.",
)
API_UNREADY = Counter(
    "kubetrain_kube_api_unready_total", "Polls of the API server's /readyz that were not 200."
)
API_READY.set(1)

#: ``(ready, text)`` for the operator's /readyz; the API server's health (``apihealth``).
Readiness = Callable[[], tuple[bool, str]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the operator's log."""


def _app(readiness: Readiness) -> Callable[..., Iterable[bytes]]:
    prometheus = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/readyz":
            return prometheus(environ, start_response)
        ready, text = readiness()
        start_response(
            "200 OK" if ready else "503 Service Unavailable", [("Content-Type", "text/plain")]
        )
        return [text.encode() + b"\n"]

    return app


def serve(port: int, readiness: Readiness) -> None:
    """Serve /metrics and /readyz on the port (0 disables); liveness is kopf's endpoint."""
    if port:
        server = make_server("", port, _app(readiness), _Server, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
