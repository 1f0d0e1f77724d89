#!/usr/bin/env python3
"""The issue's reference point, measured beside the operator: a minimal kopf operator.

One ``@kopf.on.create`` handler creates the same children as the operator (same builders,
same two creation round trips, same undecoding client) and sets ``status.phase`` and
``status.rayClusterName`` through kopf's own status patch. It has no follower, no pod
watch, no Events and no finalizer: what is left of the operator's cost beyond this is the
price of gang start, fail-fast, deadlines and the rest of the lifecycle.

kopf is tuned as the machine notes' minimal operator was (status-only bookkeeping, posting
off, uvloop, quiet logs, only one client library) plus the operator's own generic tuning
(garbage-collector thresholds, lean status storages), so the comparison isolates logic,
not settings. Started by ``operator_scale.py --sides kopf``; not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from kubetrain_operator.__main__ import hide_unused_clients, new_loop, tune_gc  # noqa: E402

hide_unused_clients()  # before kopf is imported, as in the operator

import kopf  # noqa: E402
from reference_children import create_children  # noqa: E402

from kubetrain.api.v1alpha1 import GROUP, PLURAL, VERSION  # noqa: E402
from kubetrain_operator.config import OperatorConfig, load_config  # noqa: E402
from kubetrain_operator.kube import KubeApi  # noqa: E402
from kubetrain_operator.lifecycle import (  # noqa: E402
    LeanStatusDiffBaseStorage,
    LeanStatusProgressStorage,
)
from kubetrain_operator.naming import JobRef  # noqa: E402


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    clients: dict[str, KubeApi] = {}

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = LeanStatusProgressStorage(
            field="status.kopf.progress", touch_field="status.kopf.dummy"
        )
        settings.persistence.diffbase_storage = LeanStatusDiffBaseStorage(
            field="status.kopf.last-handled-configuration"
        )
        settings.posting.enabled = False
        settings.posting.loggers = False
        settings.scanning.disabled = True

    @kopf.on.login(registry=registry)
    async def login(settings: kopf.OperatorSettings, **kwargs: Any) -> Any:
        info = kopf.login_with_kubeconfig(settings=settings, **kwargs)
        clients["api"] = KubeApi.from_connection_info(info, timeout=120)  # as the floor's
        return info

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    async def provision(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        api = clients["api"]
        meta = body["metadata"]
        job = JobRef(meta["name"], meta["namespace"], meta["uid"])
        await create_children(api, job, body["spec"], config)
        patch.status["phase"] = "Pending"
        patch.status["rayClusterName"] = job.cluster

    return registry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--namespace", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tune_gc()
    kopf.run(
        loop=new_loop(),
        registry=build_registry(load_config(args.config)),
        clusterwide=False,
        namespaces=[args.namespace],
        standalone=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
