"""Prometheus metrics and the HTTP endpoint serving them next to a liveness probe.

Jobs by phase are a gauge kept from the last phase each job was seen in (so it is correct
after an operator restart: every job is reconciled again at start).
"""

from __future__ import annotations

import threading
from collections import Counter as _Tally

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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


def serve(port: int) -> None:
    """Serve /metrics on the port (0 disables); liveness is kopf's own endpoint."""
    if port:
        start_http_server(port)
