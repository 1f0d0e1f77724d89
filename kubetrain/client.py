"""TrainingJobs in a cluster, from Python: what ``kubetrain submit/get/watch/...`` do, for
scripts and notebooks. It uses the kubeconfig and context that kubectl would (``KUBECONFIG``,
``~/.kube/config``, or the pod's service account inside a cluster).

Every failure a user can cause or fix (no kubeconfig, the CRD not installed, RBAC, no such
job) is a :class:`ClusterError` whose message is one line with the cause; the CLI prints
it as it is. Needs the ``kubernetes`` package (``pip install 'kubetrain[cluster]'``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetrain.api.contract import DASHBOARD_PORT_NAME, head_service_name
from kubetrain.api.v1alpha1 import (
    DRIVER_LOG_KEY,
    GROUP,
    PLURAL,
    TERMINAL_PHASES,
    VERSION,
    TrainingJob,
    TrainingJobStatus,
)
from kubetrain.errors import UserError

FIELD_MANAGER = "kubetrain"


class ClusterError(UserError):
    """The cluster refused or could not answer; the message says why, in one line."""

    exit_code = 1


@dataclass(frozen=True)
class Submitted:
    name: str
    namespace: str
    outcome: str  # created | configured | unchanged


def _kubernetes() -> Any:
    try:
        import kubernetes
    except ImportError:
        raise ClusterError(
            "the cluster commands need the kubernetes client: pip install 'kubetrain[cluster]'"
        ) from None
    return kubernetes


class Client:
    """One namespace of one cluster, as the kubeconfig's context says (or as given)."""

    def __init__(
        self,
        *,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        namespace: str | None = None,
    ) -> None:
        k8s = _kubernetes()
        self._api = _api_client(k8s, kubeconfig, context)
        self.namespace = namespace or _context_namespace(k8s, kubeconfig, context)
        self._custom = k8s.client.CustomObjectsApi(self._api)
        self._core = k8s.client.CoreV1Api(self._api)
        self._exception = k8s.client.ApiException

    # ------------------------------------------------------------------ jobs

    def submit(self, job: TrainingJob | Mapping[str, Any]) -> Submitted:
        """Create the job, or update what the API lets change (server-side apply: fields
        this client set before are updated, others' fields are left alone)."""
        body = _manifest(job)
        name = body["metadata"]["name"]
        before = self._get_or_none(name)
        applied = self._apply(name, body)
        if before is None:
            outcome = "created"
        elif before["metadata"]["resourceVersion"] == applied["metadata"]["resourceVersion"]:
            outcome = "unchanged"
        else:
            outcome = "configured"
        return Submitted(name, self.namespace, outcome)

    def get(self, name: str) -> dict[str, Any]:
        """The job as stored (``metadata``, ``spec``, ``status``)."""
        found = self._get_or_none(name)
        if found is None:
            raise ClusterError(f"trainingjob {name!r} not found in namespace {self.namespace!r}")
        return found

    def list(self) -> list[dict[str, Any]]:
        listed = self._call(
            "list trainingjobs",
            self._custom.list_namespaced_custom_object,
            GROUP, VERSION, self.namespace, PLURAL,
        )  # fmt: skip
        return sorted(listed.get("items", []), key=lambda job: job["metadata"]["name"])

    def status(self, name: str) -> TrainingJobStatus:
        return TrainingJobStatus.model_validate(self.get(name).get("status") or {})

    def suspend(self, name: str) -> None:
        self._patch_spec(name, {"runPolicy": {"suspend": True}}, "suspend")

    def resume(self, name: str) -> None:
        self._patch_spec(name, {"runPolicy": {"suspend": False}}, "resume")

    def delete(self, name: str) -> None:
        self._call(
            f"delete trainingjob {name!r}",
            self._custom.delete_namespaced_custom_object,
            GROUP, VERSION, self.namespace, PLURAL, name,
        )  # fmt: skip

    def watch(self, name: str, *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """The job now and at each change (every stored version, from the API's watch),
        until a terminal phase."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(name)
        yield job
        version = job["metadata"]["resourceVersion"]
        while (job.get("status") or {}).get("phase") not in TERMINAL_PHASES:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise ClusterError(f"trainingjob {name!r} did not finish within {timeout:g} s")
            for kind, job in self._changes(name, version, left):
                if kind == "DELETED":
                    raise ClusterError(f"trainingjob {name!r} was deleted")
                version = job["metadata"]["resourceVersion"]
                yield job
                if (job.get("status") or {}).get("phase") in TERMINAL_PHASES:
                    return

    def _changes(
        self, name: str, version: str, left: float | None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """One watch request (at most a minute); an expired version restarts from now."""
        stream = _kubernetes().watch.Watch().stream(
            self._custom.list_namespaced_custom_object,
            GROUP, VERSION, self.namespace, PLURAL,
            field_selector=f"metadata.name={name}", resource_version=version,
            timeout_seconds=max(1, int(min(left or 60, 60))),
        )  # fmt: skip
        try:
            for event in stream:
                if event["type"] == "ERROR":  # 410 Gone: the version is too old
                    yield "MODIFIED", self.get(name)
                    return
                yield event["type"], event["object"]
        except self._exception as exc:
            if exc.status == 410:
                yield "MODIFIED", self.get(name)
                return
            raise self._error(f"watch trainingjob {name!r}", exc) from None

    def wait(
        self,
        name: str,
        *,
        timeout: float | None = None,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> TrainingJobStatus:
        """Block until the job is Succeeded or Failed; its final status."""
        last: dict[str, Any] = {}
        for job in self.watch(name, timeout=timeout):
            last = job
            if on_change is not None:
                on_change(job)
        return TrainingJobStatus.model_validate(last.get("status") or {})

    def events(self, name: str) -> list[dict[str, Any]]:
        """The job's Events, oldest first (what ``kubectl describe`` lists)."""
        selector = f"involvedObject.kind=TrainingJob,involvedObject.name={name}"
        listed = self._call(
            "list events",
            self._core.list_namespaced_event,
            self.namespace,
            field_selector=selector,
        )
        events = [self._api.sanitize_for_serialization(e) for e in listed.items]
        return sorted(events, key=_event_time)

    # ------------------------------------------------------------------ logs

    def logs(self, name: str) -> tuple[str, str]:
        """(the driver's log, where it came from): the running Ray job's, else the copy the
        operator saved when it deleted the cluster."""
        job = self.get(name)
        status = job.get("status") or {}
        live = self._live_log(status)
        if live is not None:
            return live, f"Ray job {status.get('submissionId')}"
        saved = self._saved_log(status)
        if saved is not None:
            return saved
        where = ((status.get("artifacts") or {}).get("logUri")) or "the job's output location"
        raise ClusterError(
            f"no driver log for trainingjob {name!r}: its Ray cluster is gone and no saved "
            f"copy is in the cluster (the runtime writes one to {where})"
        )

    def follow_logs(self, name: str, *, poll: float = 2.0) -> Iterator[str]:
        """The driver's log as it grows, until the job ends."""
        sent = 0
        while True:
            text, _ = self.logs(name)
            if len(text) > sent:
                yield text[sent:]
                sent = len(text)
            phase = ((self.get(name).get("status") or {}).get("phase")) or ""
            if phase in TERMINAL_PHASES or phase == "Suspended":
                return
            time.sleep(poll)

    def _live_log(self, status: Mapping[str, Any]) -> str | None:
        cluster, submission = status.get("rayClusterName"), status.get("submissionId")
        if not cluster or not submission:
            return None
        path = (
            f"/api/v1/namespaces/{self.namespace}/services/"
            f"http:{head_service_name(cluster)}:{DASHBOARD_PORT_NAME}"
            f"/proxy/api/jobs/{submission}/logs"
        )
        text = self._raw_get(path)
        if text is None:
            return None  # the cluster is gone or not up: fall back to the saved log
        try:
            return str(json.loads(text).get("logs", ""))
        except ValueError:
            return None

    def _saved_log(self, status: Mapping[str, Any]) -> tuple[str, str] | None:
        artifacts = status.get("artifacts") or {}
        config_map = artifacts.get("logConfigMap")
        if not config_map:
            return None
        try:
            found = self._core.read_namespaced_config_map(config_map, self.namespace)
        except self._exception as exc:
            if exc.status == 404:
                return None
            raise self._error(f"read configmap {config_map!r}", exc) from None
        text = (found.data or {}).get(DRIVER_LOG_KEY, "")
        return text, f"saved copy (configmap {config_map}; full log: {artifacts.get('logUri')})"

    # ------------------------------------------------------------------ plumbing

    def _raw_get(self, path: str) -> str | None:
        """The body of a GET through the API server (its service proxy), None unless 200."""
        try:
            response = self._api.call_api(
                *self._api.param_serialize("GET", path, auth_settings=["BearerToken"]),
                _request_timeout=10,
            )
            response.read()
        except (self._exception, OSError):
            return None
        if response.status != 200:
            return None
        return response.data.decode(errors="replace")

    def _get_or_none(self, name: str) -> dict[str, Any] | None:
        try:
            return self._custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except self._exception as exc:
            if exc.status == 404 and not self._crd_missing(exc):
                return None
            raise self._error(f"get trainingjob {name!r}", exc) from None
        except OSError as exc:
            raise self._unreachable(exc) from None

    def _apply(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply, waiting out a CRD installed moments ago: the API server serves
        it (Established) before server-side apply knows its schema, and until then answers
        that the kind is not found (for 3.5 s right after ``helm install`` here), where
        kubectl's client-side apply goes through. Like kubectl after a discovery miss, try
        again, for at most SCHEMA_SETTLE_SECONDS."""
        deadline = time.monotonic() + SCHEMA_SETTLE_SECONDS
        pause = 0.1
        while True:
            try:
                return self._custom.patch_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name, body,
                    field_manager=FIELD_MANAGER, _content_type="application/apply-patch+yaml",
                )  # fmt: skip
            except self._exception as exc:
                if not schema_not_ready(exc.body) or time.monotonic() + pause > deadline:
                    raise self._error(f"apply trainingjob {name!r}", exc) from None
            except OSError as exc:
                raise self._unreachable(exc) from None
            time.sleep(pause)
            pause = min(2 * pause, 1.0)

    def _patch_spec(self, name: str, spec: dict[str, Any], what: str) -> None:
        self.get(name)  # "not found" before a patch's less clear answer
        self._call(
            f"{what} trainingjob {name!r}",
            self._custom.patch_namespaced_custom_object,
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec},
            _content_type="application/merge-patch+json",
        )  # fmt: skip

    def _call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except self._exception as exc:
            raise self._error(what, exc) from None
        except OSError as exc:
            raise self._unreachable(exc) from None

    def _crd_missing(self, exc: Any) -> bool:
        """A 404 for the resource type itself, not for one object."""
        try:
            body = json.loads(exc.body or "{}")
        except ValueError:
            return True
        details = body.get("details") or {}
        return body.get("reason") == "NotFound" and not details.get("name")

    def _error(self, what: str, exc: Any) -> ClusterError:
        if exc.status == 404 and self._crd_missing(exc):
            return ClusterError(
                f"the TrainingJob CRD is not installed in this cluster ({PLURAL}.{GROUP}/"
                f"{VERSION} is not served); install kubetrain: helm install kubetrain "
                "charts/kubetrain, or kubectl apply --server-side -f crds/"
            )
        try:
            message = json.loads(exc.body or "{}").get("message") or exc.reason
        except ValueError:
            message = exc.reason
        if exc.status == 403:
            return ClusterError(f"{what}: forbidden by RBAC: {message}")
        if exc.status == 401:
            return ClusterError(f"{what}: the cluster did not accept your credentials: {message}")
        return ClusterError(f"{what}: {message}")

    def _unreachable(self, exc: OSError) -> ClusterError:
        return ClusterError(f"cannot reach the cluster at {self._api.configuration.host}: {exc}")


#: The longest a submit waits for a just-installed CRD's schema (server-side apply).
SCHEMA_SETTLE_SECONDS = 20.0


def schema_not_ready(body: str | None) -> bool:
    """Whether an API error is the one server-side apply gives while a CRD created moments
    ago is served but its schema is not yet known ("Resource kind ... not found. There can
    be a delay ..."): not a missing CRD, not a missing object, not a refusal."""
    try:
        message = str(json.loads(body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        return False
    delay = "There can be a delay between when CustomResourceDefinitions are created"
    return delay in message or (message.startswith("Resource kind") and "not found" in message)


def _manifest(job: TrainingJob | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(job, TrainingJob):
        return job.model_dump(mode="json", exclude_none=True, exclude={"status"})
    body = {key: value for key, value in job.items() if key != "status"}
    return json.loads(json.dumps(body))


def _event_time(event: Mapping[str, Any]) -> str:
    return str(
        event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or ""
    )


def _api_client(k8s: Any, kubeconfig: Any, context: str | None) -> Any:
    path = kubeconfig or os.environ.get("KUBECONFIG")
    default = Path.home() / ".kube" / "config"
    if path is None and not default.exists():
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s.config.load_incluster_config()
            return k8s.client.ApiClient()
        raise ClusterError(
            "no kubeconfig: set KUBECONFIG or --kubeconfig, or create ~/.kube/config "
            "(kubectl config view shows what kubectl uses)"
        )
    files = str(path) if path else str(default)
    missing = [f for f in files.split(os.pathsep) if f and not Path(f).exists()]
    if missing and len(missing) == len(files.split(os.pathsep)):
        raise ClusterError(f"no kubeconfig at {files}")
    try:
        return k8s.config.new_client_from_config(config_file=files, context=context)
    except k8s.config.ConfigException as exc:
        raise ClusterError(f"kubeconfig {files}: {exc}") from None


def _context_namespace(k8s: Any, kubeconfig: Any, context: str | None) -> str:
    path = kubeconfig or os.environ.get("KUBECONFIG")
    try:
        contexts, current = k8s.config.list_kube_config_contexts(
            config_file=str(path) if path else None
        )
    except (k8s.config.ConfigException, OSError, TypeError):
        return "default"  # in a pod: its service account's namespace would be better
    chosen = next((c for c in contexts if c["name"] == context), None) if context else current
    return ((chosen or {}).get("context") or {}).get("namespace") or "default"
