"""The operator's pod watch against the real API server: it lists what exists before it
says it is synced, then follows creates, status changes and deletes, waking only the job
whose pods changed, and sees nothing of pods that are not the operator's."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client as k8s

from kubetrain_operator.kube import KubeApi
from kubetrain_operator.naming import LABEL_JOB_UID, LABEL_MANAGED_BY, MANAGED_BY
from kubetrain_operator.podwatch import PodStore, PodWatch

SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


def bare_pod(name: str, uid: str | None) -> dict[str, Any]:
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB_UID: uid} if uid else {"app": "other"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        # No node can take it (no such pool): it stays Pending, Unschedulable.
        "spec": {
            "nodeSelector": {"kubetrain.io/pool": "none"},
            "containers": [{"name": "c", "image": "busybox"}],
        },
    }


async def eventually(check: Any, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_pod_watch_lists_then_follows_and_wakes_only_the_changed_job(
    kube_api: k8s.ApiClient, kubeconfig_path: Path, namespace: str
):
    core = k8s.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, bare_pod("early-head", "job-1"))
    core.create_namespaced_pod(namespace, bare_pod("foreign", None))

    async def scenario() -> None:
        os.environ["KUBECONFIG"] = str(kubeconfig_path)
        info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
        api = KubeApi.from_connection_info(info)
        woken: list[str] = []
        watch = PodWatch(lambda: api, SELECTOR, [namespace], PodStore(on_change=woken.append))
        watch.start()
        try:
            await asyncio.wait_for(watch.synced.wait(), 30)
            assert [p.name for p in watch.store.get("job-1")] == ["early-head"]
            assert "foreign" not in {p.name for u in watch.store.by_job for p in watch.store.get(u)}

            woken.clear()
            await asyncio.to_thread(
                core.create_namespaced_pod, namespace, bare_pod("late-head", "job-2")
            )
            await eventually(lambda: watch.store.get("job-2"))
            await eventually(lambda: watch.store.get("job-2")[0].problem is not None)
            assert watch.store.get("job-2")[0].problem[0] == "Unschedulable"  # type: ignore[index]
            assert set(woken) == {"job-2"}, "only the job whose pod changed is woken"

            await asyncio.to_thread(
                core.delete_namespaced_pod, "early-head", namespace, grace_period_seconds=0
            )
            await eventually(lambda: not watch.store.get("job-1"))
            assert "job-1" in woken
        finally:
            await watch.stop()
            await api.close()

    asyncio.run(scenario())
