"""The runtime's ServiceAccount (made by the operator for each job) may patch its own job's
status and nothing else; the status reporter's fields survive the operator's next looks."""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from operator_fixtures import Jobs, job_body, jobs, phase_is, running_operator, wait_for

from kubetrain.api.v1alpha1 import Artifacts, Progress, TrainingJob
from kubetrain_runtime.status_reporter import StatusPatcher, StatusReporter

pytestmark = pytest.mark.cluster
__all__ = ["jobs"]


def ca_file(kubeconfig: Path, tmp_path: Path) -> str:
    import base64

    cluster = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        return cluster["certificate-authority"]
    path = tmp_path / "ca.crt"
    path.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    return str(path)


def test_the_runtime_may_patch_only_its_own_jobs_status(
    jobs: Jobs, kube_api: k8s.ApiClient, kubeconfig_path: Path, tmp_path: Path
):
    server = yaml.safe_load(kubeconfig_path.read_text())["clusters"][0]["cluster"]["server"]
    with running_operator(jobs.ns, kubeconfig_path):
        mine = jobs.create(job_body("mine"))
        jobs.create(job_body("other"))
        wait_for(phase_is(jobs, "mine", "Provisioning", reason="ClusterReady"), what="ready")
        wait_for(phase_is(jobs, "other", "Provisioning", reason="ClusterReady"), what="ready")
        account = f"mine-{mine['metadata']['uid'][:5]}-runtime"
        token = (
            k8s.CoreV1Api(kube_api)
            .create_namespaced_service_account_token(
                account, jobs.ns, {"spec": {"expirationSeconds": 600}}
            )
            .status.token
        )
        ca = ca_file(kubeconfig_path, tmp_path)

        def patcher(name: str) -> StatusPatcher:
            return StatusPatcher(server, jobs.ns, name, token, ca)

        job = TrainingJob.model_validate({**mine, "status": None})
        reporter = StatusReporter(job, patcher=patcher("mine"), min_interval=0)
        reporter.epoch(Progress(stage="training", epoch=1, totalEpochs=1, percent=100),
                       {"val_accuracy": 0.9})  # fmt: skip
        reporter.finished(True, {"val_accuracy": 0.91}, Artifacts(modelUri="/o/m.pt"), "ok")
        assert reporter.pending == {}, "every patch went through"

        def reported() -> dict[str, Any] | None:
            st = jobs.status("mine")
            return st if st.get("metrics", {}).get("val_accuracy") == 0.91 else None

        status = wait_for(reported, what="the reporter's metrics in status")
        assert status["keyMetric"] == "val_accuracy=0.91"
        assert status["artifacts"]["modelUri"] == "/o/m.pt"
        # The operator's next write (here: suspending) keeps what the runtime wrote.
        jobs.patch_spec("mine", {"runPolicy": {"suspend": True}})
        suspended = wait_for(phase_is(jobs, "mine", "Suspended"), what="Suspended")
        assert suspended["metrics"] == {"val_accuracy": 0.91}
        assert suspended["artifacts"]["modelUri"] == "/o/m.pt"

        with pytest.raises(urllib.error.HTTPError) as denied:
            patcher("other").patch({"metrics": {"stolen": 1.0}})
        assert denied.value.code == 403
        assert "stolen" not in jobs.status("other").get("metrics", {})
        # Nor may it touch the spec (only the status subresource is granted).
        spec_patch = StatusPatcher(server, jobs.ns, "mine", token, ca)
        spec_patch.url = spec_patch.url.removesuffix("/status")
        with pytest.raises(urllib.error.HTTPError) as denied:
            spec_patch.patch({"phase": "Succeeded"})
        assert denied.value.code == 403
