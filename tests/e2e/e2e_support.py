"""What the e2e tests share: the test-only overlay, following a job as a user does
(``kubectl`` only), and the tier's report file. Fixtures are in ``conftest.py``."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
OVERLAY = Path(__file__).with_name("overlay.yaml")
#: The chart's release in the e2e tier.
RELEASE, RELEASE_NAMESPACE = "kubetrain", "kubetrain-system"
OUTPUT_CLAIM = "kubetrain-outputs"
READER = "outputs-reader"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
#: Where each test's outputs are reported, for the notes (stage timings of each example).
REPORT = Path(os.environ.get("KUBETRAIN_E2E_REPORT", "/tmp/kubetrain-e2e-report.json"))

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@dataclass
class Workspace:
    """One test's namespace: restricted, with an outputs claim and a reader pod on it."""

    name: str
    kubectl: Kubectl

    def exec(self, *command: str, pod: str = READER) -> str:
        return self.kubectl("exec", "-n", self.name, pod, "--", *command).stdout

    def copy_in(self, local: Path, remote: str) -> None:
        self.exec("mkdir", "-p", str(Path(remote).parent))
        self.kubectl("cp", str(local), f"{self.name}/{READER}:{remote}")

    def files(self, under: str) -> set[str]:
        listing = self.exec("find", under, "-type", "f")
        return {line.removeprefix(under).lstrip("/") for line in listing.split()}


# --------------------------------------------------------------------- jobs as a user


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def shrunk_example(name: str) -> dict[str, Any]:
    """``examples/<name>.yaml`` with the test-only overlay (a few epochs, small pods)."""
    overlays = yaml.safe_load(OVERLAY.read_text())
    job = yaml.safe_load((REPO_ROOT / "examples" / f"{name}.yaml").read_text())
    job = deep_merge(job, overlays["all"])
    return deep_merge(job, overlays.get(name) or {})


def get_json(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


@dataclass
class Timeline:
    """When each milestone of a job was first seen, in seconds from its creation."""

    started: float
    seen: dict[str, float]
    samples: list[dict[str, Any]]

    def mark(self, milestone: str) -> None:
        self.seen.setdefault(milestone, round(time.monotonic() - self.started, 1))


TERMINAL = ("Succeeded", "Failed")


def follow_job(
    kubectl: Kubectl, namespace: str, name: str, *, timeout: float = 900
) -> tuple[dict[str, Any], Timeline]:
    """Poll the job (and its pods) until it finishes, recording what was seen on the way."""
    timeline = Timeline(time.monotonic(), {}, [])
    deadline = time.monotonic() + timeout
    while True:
        job = get_json(kubectl, "trainingjob", name, "-n", namespace)
        status = job.get("status") or {}
        _record(kubectl, namespace, job, status, timeline)
        if status.get("phase") in TERMINAL:
            return job, timeline
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not finish within {timeout:.0f} s: {status}")
        time.sleep(1)


def _record(kubectl: Kubectl, namespace: str, job: dict, status: dict, timeline: Timeline) -> None:
    uid = job["metadata"]["uid"]
    pods = get_json(kubectl, "pods", "-n", namespace, "-l", f"kubetrain.io/job-uid={uid}")["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    if pods and len(running) == len(pods):
        timeline.mark("pods_running")
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    if conditions.get("ClusterReady") == "True":
        timeline.mark("ray_up")
    progress = status.get("progress") or {}
    if progress.get("stage"):
        timeline.mark(f"stage_{progress['stage']}")
    if progress.get("epoch"):
        timeline.mark("first_epoch")
    if status.get("phase") in TERMINAL:
        timeline.mark(status["phase"].lower())
    timeline.samples.append({
        "at": round(time.monotonic() - timeline.started, 1),
        "phase": status.get("phase"),
        "progress": progress,
        "nodes": sorted({p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName")}),
        "metrics": bool(status.get("metrics")),
        "dataStats": bool(status.get("dataStats")),
    })  # fmt: skip


def report(key: str, value: Any) -> None:
    """Add one entry to the tier's report file (read by people, not by tests)."""
    current = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    current[key] = value
    REPORT.write_text(json.dumps(current, indent=2))


def children_left(
    kubectl: Kubectl, namespace: str, uid: str, kinds: str = "pods", timeout: float = 90
) -> list[str]:
    """The job's children of these kinds that are still there after waiting up to
    ``timeout`` for them to go (garbage collection and pod termination take seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        left = kubectl("get", kinds, "-n", namespace, "-l", f"kubetrain.io/job-uid={uid}",
                       "-o", "name").stdout.split()  # fmt: skip
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(1)
