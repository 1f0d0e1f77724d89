"""The operator's Ray Jobs REST client against a real local Ray head: submit, follow to a
terminal state, stop, idempotent resubmission, and the status the operator computes.

The head runs in its own process group and temp dir, on free ports, with Ray's token auth
off; it is stopped by its process group id (never ``ray stop``, which would kill every
Ray on the machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import pytest

from kubetrain.api.v1alpha1 import TrainingJobSpec, TrainingJobStatus
from kubetrain_operator import builders
from kubetrain_operator.naming import JobRef
from kubetrain_operator.observe import Observed, RayJobState, parse_final_report
from kubetrain_operator.rayjobs import JobInfo, RayJobsClient, RayJobsError
from kubetrain_operator.status import decide

pytestmark = pytest.mark.runtime

RAY = Path(sys.executable).with_name("ray")
JOB = JobRef("iris", "default", "0b7d2c94-5a6e-4c59-9d4e-6f0d3a1b2c3d")


def free_port(taken: set[int] | None = None, avoid: range = range(0)) -> int:
    """A port free now, not in ``taken`` (updated) and outside ``avoid`` (the worker range)."""
    taken = set() if taken is None else taken
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken and port not in avoid:
            taken.add(port)
            return port


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-CPU Ray head; yields its dashboard URL."""
    if not RAY.exists():
        pytest.skip("ray is not installed")
    try:
        import aiohttp_cors  # noqa: F401  (the dashboard, which serves the job API)
    except ImportError:
        pytest.skip("Ray's dashboard needs ray[default]: the job API is served by it")
    temp = tmp_path_factory.mktemp("ray")
    # Workers get a range of their own; every named port is picked outside it, or a worker
    # can take the port that a Ray component is about to bind.
    base = free_port()
    workers = range(base, base + 201)
    taken: set[int] = set()
    dash = free_port(taken, workers)
    ports = {
        "--port": free_port(taken, workers),
        "--dashboard-port": dash,
        "--dashboard-agent-listen-port": free_port(taken, workers),
        "--dashboard-agent-grpc-port": free_port(taken, workers),
        "--runtime-env-agent-port": free_port(taken, workers),
        "--metrics-export-port": free_port(taken, workers),
        "--node-manager-port": free_port(taken, workers),
        "--object-manager-port": free_port(taken, workers),
    }
    cmd = [
        str(RAY), "start", "--head", "--block", "--disable-usage-stats", "--num-cpus=1",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
        f"--min-worker-port={base}", f"--max-worker-port={base + 200}",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    log = (temp / "start.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{dash}"
    try:
        _wait_for_dashboard(url, proc, temp)
        yield url
    finally:
        _stop(proc, temp)
        log.close()


def _wait_for_dashboard(url: str, proc: subprocess.Popen[bytes], temp: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited: {(temp / 'start.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail("the Ray dashboard did not come up within 120 s")


def _stop(proc: subprocess.Popen[bytes], temp: Path) -> None:
    """SIGTERM our process group, then SIGKILL what is left of it and of any process that
    uses our temp dir (Ray workers may leave the group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=5)
            break
        except subprocess.TimeoutExpired:
            continue
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmdline = (pid_dir / "cmdline").read_bytes()
        except OSError:
            continue
        if str(temp).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_dir.name), signal.SIGKILL)


def run(coro_fn, url: str, *args):
    async def main():
        async with aiohttp.ClientSession() as session:
            return await coro_fn(RayJobsClient(url, session, timeout=30), *args)

    return asyncio.run(main())


async def wait_status(client: RayJobsClient, sid: str, wanted: set[str], timeout=180) -> JobInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = await client.get(sid)
        if info is not None and info.status in wanted:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"{sid} is {info and info.status}, wanted {wanted}")
        await asyncio.sleep(0.5)


def python(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def observed(phase_status: dict, ray: RayJobState) -> Observed:
    spec = TrainingJobSpec.model_validate(
        {"data": {"source": {"builtin": {"name": "iris"}}}, "model": {"type": "mlp"}}
    )
    return Observed(
        job=JOB,
        generation=1,
        status=TrainingJobStatus.model_validate(phase_status),
        now=datetime.now(timezone.utc),
        spec=spec,
        expected_pods=(),
        ray=ray,
    )


def test_a_job_followed_to_success_gives_a_succeeded_status_with_final_metrics(dashboard):
    events = [
        {"dataStats": {"rowsRead": 150, "trainRows": 120}},
        {"metrics": {"val_loss": 0.31, "val_accuracy": 0.93}, "keyMetric": "val_accuracy"},
        {"artifacts": {"modelUri": "/out/model.pt"}},
    ]
    code = "\n".join(f"print('KUBETRAIN_EVENT ' + {json.dumps(json.dumps(e))})" for e in events)
    sid = JOB.submission_id(1)

    async def scenario(client: RayJobsClient):
        assert await client.submit(python(code), sid) is True
        info = await wait_status(client, sid, {"SUCCEEDED", "FAILED"})
        return info, await client.logs(sid)

    info, logs = run(scenario, dashboard)
    assert info.status == "SUCCEEDED", logs
    ray = RayJobState(info.status, info.message, parse_final_report(logs))
    running = {
        "phase": "Running",
        "attempts": 1,
        "submissionId": sid,
        "startTime": "2026-01-01T00:00:00Z",
    }
    plan = decide(observed(running, ray))
    assert (plan.status.phase, plan.status.reason) == ("Succeeded", "Succeeded")
    assert plan.status.metrics == {"val_loss": 0.31, "val_accuracy": 0.93}
    assert plan.status.keyMetric == "val_accuracy"
    assert plan.status.artifacts.modelUri == "/out/model.pt"
    assert plan.status.dataStats.rowsRead == 150


def test_a_running_job_can_be_stopped(dashboard):
    sid = JOB.submission_id(2)

    async def scenario(client: RayJobsClient):
        await client.submit(python("import time; time.sleep(600)"), sid)
        await wait_status(client, sid, {"RUNNING"})
        assert await client.stop(sid) is True
        return await wait_status(client, sid, {"STOPPED", "FAILED", "SUCCEEDED"}, timeout=60)

    info = run(scenario, dashboard)
    assert info.status == "STOPPED"
    running = {"phase": "Running", "attempts": 1, "submissionId": sid}
    plan = decide(observed(running, RayJobState(info.status, info.message)))
    assert plan.status.reason == "RayJobStopped"


def test_resubmitting_the_same_submission_id_does_not_run_twice(dashboard, tmp_path):
    marker = tmp_path / "runs.txt"
    code = f"open({str(marker)!r}, 'a').write('ran\\n')"
    sid = JOB.submission_id(3)

    async def scenario(client: RayJobsClient):
        first = await client.submit(python(code), sid)
        again = await client.submit(python(code), sid)  # an operator restarted mid-submit
        info = await wait_status(client, sid, {"SUCCEEDED", "FAILED"})
        late = await client.submit(python(code), sid)  # and after it finished
        return first, again, late, info

    first, again, late, info = run(scenario, dashboard)
    assert (first, again, late) == (True, False, False)
    assert info.status == "SUCCEEDED"
    assert marker.read_text() == "ran\n"


def test_unknown_jobs_and_unreachable_dashboards(dashboard):
    async def unknown(client: RayJobsClient):
        return await client.get("kubetrain-nope-1"), await client.stop("kubetrain-nope-1")

    assert run(unknown, dashboard) == (None, False)
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RayJobsError, match="cannot reach"):
        run(lambda c: c.get("x"), closed)


def test_the_runtime_entrypoint_trains_a_tiny_job(dashboard, tmp_path):
    """The operator's real entrypoint command, with a one-epoch iris MLP."""
    spec_file = tmp_path / "trainingjob.yaml"
    spec = TrainingJobSpec.model_validate(
        {
            "data": {"source": {"builtin": {"name": "iris"}}, "label": "target"},
            "model": {"type": "mlp", "mlp": {"hiddenUnits": [16]}},
            "training": {"epochs": 1, "batchSize": 32, "workers": 1,
                         "resourcesPerWorker": {"cpu": "500m", "memory": "1Gi"}},
            "output": {"uri": str(tmp_path / "out"), "plots": False},
        }
    )  # fmt: skip
    from kubetrain_operator.config import OperatorConfig

    doc = builders.runtime_spec_document(JOB, spec, OperatorConfig())
    import yaml

    spec_file.write_text(yaml.safe_dump(doc))
    command = builders.entrypoint(
        OperatorConfig(specMountPath=str(tmp_path), runtimeReporter="log")
    )
    command = command.replace("python ", f"{shlex.quote(sys.executable)} ", 1)
    sid = JOB.submission_id(4)

    async def scenario(client: RayJobsClient):
        await client.submit(command, sid)
        info = await wait_status(client, sid, {"SUCCEEDED", "FAILED"}, timeout=600)
        return info, await client.logs(sid)

    info, logs = run(scenario, dashboard)
    assert info.status == "SUCCEEDED", logs[-3000:]
    report = parse_final_report(logs)
    running = {"phase": "Running", "attempts": 1, "submissionId": sid}
    plan = decide(observed(running, RayJobState(info.status, info.message, report)))
    assert plan.status.phase == "Succeeded"
    assert report is not None and report.metrics, "the runtime reports final metrics in its logs"
