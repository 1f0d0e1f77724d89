"""GitOps health of TrainingJobs: what Argo CD (the Lua check in
charts/kubetrain/files/argocd-health.lua) and kstatus (Flux, kpt, cli-utils) make of the
statuses the operator really writes, and ``kubectl wait`` on a real API server.

The statuses come from the operator's pure decision code (``status.decide``), driven with the
unit tests' own Observed builders, one for every phase and every reason it can end a look
with; the Go program e2e/tools/healthcheck runs the Lua check in gopher-lua (Argo CD's
interpreter) and kstatus' ``status.Compute`` over them. The mapping asserted is the one
documented in charts/kubetrain/README.md ("GitOps health").
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import typing
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import pytest
from operator_fixtures import job_body

from kubetrain.api.v1alpha1 import API_VERSION, KIND, Phase, TrainingJobSpec, TrainingJobStatus
from kubetrain.errors import EXIT_OUT_OF_MEMORY, SpecError, UserError
from kubetrain_operator.naming import JobRef
from kubetrain_operator.observe import RayJobState
from kubetrain_operator.status import Plan, decide, submission_failed

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[2]
LUA_CHECK = REPO_ROOT / "charts" / "kubetrain" / "files" / "argocd-health.lua"
BUILD_SCRIPT = REPO_ROOT / "e2e" / "build-healthcheck.sh"
UNIT_DIR = REPO_ROOT / "tests" / "unit" / "operator"


def _load(name: str, path: Path) -> ModuleType:
    """A module of the unit tier by path (test folders are no packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: The unit tests' builders of Observed inputs (observe, cluster_pods, running, NOW, ...).
cases = _load("kubetrain_status_cases", UNIT_DIR / "test_status.py")
make_spec: Callable[..., TrainingJobSpec] = _load(
    "kubetrain_operator_specs", UNIT_DIR / "conftest.py"
).make_spec

STALE, NO_STATUS = "stale observedGeneration", "no status"
#: phase (or case) -> (Argo CD health, kstatus status): the README's table, as tested.
HEALTH: dict[str, tuple[str, str]] = {
    "Pending": ("Progressing", "InProgress"),
    "Provisioning": ("Progressing", "InProgress"),
    "Running": ("Progressing", "InProgress"),
    "Retrying": ("Progressing", "InProgress"),
    "Succeeded": ("Healthy", "Current"),
    "Failed": ("Degraded", "Failed"),
    "Suspended": ("Suspended", "Current"),
    STALE: ("Progressing", "InProgress"),
    NO_STATUS: ("Progressing", "Current"),
}
GENERATION = 2  # what cases.observe says the operator saw
README = REPO_ROOT / "charts" / "kubetrain" / "README.md"
README_LABELS = {
    STALE: "stale: `status.observedGeneration` < `metadata.generation`, any phase",
    NO_STATUS: "no status yet",
}


def operator_plans() -> list[tuple[str, str, Plan]]:
    """(phase, reason, plan) for every phase and reason a look can end with."""
    job = JobRef("iris", "team-a", "3f2a9c1e-0000-4000-8000-000000000001")
    spec, no_retries = make_spec(), make_spec(runPolicy__backoffLimit=0)
    observe, pods, now = cases.observe, cases.cluster_pods, cases.NOW
    late = now + timedelta(hours=1)  # past the startup deadline (600 s)
    ready = pods(job, spec)
    waiting = pods(job, spec, ready=False, phase="Pending")
    unschedulable = pods(job, spec, ready=False, phase="Pending", node=None,
                         problem=("Unschedulable", "0/3 nodes are available"))  # fmt: skip
    pulling = pods(job, spec, ready=False, phase="Pending",
                   problem=("ImagePullBackOff", "Back-off pulling image"))  # fmt: skip
    bad_image = pods(job, spec, ready=False, problem=("InvalidImageName", "bad reference"))
    gated = tuple(replace(p, gated=True, node=None, phase="Pending", ready=False) for p in ready)
    head, worker = ready
    lost_worker, lost_head = (head,), (worker,)
    failed_worker = (head, replace(worker, phase="Failed", ready=False))
    evicted = (head, replace(worker, phase="Failed", ready=False, problem=("Evicted", "node lost")))
    provisioning = {"phase": "Provisioning", "startTime": cases.EARLIER}
    submitted = decide(observe(job, spec, provisioning, ready)).status.model_dump()

    def ran(ray: RayJobState | None, pods: tuple[Any, ...] = ready, **kw: Any) -> Plan:
        return decide(observe(job, kw.pop("spec", spec), submitted, pods, ray, **kw))

    retrying = ran(RayJobState("FAILED", "boom")).status.model_dump()
    suspended = decide(observe(job, make_spec(runPolicy__suspend=True), submitted, ready))
    resumed = suspended.status.model_dump()  # with runPolicy.suspend back to false
    oom = RayJobState("FAILED", "a worker ran out of memory", exit_code=EXIT_OUT_OF_MEMORY)
    invalid = RayJobState(
        "FAILED", "data file /d.csv does not exist", exit_code=UserError.exit_code
    )
    deadline = make_spec(runPolicy__activeDeadlineSeconds=30)
    rejected = observe(
        job, None, spec_error=SpecError("unknown pool", field="spec.cluster.nodePool")
    )
    return [
        ("Pending", "Scheduling", decide(observe(job, spec))),
        ("Pending", "Queued", decide(observe(job, spec, provisioning, gated))),
        ("Pending", "Unschedulable", decide(observe(job, spec, provisioning, unschedulable))),
        ("Pending", "Scheduling", decide(observe(job, spec, resumed))),
        ("Provisioning", "Provisioning", decide(observe(job, spec, provisioning, waiting))),
        ("Provisioning", "ImagePullBackOff", decide(observe(job, spec, provisioning, pulling))),
        ("Provisioning", "ClusterReady",
         decide(observe(job, spec, provisioning, ready, submit_enabled=False))),
        ("Provisioning", "SubmissionFailed",
         submission_failed(observe(job, spec, provisioning, ready), "HTTP 500")),
        ("Running", "RayJobSubmitted", decide(observe(job, spec, provisioning, ready))),
        ("Running", "RayJobSubmitted", ran(RayJobState("RUNNING"))),
        ("Running", "RayJobSubmitted", ran(RayJobState("UNREACHABLE", "no dashboard"))),
        ("Retrying", "RayJobFailed", ran(RayJobState("FAILED", "boom"))),
        ("Retrying", "RayJobStopped", ran(RayJobState("STOPPED", "stopped"))),
        ("Retrying", "RayJobLost", ran(RayJobState("NOT_FOUND", "no such job"))),
        ("Retrying", "OOMKilled", ran(oom)),
        ("Retrying", "WorkerPodLost", ran(RayJobState("RUNNING"), lost_worker)),
        ("Retrying", "HeadPodLost", ran(RayJobState("UNREACHABLE"), lost_head)),
        ("Retrying", "WorkerPodFailed", ran(RayJobState("RUNNING"), failed_worker)),
        ("Retrying", "Evicted", ran(RayJobState("RUNNING"), evicted)),
        ("Retrying", "RayJobFailed", decide(observe(job, spec, retrying, waiting))),  # rebuilding
        ("Retrying", "SubmissionFailed",
         submission_failed(observe(job, spec, retrying, ready), "HTTP 500")),
        ("Succeeded", "Succeeded", ran(RayJobState("SUCCEEDED"))),
        ("Failed", "ValidationFailed", decide(rejected)),
        ("Failed", "DeadlineExceeded", ran(RayJobState("RUNNING"), spec=deadline, now=late)),
        ("Failed", "StartupDeadlineExceeded",
         decide(observe(job, spec, provisioning, waiting, now=late))),
        ("Failed", "ImagePullBackOff", decide(observe(job, spec, provisioning, pulling, now=late))),
        ("Failed", "Unschedulable",
         decide(observe(job, spec, provisioning, unschedulable, now=late))),
        ("Failed", "InvalidImageName", decide(observe(job, spec, provisioning, bad_image))),
        ("Failed", "InvalidInput", ran(invalid)),
        ("Failed", "RayJobFailed", ran(RayJobState("FAILED", "boom"), spec=no_retries)),
        ("Failed", "OOMKilled", ran(oom, spec=no_retries)),
        ("Failed", "HeadPodLost", ran(RayJobState("UNREACHABLE"), lost_head, spec=no_retries)),
        ("Suspended", "Suspended", suspended),
    ]  # fmt: skip


def trainingjob(name: str, status: TrainingJobStatus | None, generation: int) -> dict[str, Any]:
    """A TrainingJob as the API server returns it, with ``status``."""
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": "team-a", "generation": generation},
        "spec": make_spec().model_dump(mode="json", exclude_none=True),
    }
    if status is not None:
        body["status"] = status.model_dump(mode="json", exclude_none=True)
    return body


class Case(NamedTuple):
    row: str  # of HEALTH
    status: TrainingJobStatus | None
    generation: int  # metadata.generation
    reason: str | None = None  # the reason decide was driven to


def health_cases() -> dict[str, Case]:
    """Every plan's status, and stale and missing ones, by object name."""
    found: dict[str, Case] = {}
    for index, (phase, reason, plan) in enumerate(operator_plans()):
        found[f"{index:02d}-{phase}-{reason}"] = Case(phase, plan.status, GENERATION, reason)
        if phase in ("Running", "Succeeded", "Suspended") and f"stale-{phase}" not in found:
            # The spec was edited after this status was written (not looked at yet).
            found[f"stale-{phase}"] = Case(STALE, plan.status, GENERATION + 1)
    found["no-status"] = Case(NO_STATUS, None, 1)
    return found


CASES = health_cases()


def _healthcheck_binary() -> Path:
    """The Go program, built once per version of its sources (cached under the kubetrain cache)."""
    built = subprocess.run(
        [str(BUILD_SCRIPT), "--check"], check=False, capture_output=True, text=True
    )
    if built.returncode != 0:
        if shutil.which("go") is None:
            pytest.skip("Go is not on PATH: cannot build e2e/tools/healthcheck (needs Go >= 1.26)")
        built = subprocess.run(
            [str(BUILD_SCRIPT)], check=False, capture_output=True, text=True, timeout=900
        )
        assert built.returncode == 0, f"e2e/build-healthcheck.sh failed:\n{built.stderr}"
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def healthcheck() -> Callable[[list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """``healthcheck(objects)`` -> {name: {"argocd": {...}, "kstatus": {...}}}."""
    binary = _healthcheck_binary()

    def run(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        proc = subprocess.run(
            [str(binary), "-script", str(LUA_CHECK)],
            input=json.dumps(objects),
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, f"healthcheck failed ({proc.returncode}):\n{proc.stderr}"
        results = [json.loads(line) for line in proc.stdout.splitlines()]
        return {r["name"]: r for r in results}

    return run


@pytest.fixture(scope="module")
def verdicts(healthcheck: Callable[..., dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Every case through the Go program, in one run."""
    objects = [trainingjob(name, case.status, case.generation) for name, case in CASES.items()]
    return healthcheck(objects)


def test_every_phase_is_covered() -> None:
    phases = {case.row for case in CASES.values()}
    assert phases == set(HEALTH), "a case for every row of the table"
    assert set(typing.get_args(Phase)) <= phases, "a row for every phase of the API"


def test_the_readme_shows_the_tested_table() -> None:
    text = README.read_text()
    for row, (argocd, kstatus) in HEALTH.items():
        assert f"| {README_LABELS.get(row, f'`{row}`')} | {argocd} | {kstatus} |" in text, row


@pytest.mark.parametrize("name", list(CASES))
def test_argocd_and_kstatus_read_the_operators_status(
    name: str, verdicts: dict[str, dict[str, Any]]
) -> None:
    row, status, _, reason = CASES[name]
    if reason is not None:  # the case is what it says
        assert status is not None and (status.phase, status.reason) == (row, reason)
    argocd, kstatus = verdicts[name]["argocd"], verdicts[name]["kstatus"]
    assert (argocd["status"], kstatus["status"]) == HEALTH[row]
    if row == NO_STATUS:
        assert argocd["message"] == "Waiting for the operator to report a status"
        return
    assert status is not None
    if row == STALE:
        assert (
            argocd["message"] == f"Waiting for the operator to observe generation {GENERATION + 1}"
        )
        assert f"latest observed generation is {GENERATION}" in kstatus["message"]
        return
    assert argocd["message"] == ": ".join(x for x in (status.reason, status.message) if x)
    if kstatus["status"] != "Current":  # Reconciling or Stalled: the phase's message
        assert kstatus["message"] == status.message


# ------------------------------------------------------------------ kubectl wait


@pytest.fixture
def playable(
    kubectl: Callable[..., subprocess.CompletedProcess[str]], namespace: str, trainingjob_crd: Any
) -> Iterator[Callable[[dict[str, Any] | None], dict[str, Any]]]:
    """A TrainingJob on the real API server, no operator: ``play(patch)`` merge-patches its
    status subresource, as the operator and the runtime's reporter do, and returns the job."""
    name = "waited"
    body = job_body(name)
    kubectl("create", "-n", namespace, "-f", "-", stdin=json.dumps(body))

    def play(patch: dict[str, Any] | None) -> dict[str, Any]:
        if patch:
            kubectl("patch", f"trainingjob/{name}", "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": patch}))  # fmt: skip
        return json.loads(kubectl("get", f"trainingjob/{name}", "-n", namespace, "-o=json").stdout)

    yield play


def _waits(kubectl: Callable[..., Any], namespace: str, timeout: str) -> dict[str, int]:
    """Exit status of each ``kubectl wait`` a user (or a pipeline) would run."""
    conditions = {
        "condition=Succeeded": "--for=condition=Succeeded",
        "phase=Succeeded": "--for=jsonpath={.status.phase}=Succeeded",
        "condition=Reconciling=False": "--for=condition=Reconciling=False",
    }
    return {
        what: kubectl("wait", "-n", namespace, flag, "trainingjob/waited", f"--timeout={timeout}",
                      check=False).returncode
        for what, flag in conditions.items()
    }  # fmt: skip


def test_kubectl_wait_for_a_job_that_succeeds(
    playable: Callable[[dict[str, Any] | None], dict[str, Any]],
    kubectl: Callable[..., Any],
    namespace: str,
    healthcheck: Callable[[list[dict[str, Any]]], dict[str, dict[str, Any]]],
) -> None:
    stored = playable(None)
    job = JobRef(stored["metadata"]["name"], namespace, stored["metadata"]["uid"])
    spec = TrainingJobSpec.model_validate(stored["spec"])
    generation = stored["metadata"]["generation"]
    pods = cases.cluster_pods(job, spec)

    def look(status: TrainingJobStatus, ray: RayJobState | None = None) -> Plan:
        observed = cases.observe(job, spec, status.model_dump(), pods, ray)
        return decide(replace(observed, generation=generation))

    assert healthcheck([stored])["waited"]["argocd"]["status"] == "Progressing"
    started = look(TrainingJobStatus())
    running = started.status
    assert running.phase == "Running"
    stored = playable(started.patch(TrainingJobStatus()))
    assert {k: v for k, v in healthcheck([stored])["waited"].items() if k != "name"} == {
        "argocd": {"status": "Progressing", "message": f"RayJobSubmitted: {running.message}"},
        "kstatus": {"status": "InProgress", "message": running.message},
    }
    assert set(_waits(kubectl, namespace, "2s").values()) == {1}, "timed out while running"

    done = look(running, RayJobState("SUCCEEDED"))
    assert done.status.phase == "Succeeded"
    stored = playable(done.patch(running))
    assert stored["status"]["phase"] == "Succeeded"
    assert _waits(kubectl, namespace, "10s") == dict.fromkeys(
        ("condition=Succeeded", "phase=Succeeded", "condition=Reconciling=False"), 0
    )
    seen = healthcheck([stored])["waited"]
    assert (seen["argocd"]["status"], seen["kstatus"]["status"]) == HEALTH["Succeeded"]
