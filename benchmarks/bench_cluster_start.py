"""apply → Succeeded in the cluster, kubetrain beside KubeRay, on the same work.

On the local control plane with the real kubelet node (``e2e/local-cluster.sh up --node``,
or started here), with the images built by ``e2e/build-images.sh`` and the chart installed as
the e2e tier installs it, this runs ``examples/digits-cnn.yaml`` with the e2e overlay's sizes
(2 workers) ``--runs`` times each way, alternating:

- **kubetrain**: the TrainingJob is applied and followed to Succeeded;
- **KubeRay**: a RayJob (KubeRay's operator, built from the Go module proxy at ``--kuberay``
  and run here as a process) runs the same runtime entrypoint on the same spec document, in
  the same runtime image, with pods of the same sizes, env, volumes, probes and ``ray start``
  resources as kubetrain's own pods (copied from the warm-up run's pods).

For each run: seconds from apply to pods Running, Ray ready (every Ray pod Ready), data
ready and first training step (the runtime's own clock, ``metrics.json`` on the shared
claim, the same for both), Succeeded, and all pods gone; and the operator's CPU seconds.
Medians and the kubetrain/KubeRay ratio are printed and written as JSON. ``--floor`` also
measures the node's physical floor: a pod's start, the imports, a bare ``ray start``.

    ~/.cache/kubetrain/venv/bin/python benchmarks/bench_cluster_start.py --runs 5 --floor
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
for extra in ("tests", "tests/e2e", "operator", "runtime", "."):
    sys.path.insert(0, str(REPO / extra))

from kube_session import ClusterHandle, localcluster, wait_until  # noqa: E402
from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from kubernetes import watch  # noqa: E402
from object_store import objectstore  # noqa: E402

CACHE = Path(os.environ.get("KUBETRAIN_CACHE", Path.home() / ".cache" / "kubetrain"))
KUBERAY_VERSION = "v1.5.0"
KUBERAY_MODULE = "github.com/ray-project/kuberay/ray-operator"
NAMESPACE = "bench-start"
EXAMPLE = "digits-cnn"
WORKERS = 2
PEAKS = ("head_anon_shm", "worker_anon_shm", "head_working_set", "worker_working_set")
MILESTONES = ("pods_running", "ray_ready", "data_ready", "first_step", "succeeded", "pods_gone")
ENTRYPOINT_REPORTER = "log"


def load_e2e_conftest() -> ModuleType:
    """The e2e tier's fixtures module: its chart values, claim and image import are what
    this benchmark must match, so they are used, not restated."""
    spec = importlib.util.spec_from_file_location(
        "kubetrain_e2e_conftest", REPO / "tests" / "e2e" / "conftest.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


e2e = load_e2e_conftest()
support = sys.modules["e2e_support"]


# ------------------------------------------------------------------ KubeRay, built and run


def kuberay_binary(version: str) -> Path:
    """KubeRay's operator, built once per version with the Go toolchain (its own go.mod
    pins what its authors tested)."""
    folder = CACHE / "bin" / f"kuberay-{version}"
    exe = folder / "ray-operator"
    if exe.exists():
        return exe
    env = os.environ | {
        "GOBIN": str(folder), "GOCACHE": str(CACHE / "go" / "build"),
        "GOMODCACHE": str(CACHE / "go" / "mod"), "GOTOOLCHAIN": "local", "CGO_ENABLED": "0",
        "GOFLAGS": "-mod=mod -buildvcs=false -trimpath",
    }  # fmt: skip
    print(f"building KubeRay {version} (about 2 minutes cold)...", flush=True)
    subprocess.run(["go", "install", f"{KUBERAY_MODULE}@{version}"], env=env, check=True)
    return exe


def kuberay_crds(version: str) -> list[Path]:
    bases = CACHE / "go" / "mod" / "github.com" / "ray-project" / "kuberay"
    root = bases / f"ray-operator@{version}" / "config" / "crd" / "bases"
    return [root / f"ray.io_{kind}.yaml" for kind in ("rayclusters", "rayjobs", "rayservices")]


def stop_leftover(pid_file: Path) -> None:
    """A KubeRay operator left by an earlier run that was killed: two operators reconcile
    the same RayJob at once, each creating and deleting the other's pods."""
    try:
        pid = int(pid_file.read_text())
        if "ray-operator" in Path(f"/proc/{pid}/cmdline").read_text():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def start_kuberay(exe: Path, kubeconfig: Path, log: Path) -> subprocess.Popen[bytes]:
    pid_file = log.with_suffix(".pid")
    stop_leftover(pid_file)
    args = [
        str(exe), f"-kubeconfig={kubeconfig}", "-enable-leader-election=false",
        # Outside the cluster: the dashboard through the API server's service proxy (the
        # way kubetrain's operator reaches it when it runs outside, too).
        "-use-kubernetes-proxy",
        f"-metrics-addr=127.0.0.1:{objectstore.free_port()}",
        f"-health-probe-bind-address=127.0.0.1:{objectstore.free_port()}",
    ]  # fmt: skip
    handle = log.open("wb")
    operator = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT)
    pid_file.write_text(str(operator.pid))
    return operator


# ------------------------------------------------------------------ the cluster


@dataclass
class Bench:
    handle: ClusterHandle
    images: Any
    api: k8s.ApiClient
    volume: Path  # the claim's folder on this machine
    kubectl: Any
    template: dict[str, Any] = field(default_factory=dict)  # captured kubetrain pods + spec

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)


def make_kubectl(handle: ClusterHandle) -> Any:
    def run(*args: str, check: bool = True, stdin: str | None = None) -> Any:
        proc = subprocess.run(
            [str(handle.kubectl), f"--kubeconfig={handle.kubeconfig}", *args],
            input=stdin, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr}")
        return proc

    return run


def helm(handle: ClusterHandle, *args: str) -> None:
    exe = handle.kubectl.parent / "helm"
    subprocess.run([str(exe), f"--kubeconfig={handle.kubeconfig}", *args], check=True,
                   capture_output=True, text=True)  # fmt: skip


def set_up(state_dir: Path | None) -> tuple[Bench, Any]:
    cluster = localcluster.LocalCluster(state_dir, crds=REPO / "crds", node=True)
    info = cluster.up(build=True)
    handle = ClusterHandle(info.kubeconfig, False, info.kubectl, info, cluster)
    images = e2e._build_and_import(cluster)
    kubectl = make_kubectl(handle)
    values = info.state_dir / "bench-values.yaml"
    values.write_text(yaml.safe_dump(e2e.chart_values(images, e2e._placement(handle))))
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    e2e._restricted_namespace(kubectl, support.RELEASE_NAMESPACE)
    helm(handle, "upgrade", "--install", support.RELEASE, str(e2e.CHART), "-n",
         support.RELEASE_NAMESPACE, "-f", str(values), "--wait", "--timeout", "180s")  # fmt: skip
    # The image's tag stays the same when its content changes: a running operator would
    # go on with the old one.
    kubectl("rollout", "restart", "deployment", "-n", support.RELEASE_NAMESPACE)
    kubectl("rollout", "status", "deployment", "-n", support.RELEASE_NAMESPACE, "--timeout=120s")
    e2e._restricted_namespace(kubectl, NAMESPACE)
    objects, folder = e2e._volume(handle, NAMESPACE)
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                  "items": objects}))  # fmt: skip
    api = k8s_config.new_client_from_config(config_file=str(info.kubeconfig))
    return Bench(handle, images, api, folder, kubectl), cluster


# ------------------------------------------------------------------ following a run


@dataclass
class Run:
    system: str
    name: str
    owns: Callable[[dict[str, str]], bool]  # a pod's labels -> is it this run's
    workers: int = WORKERS
    applied: float = 0.0
    seen: dict[str, float] = field(default_factory=dict)
    pods: dict[str, dict[str, bool]] = field(default_factory=dict)  # name -> running/ready
    cpu_seconds: float = 0.0
    cgroups: dict[str, tuple[str, Path]] = field(default_factory=dict)  # pod -> role, cgroup
    peaks: dict[str, int] = field(default_factory=dict)  # role_kind -> peak bytes

    def mark(self, milestone: str, at: float | None = None) -> None:
        self.seen.setdefault(milestone, round((at or time.time()) - self.applied, 2))


def pod_watcher(bench: Bench, runs: list[Run], stop: threading.Event) -> threading.Thread:
    """Every pod event of the namespace, as it happens, against the run whose labels it has."""

    def loop() -> None:
        while not stop.is_set():
            stream = watch.Watch().stream(
                bench.core.list_namespaced_pod, NAMESPACE, timeout_seconds=30
            )
            for event in stream:
                pod = event["object"]
                for run in [r for r in runs if r.owns(pod.metadata.labels or {})]:
                    observe_pod(run, event["type"], pod)
                if stop.is_set():
                    return

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def observe_pod(run: Run, kind: str, pod: Any) -> None:
    name = pod.metadata.name
    if kind == "DELETED":
        run.pods.pop(name, None)
        if "succeeded" in run.seen and not run.pods:
            run.mark("pods_gone")
        return
    labels = pod.metadata.labels or {}
    role = labels.get("kubetrain.io/role") or labels.get("ray.io/node-type") or "?"
    run.cgroups.setdefault(name, (role, pod_cgroup(pod.metadata.uid)))
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    run.pods[name] = {"running": pod.status.phase == "Running", "ready": ready}
    states = list(run.pods.values())
    if len(states) >= 1 + run.workers and all(s["running"] for s in states):
        run.mark("pods_running")
    if len(states) >= 1 + run.workers and all(s["ready"] for s in states):
        run.mark("ray_ready")


MEMORY_CGROUPS = Path("/sys/fs/cgroup/memory/kubepods")  # cgroup v1, the cgroupfs driver


def pod_cgroup(uid: str) -> Path:
    for qos in ("", "burstable", "besteffort"):
        folder = MEMORY_CGROUPS / qos / f"pod{uid}"
        if folder.is_dir():
            return folder
    return MEMORY_CGROUPS / f"pod{uid}"  # not there yet: looked up again while sampling


def pod_memory(cgroup: Path) -> dict[str, int]:
    """A pod's memory two ways: the kubelet's working set (usage less inactive page cache:
    it counts the torch libraries' pages that this pod read first) and what no reclaim can
    take back (anonymous memory and shared memory: the processes and Ray's object store)."""
    try:
        usage = int((cgroup / "memory.usage_in_bytes").read_text())
        stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
    except (OSError, ValueError):
        return {}
    return {
        "working_set": usage - int(stat.get("total_inactive_file", 0)),
        "anon_shm": int(stat.get("total_rss", 0)) + int(stat.get("total_shmem", 0)),
    }


def memory_sampler(runs: list[Run], stop: threading.Event) -> threading.Thread:
    """Every pod's memory, 4 times a second: the peaks per role (head, worker)."""

    def loop() -> None:
        while not stop.wait(0.25):
            for run in list(runs):
                for name, (role, seen) in list(run.cgroups.items()):
                    cgroup = seen if seen.is_dir() else pod_cgroup(seen.name.removeprefix("pod"))
                    run.cgroups[name] = (role, cgroup)
                    for kind, used in pod_memory(cgroup).items():
                        key = f"{role}_{kind}"
                        run.peaks[key] = max(run.peaks.get(key, 0), used)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def process_cpu(pid: int) -> float:
    """utime + stime of a process and its reaped children, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")


def kubetrain_operator_pid() -> int:
    out = subprocess.run(
        ["pgrep", "-f", "kubetrain_operator"], capture_output=True, text=True, check=False
    )
    pids = [int(p) for p in out.stdout.split()]
    if not pids:
        raise RuntimeError("no kubetrain operator process on this machine")
    return min(pids)


def runtime_clock(bench: Bench, run: Run, output: str) -> None:
    """data ready and first step, from the runtime's own timeline on the claim."""
    path = bench.volume / Path(output).relative_to("/output") / "metrics.json"
    metrics = json.loads(path.read_text())
    origin = metrics.get("timelineOriginUnix")
    timeline = metrics.get("timelineSeconds", {})
    for key in ("data_ready", "first_step"):
        if origin is not None and key in timeline:
            run.mark(key, origin + timeline[key])
    run.seen["training_seconds"] = round(timeline.get("training_finished", 0)
                                         - timeline.get("first_step", 0), 2)  # fmt: skip


# ------------------------------------------------------------------ the two systems


def kubetrain_manifest(name: str, workers: int, cpu: str | None = None) -> dict[str, Any]:
    body = support.shrunk_example(EXAMPLE)
    body["metadata"] = {"name": name, "namespace": NAMESPACE}
    body["spec"]["training"]["workers"] = workers
    if cpu:
        body["spec"]["training"]["resourcesPerWorker"]["cpu"] = cpu
    return body


def run_kubetrain(
    bench: Bench, name: str, runs: list[Run], workers: int = WORKERS, cpu: str | None = None
) -> Run:
    run = Run("kubetrain", name, lambda labels: labels.get("kubetrain.io/job") == name, workers)
    runs.append(run)
    bench.kubectl("delete", "trainingjob", name, "-n", NAMESPACE, "--ignore-not-found", "--wait")
    pid = kubetrain_operator_pid()
    cpu0 = process_cpu(pid)
    run.applied = time.time()
    bench.kubectl("apply", "-f", "-", stdin=json.dumps(kubetrain_manifest(name, workers, cpu)))

    def done(body: dict[str, Any]) -> bool:
        if not bench.template and (body.get("status") or {}).get("phase") == "Running":
            bench.template = capture_template(bench, name)
        return kubetrain_done(body)

    job = follow_custom(bench, run, ("kubetrain.io", "v1alpha1", "trainingjobs"), done)
    runtime_clock(bench, run, job["status"]["artifacts"]["outputUri"])
    wait_until(lambda: "pods_gone" in run.seen, timeout=120, what=f"{name}'s pods to go")
    run.cpu_seconds = round(process_cpu(pid) - cpu0, 2)
    bench.kubectl("delete", "trainingjob", name, "-n", NAMESPACE, "--wait=false")
    return run


def kubetrain_done(body: dict[str, Any]) -> bool | None:
    phase = (body.get("status") or {}).get("phase")
    if phase == "Failed":
        raise RuntimeError(f"{body['metadata']['name']} failed: {body['status'].get('message')}")
    return phase == "Succeeded"


def follow_custom(bench: Bench, run: Run, gvr: tuple[str, str, str], done: Any) -> dict:
    group, version, plural = gvr
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        body = bench.custom.get_namespaced_custom_object(group, version, NAMESPACE, plural,
                                                         run.name)  # fmt: skip
        if done(body):
            run.mark("succeeded")
            return body
        time.sleep(0.1)
    raise RuntimeError(f"{run.name} did not finish in 900 s")


def capture_template(bench: Bench, name: str) -> dict[str, Any]:
    """kubetrain's own head and worker pods and spec document, for KubeRay to copy (taken
    while the job runs)."""
    pods = bench.core.list_namespaced_pod(NAMESPACE, label_selector=f"kubetrain.io/job={name}")
    by_role: dict[str, Any] = {}
    for pod in pods.items:
        role = pod.metadata.labels.get("kubetrain.io/role")
        by_role.setdefault(role, bench.api.sanitize_for_serialization(pod))
    maps = bench.core.list_namespaced_config_map(
        NAMESPACE, label_selector=f"kubetrain.io/job={name}"
    )
    spec_map = next(m for m in maps.items if m.metadata.labels.get("app.kubernetes.io/component")
                    == "spec")  # fmt: skip
    return {"head": by_role["head"], "worker": by_role["worker"], "spec": spec_map.data}


def ray_start_params(command: str) -> dict[str, str]:
    """The resource flags of kubetrain's ``ray start`` as KubeRay's rayStartParams."""
    params: dict[str, str] = {}
    for token in shlex.split(command):
        if not token.startswith("--") or "=" not in token:
            continue
        key, value = token[2:].split("=", 1)
        if key in ("num-cpus", "num-gpus", "memory", "object-store-memory"):
            params[key] = value
        elif key == "resources":
            params[key] = json.dumps(value)  # KubeRay wants the JSON quoted once more
    return params


def group_template(pod: dict[str, Any], spec_map: str) -> dict[str, Any]:
    """A KubeRay pod template from one of kubetrain's pods: the same image, resources, env,
    volumes, probe and security; KubeRay writes its own ``ray start`` command."""
    spec = copy.deepcopy(pod["spec"])
    container = spec["containers"][0]
    for key in ("command", "args", "ports", "terminationMessagePath",
                "terminationMessagePolicy"):  # fmt: skip
        container.pop(key, None)
    container["env"] = [e for e in container["env"] if e["name"] != "POD_IP"]
    for volume in spec["volumes"]:
        if "configMap" in volume and volume["name"] == "spec":
            volume["configMap"]["name"] = spec_map
    keep = (
        "containers",
        "volumes",
        "securityContext",
        "nodeSelector",
        "tolerations",
        "automountServiceAccountToken",
        "terminationGracePeriodSeconds",
        "enableServiceLinks",
    )
    return {"spec": {k: spec[k] for k in keep if k in spec} | {"restartPolicy": "Never"}}


def rayjob_manifest(bench: Bench, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    template = bench.template
    document = yaml.safe_load(next(iter(template["spec"].values())))
    document["metadata"]["name"] = name
    document["spec"]["output"]["uri"] = f"/output/{NAMESPACE}/{name}"
    file = next(iter(template["spec"]))
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": f"{name}-spec", "namespace": NAMESPACE},
                  "data": {file: json.dumps(document, indent=2)}}  # fmt: skip
    head, worker = template["head"], template["worker"]
    head_command = head["spec"]["containers"][0]["command"][-1]
    worker_command = worker["spec"]["containers"][0]["command"][-1]
    mount = next(m["mountPath"] for m in head["spec"]["containers"][0]["volumeMounts"]
                 if m["name"] == "spec")  # fmt: skip
    rayjob = {
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "entrypoint": "python -m kubetrain_runtime.entrypoint"
                          f" --spec {mount}/{file} --reporter {ENTRYPOINT_REPORTER}",
            "submissionMode": "HTTPMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 0,
            "rayClusterSpec": {
                "headGroupSpec": {
                    "rayStartParams": ray_start_params(head_command) | {
                        "dashboard-host": "0.0.0.0", "disable-usage-stats": "true"},
                    "template": group_template(head, f"{name}-spec"),
                },
                "workerGroupSpecs": [{
                    "groupName": "workers", "replicas": WORKERS, "minReplicas": WORKERS,
                    "maxReplicas": WORKERS,
                    "rayStartParams": ray_start_params(worker_command) | {
                        "disable-usage-stats": "true"},
                    "template": group_template(worker, f"{name}-spec"),
                }],
            },
        },
    }  # fmt: skip
    return config_map, rayjob


def rayjob_done(body: dict[str, Any]) -> bool:
    status = body.get("status") or {}
    if status.get("jobStatus") in ("FAILED", "STOPPED") or status.get("jobDeploymentStatus") == (
        "Failed"
    ):
        raise RuntimeError(f"{body['metadata']['name']} failed: {status}")
    return status.get("jobStatus") == "SUCCEEDED"


def run_kuberay(bench: Bench, name: str, runs: list[Run], operator: subprocess.Popen) -> Run:
    # KubeRay names the RayJob's cluster <job>-<5 random characters>.
    run = Run(
        "kuberay", name, lambda labels: labels.get("ray.io/cluster", "").rsplit("-", 1)[0] == name
    )
    bench.kubectl("delete", "rayjob", name, "-n", NAMESPACE, "--ignore-not-found", "--wait")
    config_map, rayjob = rayjob_manifest(bench, name)
    bench.kubectl("apply", "-f", "-", stdin=json.dumps(config_map))
    runs.append(run)
    cpu0 = process_cpu(operator.pid)
    run.applied = time.time()
    bench.kubectl("apply", "-f", "-", stdin=json.dumps(rayjob))
    body = follow_custom(bench, run, ("ray.io", "v1", "rayjobs"), rayjob_done)
    cluster = body["status"].get("rayClusterName")
    runtime_clock(bench, run, f"/output/{NAMESPACE}/{name}")
    wait_until(lambda: "pods_gone" in run.seen or not pods_left(bench, cluster), timeout=180,
               what=f"{name}'s pods to go")  # fmt: skip
    run.mark("pods_gone")
    run.cpu_seconds = round(process_cpu(operator.pid) - cpu0, 2)
    bench.kubectl("delete", "rayjob", name, "-n", NAMESPACE, "--wait=false")
    bench.kubectl("delete", "configmap", f"{name}-spec", "-n", NAMESPACE, "--wait=false")
    return run


def pods_left(bench: Bench, cluster: str) -> int:
    pods = bench.core.list_namespaced_pod(NAMESPACE, label_selector=f"ray.io/cluster={cluster}")
    return len(pods.items)


# ------------------------------------------------------------------ the floor


FLOOR_SCRIPT = r"""
import subprocess, sys, time

def timed(*command):
    began = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return round(time.time() - began, 2)

imports = timed(sys.executable, "-c", "import ray, torch, ray.train.torch, ray.data, "
                "kubetrain_runtime.train_loop")
ray_start = timed("ray", "start", "--head", "--disable-usage-stats", "--num-cpus=1",
                  "--dashboard-host=127.0.0.1", "--port=6390")
connect = timed(sys.executable, "-c", "import ray; ray.init(address='auto')")
subprocess.run(["ray", "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"FLOOR imports={imports} ray_start={ray_start} connect={connect}", flush=True)
"""


def measure_floor(bench: Bench) -> dict[str, float]:
    """A bare pod of the runtime image: its start, then inside it the imports, a bare
    ``ray start --head`` and a driver's connect, each alone."""
    worker = bench.template["worker"]["spec"]
    container = copy.deepcopy(worker["containers"][0])
    container.pop("readinessProbe", None)
    container["command"] = ["python", "-c", FLOOR_SCRIPT]
    container["volumeMounts"] = [m for m in container["volumeMounts"]
                                 if m["name"] in ("dshm", "tmp")]  # fmt: skip
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "bench-floor", "namespace": NAMESPACE},
           "spec": {"restartPolicy": "Never", "containers": [container],
                    "volumes": [v for v in worker["volumes"] if v["name"] in ("dshm", "tmp")],
                    **{k: worker[k] for k in ("securityContext", "nodeSelector", "tolerations")
                       if k in worker}}}  # fmt: skip
    bench.kubectl("delete", "pod", "bench-floor", "-n", NAMESPACE, "--ignore-not-found", "--wait")
    applied = time.time()
    bench.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    started = wait_running(bench, "bench-floor") - applied
    wait_until(lambda: bench.core.read_namespaced_pod("bench-floor", NAMESPACE).status.phase
               in ("Succeeded", "Failed"), timeout=300, what="the floor pod")  # fmt: skip
    log = bench.core.read_namespaced_pod_log("bench-floor", NAMESPACE)
    line = next(x for x in log.splitlines() if x.startswith("FLOOR "))
    floor = {"pod_start": round(started, 2)}
    floor |= {k: float(v) for k, v in (item.split("=") for item in line.split()[1:])}
    bench.kubectl("delete", "pod", "bench-floor", "-n", NAMESPACE, "--wait=false")
    return floor


def wait_running(bench: Bench, name: str) -> float:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pod = bench.core.read_namespaced_pod(name, NAMESPACE)
        if pod.status.phase in ("Running", "Succeeded", "Failed"):
            return time.time()
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not start")


# ------------------------------------------------------------------ the report


def medians(runs: list[Run], system: str) -> dict[str, float]:
    own = [r for r in runs if r.system == system]
    out: dict[str, float] = {}
    for key in (*MILESTONES, "training_seconds"):
        values = [r.seen[key] for r in own if key in r.seen]
        if values:
            out[key] = round(statistics.median(values), 2)
    for key in PEAKS:
        peaks = [r.peaks[key] for r in own if key in r.peaks]
        if peaks:
            out[f"{key}_peak_mib"] = round(statistics.median(peaks) / 2**20)
    if own:
        out["operator_cpu_seconds"] = round(statistics.median(r.cpu_seconds for r in own), 2)
    return out


def table(runs: list[Run]) -> str:
    ours, theirs = medians(runs, "kubetrain"), medians(runs, "kuberay")
    lines = ["| milestone (s after apply, median) | kubetrain | KubeRay | ratio |",
             "|---|---:|---:|---:|"]  # fmt: skip
    keys = ("training_seconds", "operator_cpu_seconds", *(f"{k}_peak_mib" for k in PEAKS))
    for key in (*MILESTONES, *keys):
        a, b = ours.get(key), theirs.get(key)
        ratio = f"{a / b:.2f}" if a is not None and b else "-"
        lines.append(f"| {key} | {a} | {b} | {ratio} |")
    return "\n".join(lines)


def run_record(run: Run) -> dict[str, Any]:
    return {"system": run.system, "name": run.name, "seen": run.seen,
            "operator_cpu_seconds": run.cpu_seconds, "peak_mib": peaks_mib(run)}  # fmt: skip


def peaks_mib(run: Run) -> dict[str, int]:
    return {role: round(peak / 2**20) for role, peak in run.peaks.items()}


def footprints(bench: Bench, counts: list[int], runs: list[Run]) -> dict[int, dict[str, int]]:
    """The head's and a worker's peak memory for a job of N workers (each worker
    requests a quarter CPU, so that 4 fit beside the head on a 2-core node; Ray still
    gives each one CPU)."""
    out: dict[int, dict[str, int]] = {}
    for workers in counts:
        run = run_kubetrain(bench, f"bench-footprint-{workers}", runs, workers, cpu="250m")
        runs.remove(run)
        out[workers] = peaks_mib(run)
        print(f"footprint, {workers} worker(s): {out[workers]} MiB, {run.seen}", flush=True)
    return out


def rounds(count: int) -> Iterator[tuple[int, str]]:
    for index in range(count):
        order = ("kubetrain", "kuberay") if index % 2 == 0 else ("kuberay", "kubetrain")
        for system in order:
            yield index, system


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--floor", action="store_true", help="also measure the node's floor")
    parser.add_argument("--kuberay", default=KUBERAY_VERSION)
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=Path("/tmp/bench_cluster_start.json"))
    parser.add_argument("--only", choices=("kubetrain", "kuberay"), default=None)
    parser.add_argument("--footprint", default="", help="worker counts, e.g. 1,2,4: the "
                        "head's and a worker's peak memory for each")  # fmt: skip
    args = parser.parse_args()

    exe = kuberay_binary(args.kuberay)
    bench, _ = set_up(args.state_dir)
    for crd in kuberay_crds(args.kuberay):
        bench.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    operator = start_kuberay(exe, bench.handle.kubeconfig, bench.handle.info.state_dir /
                             "logs" / "kuberay.log")  # fmt: skip
    # A SIGTERM ends the run through ``finally``, which stops KubeRay's operator.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs: list[Run] = []
    stop = threading.Event()
    pod_watcher(bench, runs, stop)
    memory_sampler(runs, stop)
    try:
        print("warm-up: one kubetrain run (its pods are KubeRay's template)", flush=True)
        warmup = run_kubetrain(bench, "bench-warmup", runs)
        runs.remove(warmup)
        floor = measure_floor(bench) if args.floor else {}
        counts = [int(n) for n in args.footprint.split(",") if n]
        sizes = footprints(bench, counts, runs) if counts else {}
        if floor:
            print(f"floor: {floor}", flush=True)
        for index, system in rounds(args.runs):
            if args.only and system != args.only:
                continue
            name = f"bench-{'kt' if system == 'kubetrain' else 'kr'}-{index}"
            run = (run_kubetrain(bench, name, runs) if system == "kubetrain"
                   else run_kuberay(bench, name, runs, operator))  # fmt: skip
            print(f"{system:9} {name}: {run.seen} operator CPU {run.cpu_seconds} s, peak "
                  f"memory MiB {peaks_mib(run)}", flush=True)  # fmt: skip
    finally:
        stop.set()
        operator.terminate()
        operator.wait(timeout=30)
    print(table(runs))
    args.json.write_text(json.dumps({"runs": [run_record(r) for r in runs], "floor": floor,
                                     "footprints": sizes,
                                     "kubetrain": medians(runs, "kubetrain"),
                                     "kuberay": medians(runs, "kuberay")}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
