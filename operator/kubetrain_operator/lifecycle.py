"""What the kopf handlers delegate to: operator settings at startup, login, cleanup, and the
per-job follow step that turns a reconciliation into kopf's patch and Events."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf

from . import metrics
from .config import OperatorConfig
from .kube import ApiError, KubeApi
from .naming import LABEL_MANAGED_BY, MANAGED_BY
from .reconcile import Context, reconcile
from .status import Event, PodState

FINALIZER = "kubetrain.io/finalizer"
PEERING_DEFAULT = "kubetrain"


class LeanStatusDiffBaseStorage(kopf.StatusDiffBaseStorage):
    """kopf's status-stored diff base, with the same essence, built without deep-copying
    the whole object first: kopf builds one for every watch event of every watched kind
    (pods too), and status is most of a pod's bytes. Measured ~8% of the operator's CPU."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        if extra_fields:
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata") or {}
        slim = {k: v for k, v in body.items() if k not in ("status", "metadata")}
        slim["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
        return super().build(body=slim)


class LeanStatusProgressStorage(kopf.StatusProgressStorage):
    """kopf's status-stored progress, minus a deep copy per watch event: kopf only clears
    essences it has just built or decoded (fresh objects), so clearing in place is safe."""

    def clear(self, *, essence: Any) -> Any:
        status = essence.get("status") or {}
        kopf_stanza = status.get("kopf") or {}
        kopf_stanza.pop("progress", None)
        if "kopf" in status and not kopf_stanza:
            del status["kopf"]
        self.remove_empty_stanzas(essence)
        return essence


def configure(settings: kopf.OperatorSettings, memo: Any, config: OperatorConfig) -> None:
    """kopf settings tuned for many jobs (see BENCHMARKS.md, Operator)."""
    settings.persistence.finalizer = FINALIZER
    # kopf's bookkeeping stays in status (status.kopf is preserved by the CRD schema): no
    # annotation PATCHes on the main resource, no extra watch events.
    settings.persistence.progress_storage = LeanStatusProgressStorage(
        field="status.kopf.progress", touch_field="status.kopf.dummy"
    )
    settings.persistence.diffbase_storage = LeanStatusDiffBaseStorage(
        field="status.kopf.last-handled-configuration"
    )
    # Only our own pods come down the index's watch stream, not every pod in the namespace.
    settings.watching.label_selectors["v1", "pods"] = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    # Explicit watch timeouts: a silently dead watch connection otherwise goes unnoticed.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    settings.networking.enforce_retry_after = True
    # One replica (Deployment strategy Recreate); peering only when the admin names it.
    settings.peering.standalone = config.peeringName is None
    settings.peering.name = config.peeringName or PEERING_DEFAULT
    settings.peering.clusterwide = not config.namespaces
    # Events are posted explicitly for transitions; log lines are never posted.
    settings.posting.loggers = False
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "kubetrain-operator"
    # Resources are discovered once at start: no cluster-wide CRD/namespace watch, so the
    # same RBAC rules work as a ClusterRole and as per-namespace Roles.
    settings.scanning.disabled = True
    memo.ctx = Context(config)
    metrics.serve(config.metricsPort)


async def login(memo: Any, settings: kopf.OperatorSettings, **kwargs: Any) -> Any:
    """In-cluster service account first, else the kubeconfig; our API client reuses the
    same credentials, so kopf and kubetrain always act as the same identity."""
    info = kopf.login_with_service_account(settings=settings, **kwargs)
    info = info or kopf.login_with_kubeconfig(settings=settings, **kwargs)
    if info is None:
        raise kopf.LoginError("no in-cluster service account and no kubeconfig found")
    ctx: Context = memo.ctx
    old, ctx.kube = ctx.kube, KubeApi.from_connection_info(info)
    if old is not None:
        await old.close()
    return info


async def cleanup(memo: Any) -> None:
    ctx: Context | None = getattr(memo, "ctx", None)
    if ctx is not None:
        await ctx.close()


async def follow(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: Any,
    pods: Any,
    logger: Any,
) -> None:
    """One look at one job. API errors become kopf retries; a job found invalid becomes
    a PermanentError here, at the edge, after its Failed status is in the patch."""
    ctx: Context = memo.ctx
    uid = body["metadata"]["uid"]
    store: Iterable[PodState] = pods.get(uid, ()) if pods is not None else ()

    def post(event: Event) -> None:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)

    try:
        changes = await reconcile(dict(body), ctx, list(store), post, logger)
    except ApiError as exc:
        metrics.RECONCILE_ERRORS.labels(kind="api").inc()
        raise kopf.TemporaryError(str(exc), delay=ctx.config.followIntervalSeconds) from exc
    for key, value in changes.items():
        patch.status[key] = value
    if changes.get("reason") == "ValidationFailed":
        raise kopf.PermanentError(changes.get("message") or "invalid TrainingJob")
