"""What the operator and the runtime agree on, in one place both import: the log lines the
runtime's ``log`` reporter writes and the operator folds into the final status, the
environment the operator gives the Ray pods, where outputs go when the spec says nowhere,
and which ``status`` fields each side writes.

A change here changes both sides at once; ``tests/unit/test_contract.py`` runs the runtime's
writer into the operator's reader for every event kind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Literal, get_args

# ------------------------------------------------------------------ the head's Service

#: The port of the head's Service that serves Ray's dashboard and jobs API, by name: the
#: operator submits through it, ``kubetrain logs`` reads through the API server's proxy.
DASHBOARD_PORT_NAME = "dashboard"


def head_service_name(cluster: str) -> str:
    """The head's Service, from the cluster's name (``status.rayClusterName``)."""
    return f"{cluster}-head"


# ------------------------------------------------------------------ log events

#: Every event line starts with this (after whatever Ray prefixes to a driver's line).
EVENT_PREFIX = "KUBETRAIN_EVENT "
EventKind = Literal["stage", "step", "note", "data_ready", "epoch", "checkpoint", "finished"]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)


def event_line(kind: EventKind, job: str | None, **payload: Any) -> str:
    """One event as the line the runtime prints: the prefix and a JSON object with the
    kind (``event``), the time, the job's name and the payload."""
    body = {"event": kind, "time": round(time.time(), 3), "job": job, **payload}
    return EVENT_PREFIX + json.dumps(body, default=str) + "\n"


def parse_event(line: str) -> dict[str, Any] | None:
    """The event in one log line, or None when the line holds none (or a broken one)."""
    at = line.find(EVENT_PREFIX)
    if at < 0:
        return None
    try:
        event = json.loads(line[at + len(EVENT_PREFIX) :])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


# ------------------------------------------------------------ pod environment

#: The job's namespace, in every Ray pod: where the status reporter patches its job.
ENV_JOB_NAMESPACE = "KUBETRAIN_JOB_NAMESPACE"
#: Root of the default output location (``<root>/<job name>``), for the runtime only.
ENV_OUTPUT_ROOT = "KUBETRAIN_OUTPUT_ROOT"

#: The metric only the runtime's final report carries (the run's wall time): the operator
#: knows by it that the driver is about to exit.
FINAL_METRIC = "wall_seconds"

# ------------------------------------------------------------------ outputs

#: Where the operator mounts a job's shared volume in every Ray pod.
OUTPUT_MOUNT = "/output"
#: Where the operator mounts a job's data claim (``spec.data.volumeClaim``), read-only.
DATA_MOUNT = "/data"


def within_mount(path: str, mount: str) -> bool:
    """Whether ``path`` is the mount point itself or a path under it."""
    return path == mount or path.startswith(mount + "/")


#: The default output folder of a run outside a cluster, relative to where it runs.
LOCAL_OUTPUT_ROOT = "runs"


def cluster_output_uri(namespace: str, cluster: str) -> str:
    """A job's outputs on its shared volume when its spec names no location (per Ray
    cluster, so a recreated job never mixes its outputs with an old one's)."""
    return f"{OUTPUT_MOUNT}/{namespace}/{cluster}"


def default_output_uri(
    name: str, spec_uri: str | None, override: str | None = None, root: str | None = None
) -> str:
    """The runtime's output location: ``--output``, else ``spec.output.uri``, else
    ``<root>/<name>`` (root: ``$KUBETRAIN_OUTPUT_ROOT`` as the caller read it, else
    ``runs``)."""
    if override or spec_uri:
        return str(override or spec_uri)
    return f"{(root or LOCAL_OUTPUT_ROOT).rstrip('/')}/{name}"


# --------------------------------------------------------------- status owners

#: The status fields the runtime writes while it runs (``StatusReporter``), with the
#: job's own ServiceAccount. The operator writes every other field, and fills these from
#: the ``finished`` event when the runtime could not (a reporter without API access); it
#: adds ``artifacts.logConfigMap`` when it saves the driver log.
RUNTIME_STATUS_FIELDS = ("progress", "metrics", "keyMetric", "dataStats", "artifacts")
#: The status fields only the operator writes (``status.kopf`` is kopf's own).
OPERATOR_STATUS_FIELDS = (
    "phase", "reason", "message", "conditions", "observedGeneration", "startTime",
    "completionTime", "attempts", "failedAttempts", "attemptHistory", "rayClusterName",
    "dashboardURL", "submissionId",
)  # fmt: skip


def runtime_fields_only(patch: Mapping[str, Any]) -> bool:
    """Whether a status patch touches only what the runtime owns."""
    return set(patch) <= set(RUNTIME_STATUS_FIELDS)
