"""The operator as it is deployed: ``python -m kubetrain_operator`` in its own process, with
its config file, kopf's liveness endpoint and the Prometheus metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from operator_fixtures import Jobs, job_body, jobs, operator_config, phase_is, wait_for

pytestmark = pytest.mark.cluster
__all__ = ["jobs"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except OSError:
        return 0, ""


def test_the_operator_process_serves_liveness_and_metrics(
    jobs: Jobs, kubeconfig_path: Path, tmp_path: Path
):
    live, prom = free_port(), free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(operator_config(metricsPort=prom).model_dump(mode="json")))
    log = (tmp_path / "operator.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubetrain_operator", "--config", str(config), "-n", jobs.ns,
         "--liveness", f"http://127.0.0.1:{live}/healthz"],
        env={**os.environ, "KUBECONFIG": str(kubeconfig_path)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{live}/healthz")[0] == 200, what="liveness")
        jobs.create(job_body("observed"))
        wait_for(phase_is(jobs, "observed", "Provisioning", reason="ClusterReady"), what="ready")

        def scraped() -> str | None:
            text = get(f"http://127.0.0.1:{prom}/metrics")[1]
            return text if 'kubetrain_trainingjobs{phase="Provisioning"} 1.0' in text else None

        text = wait_for(scraped, what="jobs by phase in the metrics")
        assert "kubetrain_reconcile_seconds_count" in text
        assert "kubetrain_kube_api_errors_total" in text or "kubetrain_kube_api_errors" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    assert proc.returncode == 0, (tmp_path / "operator.log").read_text()[-3000:]
