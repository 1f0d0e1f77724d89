"""The ``status`` reporter: live progress, metrics, data statistics and artifact locations
written straight into ``TrainingJob.status`` from the Ray head, with the pod's own
ServiceAccount (the operator gives it a Role that may only get and patch this one job's
status).

Why a direct patch and not only log lines: the operator would have to fetch and parse the
whole driver log on every look to show progress, which costs far more at scale than one
small PATCH per epoch from the job itself. The operator still parses the final
``KUBETRAIN_EVENT`` lines (``log`` reporter) when the job ends, so final metrics reach the
status even if this reporter could not write.

Standard library only (urllib + ssl): nothing to add to the runtime image. The reporter
writes only the fields the runtime owns (progress, metrics, keyMetric, dataStats,
artifacts), never phase or conditions, and coalesces epoch updates to one PATCH per
``min_interval`` seconds so that fast epochs cannot flood the API server.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kubetrain.api.contract import ENV_JOB_NAMESPACE
from kubetrain.api.v1alpha1 import GROUP, PLURAL, VERSION, Artifacts, DataStats, Progress
from kubetrain_runtime.reporting import Reporter, Stage, key_metric

log = logging.getLogger(__name__)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class StatusPatcher:
    """Merge-patches one TrainingJob's status subresource."""

    def __init__(
        self,
        server: str,
        namespace: str,
        name: str,
        token: str | None,
        ca_file: str | None,
        *,
        timeout: float = 10,
    ) -> None:
        self.url = (
            f"{server.rstrip('/')}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/"
            f"{name}/status"
        )
        self.token = token
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=ca_file) if ca_file else None

    @classmethod
    def from_environment(cls, namespace: str | None, name: str) -> StatusPatcher | None:
        """In a pod: the mounted ServiceAccount. Elsewhere ``KUBETRAIN_API_SERVER``,
        ``KUBETRAIN_API_TOKEN`` and ``KUBETRAIN_API_CA`` (tests); None when neither."""
        server = os.environ.get("KUBETRAIN_API_SERVER")
        token = os.environ.get("KUBETRAIN_API_TOKEN")
        ca_file = os.environ.get("KUBETRAIN_API_CA")
        host, port = (
            os.environ.get("KUBERNETES_SERVICE_HOST"),
            os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
        )
        if server is None and host and (SA_DIR / "token").exists():
            server = f"https://{host}:{port}"
            token = (SA_DIR / "token").read_text().strip()
            ca_file = str(SA_DIR / "ca.crt")
        if server is None:
            return None
        namespace = namespace or os.environ.get(ENV_JOB_NAMESPACE)
        if namespace is None and (SA_DIR / "namespace").exists():
            namespace = (SA_DIR / "namespace").read_text().strip()
        if namespace is None:
            return None
        return cls(server, namespace, name, token, ca_file)

    def patch(self, status: dict[str, Any]) -> None:
        body = json.dumps({"status": status}).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="PATCH",
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=self.timeout, context=self.context):
            pass


class StatusReporter(Reporter):
    """Writes the runtime's part of ``TrainingJob.status`` (see the module docstring)."""

    def __init__(
        self,
        job: Any,
        *,
        patcher: StatusPatcher | None = None,
        min_interval: float = 2.0,
        clock: Any = time.monotonic,
    ) -> None:
        meta = job.metadata
        self.task = job.spec.model.effective_task
        self.patcher = patcher or StatusPatcher.from_environment(meta.namespace, meta.name)
        if self.patcher is None:
            log.warning("status reporter: no Kubernetes API here; progress is not reported")
        self.min_interval = min_interval
        self.clock = clock
        self.pending: dict[str, Any] = {}
        self.last_sent = float("-inf")

    # ------------------------------------------------------------------ sending

    def _merge(self, fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(self.pending.get(key), dict):
                self.pending[key] = {**self.pending[key], **value}
            else:
                self.pending[key] = value

    def _send(self, fields: dict[str, Any], *, force: bool) -> None:
        self._merge(fields)
        if self.patcher is None or not self.pending:
            return
        if not force and self.clock() - self.last_sent < self.min_interval:
            return  # coalesced into the next patch
        patch, self.pending = self.pending, {}
        try:
            self.patcher.patch(patch)
            self.last_sent = self.clock()
        except (urllib.error.URLError, OSError) as exc:
            self._merge(patch)  # keep it for the next try; never fail training
            detail = exc.read().decode(errors="replace")[:300] if hasattr(exc, "read") else ""
            log.warning("status reporter: patch failed: %s %s", exc, detail)

    # ---------------------------------------------------------------- reporting

    def stage(self, name: Stage, detail: str = "") -> None:
        self._send({"progress": {"stage": name}}, force=True)

    def data_ready(self, stats: DataStats, report: dict[str, Any]) -> None:
        self._send({"dataStats": stats.model_dump(mode="json", exclude_none=True)}, force=True)

    def epoch(self, progress: Progress, metrics: dict[str, float]) -> None:
        fields: dict[str, Any] = {
            "progress": progress.model_dump(mode="json", exclude_none=True),
            "metrics": dict(metrics),
        }
        headline = key_metric(self.task, metrics)
        if headline:
            fields["keyMetric"] = headline
        self._send(fields, force=False)

    def checkpoint(self, uri: str, epoch: int) -> None:
        self._send({"artifacts": {"latestCheckpoint": uri, "checkpointEpoch": epoch}}, force=False)

    def finished(
        self, succeeded: bool, metrics: dict[str, float], artifacts: Artifacts, message: str
    ) -> None:
        fields: dict[str, Any] = {
            "metrics": dict(metrics),
            "artifacts": artifacts.model_dump(mode="json", exclude_none=True),
            "progress": {"stage": "finishing"},
        }
        headline = key_metric(self.task, metrics)
        if headline:
            fields["keyMetric"] = headline
        self._send(fields, force=True)
