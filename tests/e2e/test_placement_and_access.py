"""A GPU job lands on the simulated GPU pool beside the real node, with the pool's requests,
limits and tolerations; and a runtime pod's ServiceAccount may patch its own job's status
and nothing else, checked from inside the pod through the ``kubernetes`` Service."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from e2e_support import follow_job, get_json, shrunk_example

pytestmark = pytest.mark.e2e

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _scheduled_pods(kubectl, namespace: str, uid: str, count: int, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        pods = get_json(kubectl, "pods", "-n", namespace, "-l", f"kubetrain.io/job-uid={uid}")
        placed = [p for p in pods["items"] if p["spec"].get("nodeName")]
        if len(placed) == count:
            return placed
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(placed)} of {count} pods scheduled: {pods['items']}")
        time.sleep(1)


def test_a_gpu_job_lands_on_its_gpu_pool(workspace, kubectl, gpu_pools):
    job = shrunk_example("digits-cnn")
    job["metadata"]["name"] = "gpu-cnn"
    job["spec"]["cluster"]["nodePool"] = "a100"
    # Small enough for a kind node of a hosted runner; the GPUs there are only advertised.
    job["spec"]["training"]["resourcesPerWorker"] = {"cpu": "1", "memory": "2Gi", "gpu": 2}
    # Not the namespace's claim: its local volume lives on the real node, not in this pool.
    job["spec"]["output"] = {"uri": "s3://kubetrain-e2e/gpu-cnn"}
    kubectl("apply", "-n", workspace.name, "-f", "-", stdin=yaml.safe_dump(job))
    uid = get_json(kubectl, "trainingjob", "gpu-cnn", "-n", workspace.name)["metadata"]["uid"]

    pods = _scheduled_pods(kubectl, workspace.name, uid, 1 + job["spec"]["training"]["workers"])
    for pod in pods:
        assert pod["spec"]["nodeName"] in gpu_pools["a100"]
        assert GPU_TOLERATION in pod["spec"]["tolerations"]
        assert pod["spec"]["nodeSelector"] == {"kubetrain.io/pool": "a100"}
        command = pod["spec"]["containers"][0]["command"][-1]
        resources = pod["spec"]["containers"][0]["resources"]
        if pod["metadata"]["labels"]["kubetrain.io/role"] == "worker":
            assert resources["requests"]["nvidia.com/gpu"] == "2"
            assert resources["limits"]["nvidia.com/gpu"] == "2"
            assert resources["limits"]["cpu"] == "1" and resources["limits"]["memory"] == "2Gi"
            assert "--num-gpus=2" in command and "--num-cpus=1" in command
        else:
            assert "nvidia.com/gpu" not in resources["limits"]
            assert "--num-gpus=0" in command
    kubectl("delete", "trainingjob", "gpu-cnn", "-n", workspace.name, "--wait", "--timeout=60s")


#: Run inside the head pod: the runtime's credentials, as its status reporter uses them.
ACCESS_PROBE = r"""
import json, os, socket, ssl, sys, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(f"{sa}/token").read()
context = ssl.create_default_context(cafile=f"{sa}/ca.crt")
host = "kubernetes.default.svc.cluster.local"
ns, name = sys.argv[1], sys.argv[2]
base = f"/apis/kubetrain.io/v1alpha1/namespaces/{ns}/trainingjobs"
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"https://{host}{path}", data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
print(json.dumps({
    "dns": socket.gethostbyname(host),
    "own_status": call("PATCH", f"{base}/{name}/status", {}),
    "own_status_get": call("GET", f"{base}/{name}/status"),
    "own_spec": call("PATCH", f"{base}/{name}", {}),
    "other_status": call("PATCH", f"{base}/someone-else/status", {}),
    "jobs": call("GET", base),
    "secrets": call("GET", f"/api/v1/namespaces/{ns}/secrets"),
    "pods": call("GET", f"/api/v1/namespaces/{ns}/pods"),
}))
"""


def test_the_runtime_may_patch_only_its_own_jobs_status(workspace, kubectl):
    job = shrunk_example("sine-rnn")
    job["metadata"]["name"] = "access"
    job["spec"]["training"] |= {"epochs": 1, "workers": 1}
    job["spec"]["runPolicy"]["cleanupPolicy"] = "KeepHead"
    kubectl("apply", "-n", workspace.name, "-f", "-", stdin=yaml.safe_dump(job))
    final, _ = follow_job(kubectl, workspace.name, "access")
    assert final["status"]["phase"] == "Succeeded", final["status"]

    head = f"{final['status']['rayClusterName']}-head"
    out = workspace.exec("python", "-c", ACCESS_PROBE, workspace.name, "access", pod=head)
    access = json.loads(out.strip().splitlines()[-1])
    assert access.pop("dns").startswith("10.96.")
    assert access == {
        "own_status": 200,
        "own_status_get": 200,
        "own_spec": 403,
        "other_status": 403,
        "jobs": 403,
        "secrets": 403,
        "pods": 403,
    }
