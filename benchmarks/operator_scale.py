#!/usr/bin/env python3
"""Scale benchmark of the kubetrain operator: a burst of TrainingJobs on kwok node pools.

For each job the operator creates a ConfigMap, a ServiceAccount + Role + RoleBinding, a head
Service and (1 + workers) pods, and writes status. Measured, side by side in one run, for
the operator, for the issue's reference (*kopf*: a minimal kopf operator, one on.create
handler creating the same children, see kopf_minimal.py) and for a *floor* (a plain async
client that reacts to the same burst by creating the same objects and writing the same
status, with no kopf and no operator logic):

- time until every job is provisioned (children created and status set), p50/p99 per job;
- CPU-ms per job and peak RSS of the operator / floor process;
- API requests per job, from the API server's audit log (each side runs as its own
  ServiceAccount bound to charts/kubetrain/files/operator-rules.yaml, so it is also throttled
  as a real install would be).

Runs its own control plane (state dir ``--state-dir``, audit log on), started afresh for each
side, and stops it at the end unless ``--keep-cluster`` (which keeps the last side's). Usage::

    python benchmarks/operator_scale.py --jobs 1000          # the real measurement
    python benchmarks/operator_scale.py --jobs 100 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from reference_children import create_children  # noqa: E402

from kubetrain.api.v1alpha1 import API_VERSION, GROUP, PLURAL, VERSION  # noqa: E402
from kubetrain_operator.config import OperatorConfig  # noqa: E402
from kubetrain_operator.kube import KubeApi  # noqa: E402
from kubetrain_operator.naming import JobRef  # noqa: E402

#: The operator, the issue's reference (a minimal kopf operator creating the same children:
#: kopf_minimal.py) and the floor (a plain client, no kopf).
SIDES = ("operator", "kopf", "floor")
RULES = REPO / "charts" / "kubetrain" / "files" / "operator-rules.yaml"
FINALIZER_POLICY = REPO / "charts" / "kubetrain" / "files" / "finalizer-policy.yaml"
POOL = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
RATIO_KEYS = (
    "all_provisioned_s", "p50_s", "p99_s", "cpu_ms_per_job", "cpu_ms_per_job_until_ready",
    "peak_rss_mb", "requests_per_job",
)  # fmt: skip


def _localcluster() -> Any:
    spec = importlib.util.spec_from_file_location("localcluster", REPO / "e2e" / "localcluster.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["localcluster"] = module
    spec.loader.exec_module(module)
    return module


def job_manifest(name: str, workers: int) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "data": {"source": {"builtin": {"name": "iris"}}, "label": "target"},
            "model": {"type": "mlp"},
            "training": {"epochs": 1, "workers": workers, "resourcesPerWorker": {"cpu": "100m"}},
            "cluster": {
                "nodePool": POOL,
                "head": {"resources": {"cpu": "100m", "memory": "3Gi"}},
            },
        },
    }


def bench_config(follow: float, concurrent: int | None = None) -> OperatorConfig:
    raw: dict[str, Any] = {
        "nodePools": {POOL: {"nodeSelector": {"kubetrain.io/pool": POOL}}},
        "ray": {"submit": False},
        "followIntervalSeconds": follow,
        "metricsPort": 0,
    }
    if concurrent is not None:
        raw["concurrentProvisions"] = concurrent
    return OperatorConfig.model_validate(raw)


def admin_api(kubeconfig: Path) -> KubeApi:
    os.environ["KUBECONFIG"] = str(kubeconfig)
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    return KubeApi.from_connection_info(info, timeout=120)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ------------------------------------------------------------------------ setup


async def add_bench_nodes(api: KubeApi, lc: Any, nodes: int, pods: int) -> None:
    pool = lc.NodePool(POOL, nodes, cpu="10000", memory="64Ti", pods=pods)
    for name in pool.node_names():
        status, body = await api.request("POST", "/api/v1/nodes", body=lc.node_manifest(pool, name))
        if status not in (201, 409):
            raise RuntimeError(f"cannot create node {name}: {body}")


async def service_account_kubeconfig(
    api: KubeApi, namespace: str, name: str, admin_kubeconfig: Path, out: Path
) -> tuple[Path, str]:
    """A ServiceAccount bound to the operator's rules, and a kubeconfig logging in as it."""
    rbac = "rbac.authorization.k8s.io/v1"
    meta = {"name": name, "namespace": namespace}
    await api.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta})
    rules = yaml.safe_load(RULES.read_text())
    await api.create({"apiVersion": rbac, "kind": "Role", "metadata": meta, "rules": rules})
    await api.create(
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }
    )
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
    status, body = await api.request("POST", path, body={"spec": {"expirationSeconds": 7200}})
    assert status == 201, body
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    out.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": name, "user": {"token": body["status"]["token"]}}],
                "contexts": [{"name": name, "context": {"cluster": cluster["name"], "user": name}}],
                "current-context": name,
            }
        )
    )
    return out, f"system:serviceaccount:{namespace}:{name}"


async def install_finalizer_policy(api: KubeApi, namespace: str) -> None:
    """The chart's finalizer policy (as `helm install` renders it on this cluster), bound to
    one namespace; returns once the API server applies it."""
    group = "/apis/admissionregistration.k8s.io/v1"
    name = f"kubetrain-finalizer-{namespace}"
    head = {"apiVersion": "admissionregistration.k8s.io/v1", "metadata": {"name": name}}
    policy = {**head, "kind": "MutatingAdmissionPolicy",
              "spec": yaml.safe_load(FINALIZER_POLICY.read_text())}  # fmt: skip
    only_here = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
    binding = {**head, "kind": "MutatingAdmissionPolicyBinding",
               "spec": {"policyName": name, "matchResources": only_here}}  # fmt: skip
    for path, body in (("mutatingadmissionpolicies", policy),
                       ("mutatingadmissionpolicybindings", binding)):  # fmt: skip
        status, answer = await api.request("POST", f"{group}/{path}", body=body)
        if status not in (201, 409):
            raise RuntimeError(f"cannot create {path}: {answer}")
    probe = job_manifest("probe", 1)
    probe["metadata"]["namespace"] = namespace
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    for _ in range(300):
        status, made = await api.request("POST", path, body=probe, params={"dryRun": "All"})
        if status == 201 and made["metadata"].get("finalizers"):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the finalizer policy never came into force")


# ------------------------------------------------------------------- the burst


async def watch_jobs(
    api: KubeApi, namespace: str, seen: dict[str, float], ready: dict[str, float], stop: Any
) -> None:
    """Record when each job first has a status (provisioned) and a ready cluster."""
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    _, listing = await api.request("GET", base)
    version = listing["metadata"]["resourceVersion"]
    while not stop.is_set():
        url = f"{api.server}{base}?watch=1&allowWatchBookmarks=true&resourceVersion={version}"
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with api.session.get(url, timeout=timeout) as resp:
            async for line in resp.content:
                if stop.is_set():
                    return
                event = json.loads(line)
                obj = event["object"]
                version = obj["metadata"].get("resourceVersion", version)
                if event["type"] not in ("ADDED", "MODIFIED"):
                    continue
                name, st = obj["metadata"]["name"], obj.get("status") or {}
                now = time.monotonic()
                if st.get("rayClusterName") and name not in seen:
                    seen[name] = now
                if st.get("reason") == "ClusterReady" and name not in ready:
                    ready[name] = now


async def burst(
    api: KubeApi,
    namespace: str,
    jobs: int,
    workers: int,
    timeout: float,
    sample: Any,
    *,
    wait_ready: bool,
) -> dict[str, Any]:
    seen: dict[str, float] = {}
    ready: dict[str, float] = {}
    created: dict[str, float] = {}
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_jobs(api, namespace, seen, ready, stop))
    await asyncio.sleep(1)
    before = sample()
    start = time.monotonic()
    limit = asyncio.Semaphore(32)

    async def create(i: int) -> None:
        name = f"job-{i:05d}"
        body = job_manifest(name, workers)
        body["metadata"]["namespace"] = namespace
        async with limit:
            created[name] = time.monotonic()
            await api.create(body)

    await asyncio.gather(*(create(i) for i in range(jobs)))
    burst_s = time.monotonic() - start
    deadline = start + timeout
    while len(seen) < jobs and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    provisioned_at = time.monotonic()
    after = sample()
    while wait_ready and len(ready) < jobs and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    settled = sample() if wait_ready else after
    stop.set()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await watcher
    latencies = sorted(seen[n] - created[n] for n in seen if n in created)
    to_ready = sorted(ready[n] - created[n] for n in ready if n in created)
    return {
        "jobs": jobs,
        "provisioned": len(seen),
        "cluster_ready": len(ready),
        "create_burst_s": round(burst_s, 1),
        "all_provisioned_s": round(provisioned_at - start, 1),
        "all_ready_s": round(max(ready.values()) - start, 1) if ready else None,
        "p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 2) if latencies else None,
        # Per job, creation to a ready Ray cluster (what a user waits for before training).
        "ready_p50_s": round(statistics.median(to_ready), 2) if to_ready else None,
        "ready_p99_s": round(to_ready[int(0.99 * (len(to_ready) - 1))], 2) if to_ready else None,
        "window": (before, after, settled),
    }


def count_requests(audit_log: Path, offset: int, user: str) -> tuple[int, dict[str, int]]:
    total, kinds = 0, {}
    with audit_log.open() as f:
        f.seek(offset)
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("stage") != "ResponseComplete":
                continue
            if event.get("user", {}).get("username") != user:
                continue
            total += 1
            ref = event.get("objectRef", {})
            resource = ref.get("resource", "?") + (
                f"/{ref['subresource']}" if ref.get("subresource") else ""
            )
            key = f"{event.get('verb')} {resource}"
            kinds[key] = kinds.get(key, 0) + 1
    return total, dict(sorted(kinds.items(), key=lambda kv: -kv[1]))


# ------------------------------------------------------------------- the floor


async def floor_main(namespace: str, expect: int, workers: int) -> None:
    """React to the burst with no operator logic: watch, create children, write status."""
    api = admin_api(Path(os.environ["KUBECONFIG"]))
    config = bench_config(5)
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    _, listing = await api.request("GET", base)
    version = listing["metadata"]["resourceVersion"]
    done: set[str] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def provision(obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        job = JobRef(meta["name"], namespace, meta["uid"])
        await create_children(api, job, obj["spec"], config)
        await api.patch_job_status(
            namespace, job.name, {"phase": "Pending", "rayClusterName": job.cluster}
        )
        done.add(job.name)

    async def guarded(obj: dict[str, Any]) -> None:
        try:
            await provision(obj)
        except Exception as exc:  # report, never hang the driver
            print(f"floor: {obj['metadata']['name']}: {exc}", file=sys.stderr, flush=True)
            done.add(obj["metadata"]["name"])

    print("READY", flush=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    url = f"{api.server}{base}?watch=1&resourceVersion={version}"
    async with api.session.get(url, timeout=timeout) as resp:
        async for line in resp.content:
            event = json.loads(line)
            if event["type"] == "ADDED":
                task = asyncio.create_task(guarded(event["object"]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if len(done) + len(tasks) >= expect:
                break
    while len(done) < expect:
        await asyncio.sleep(0.05)
    print("DONE", flush=True)
    sys.stdin.read()  # the driver samples CPU and RSS, then closes stdin
    await api.close()


# ---------------------------------------------------------------------- driver


def start_process(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cmd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE if "floor" in cmd else log.open("w"),
        stderr=log.open("a") if "floor" in cmd else subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


async def run_side(
    side: str, args: argparse.Namespace, api: KubeApi, info: Any, work: Path
) -> dict[str, Any]:
    namespace = f"bench-{side}"
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    await api.request("POST", "/api/v1/namespaces", body=ns)
    kubeconfig, user = await service_account_kubeconfig(
        api, namespace, f"kubetrain-{side}", info.kubeconfig, work / f"{side}.kubeconfig"
    )
    if side == "operator" and args.finalizer_policy:
        await install_finalizer_policy(api, namespace)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    log = work / f"{side}.log"
    config_file = work / "operator-config.yaml"
    config = bench_config(args.follow, args.concurrent_provisions)
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    if side == "operator":
        cmd = [sys.executable, "-m", "kubetrain_operator", "--config", str(config_file)]
        cmd += ["-n", namespace, "--liveness", ""]
    elif side == "kopf":
        cmd = [sys.executable, str(REPO / "benchmarks" / "kopf_minimal.py")]
        cmd += ["--config", str(config_file), "--namespace", namespace]
    else:
        cmd = [sys.executable, __file__, "floor", "--namespace", namespace]
        cmd += ["--jobs", str(args.jobs), "--workers", str(args.workers)]
    proc = start_process(cmd, env, log)
    try:
        if side != "floor":
            warm = job_manifest("warmup", args.workers)
            warm["metadata"]["namespace"] = namespace
            await api.create(warm)
            path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/warmup"
            for _ in range(600):
                _, body = await api.request("GET", path)
                if (body.get("status") or {}).get("rayClusterName"):
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"the operator never came up; see {log}")
        else:
            assert proc.stdout is not None
            line = await asyncio.to_thread(proc.stdout.readline)
            assert line.strip() == "READY", line
        offset = info.audit_log.stat().st_size

        def sample() -> tuple[float, float]:
            return time.monotonic(), cpu_seconds(proc.pid)

        result = await burst(
            api, namespace, args.jobs, args.workers, args.timeout, sample,
            wait_ready=side == "operator",
        )  # fmt: skip
        if side == "floor":
            assert proc.stdout is not None
            await asyncio.to_thread(proc.stdout.readline)  # DONE
        (t0, cpu0), (t1, cpu1), (_, cpu2) = result.pop("window")
        result["cpu_ms_per_job"] = round((cpu1 - cpu0) * 1000 / args.jobs, 2)
        # The operator's whole work per job: up to every cluster ready (the floor has no
        # later work, so for it both figures are the same).
        result["cpu_ms_per_job_until_ready"] = round((cpu2 - cpu0) * 1000 / args.jobs, 2)
        result["cpu_share_of_one_core"] = round((cpu1 - cpu0) / max(t1 - t0, 1e-6), 2)
        result["peak_rss_mb"] = round(peak_rss_mb(proc.pid), 1)
        await asyncio.sleep(2)  # let the audit log catch up with the last requests
        total, kinds = count_requests(info.audit_log, offset, user)
        result["requests"] = total
        result["requests_per_job"] = round(total / args.jobs, 2)
        result["requests_by_kind"] = kinds
        return result
    finally:
        with contextlib.suppress(ProcessLookupError, OSError):
            if proc.stdin:
                proc.stdin.close()
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


async def driver(args: argparse.Namespace) -> dict[str, Any]:
    """Each side on a fresh, empty cluster: one left behind by an earlier side (its thousands
    of objects, the scheduler's and kwok's backlog) made a later side up to 2× slower."""
    lc = _localcluster()
    cluster = lc.LocalCluster(args.state_dir, audit=True, crds=REPO / "crds")
    work = Path(args.state_dir) / "bench"
    results: dict[str, Any] = {
        "jobs": args.jobs, "workers": args.workers, "follow_s": args.follow,
        "finalizer_policy": args.finalizer_policy,
        "concurrent_provisions": bench_config(5, args.concurrent_provisions).concurrentProvisions,
    }  # fmt: skip
    per_node = 1000
    nodes = max(1, -(-(args.jobs + 1) * (args.workers + 1) // per_node))
    for side in args.sides:
        info = cluster.up(build=False, timeout=180)
        work.mkdir(parents=True, exist_ok=True)
        api = admin_api(info.kubeconfig)
        try:
            await add_bench_nodes(api, lc, nodes, per_node)
            print(f"[bench] {side}: {args.jobs} TrainingJobs ...", file=sys.stderr, flush=True)
            results[side] = await run_side(side, args, api, info, work)
            print(f"[bench] {side}: {json.dumps(results[side])}", file=sys.stderr, flush=True)
        finally:
            await api.close()
            if not (args.keep_cluster and side == args.sides[-1]):
                cluster.down()
    for base in ("floor", "kopf"):
        if "operator" in results and base in results:
            op, ref = results["operator"], results[base]
            results[f"ratio_operator_to_{base}"] = {
                key: round(op[key] / ref[key], 2) if ref.get(key) else None for key in RATIO_KEYS
            }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    floor = sub.add_parser("floor", help="(internal) the no-operator baseline process")
    floor.add_argument("--namespace", required=True)
    floor.add_argument("--jobs", type=int, required=True)
    floor.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=1000, help="TrainingJobs in the burst")
    parser.add_argument("--workers", type=int, default=2, help="worker pods per job")
    parser.add_argument("--follow", type=float, default=5.0, help="operator follow interval")
    parser.add_argument(
        "--concurrent-provisions", type=int, help="operator concurrentProvisions (default: its own)"
    )
    parser.add_argument(
        "--no-finalizer-policy", dest="finalizer_policy", action="store_false",
        help="do not install the chart's finalizer policy (the operator then PATCHes it in)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--sides", nargs="+", choices=SIDES, default=list(SIDES), help="what to measure, in order"
    )
    parser.add_argument("--state-dir", default="/tmp/kubetrain-bench-cluster")
    parser.add_argument("--keep-cluster", action="store_true")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.command == "floor":
        asyncio.run(floor_main(args.namespace, args.jobs, args.workers))
        return 0
    results = asyncio.run(driver(args))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
