"""The seam between the operator's Ray pods and the runtime's Ray Train request: for every
shape of ``resourcesPerWorker``, what a worker asks for fits what its pod advertises, and
what the pod advertises fits the pod's limits."""

from __future__ import annotations

import itertools
import json
import re
import shlex

import pytest

from kubetrain.api.quantity import parse_quantity
from kubetrain.api.raynode import WORKER_SLOT, whole_cpus
from kubetrain_operator import builders
from kubetrain_operator.validation import resolve_placement
from kubetrain_runtime.plan import Available, size_workers

CPUS = ["100m", "500m", "1", "1500m", "2", "2.5", "3999m", "4"]
MEMORIES = ["256Mi", "512M", "1Gi", "1.5Gi", "2Gi", "3G", "16Gi"]
GPUS = [0, 1, 8]


def advertised(command: str) -> dict[str, float]:
    """Ray's logical resources as ``ray start`` will register them, read off the command."""
    flags = dict(re.findall(r"--([a-z-]+)=('[^']*'|\S+)", command))
    resources = {
        "CPU": float(flags["num-cpus"]),
        "GPU": float(flags["num-gpus"]),
        "memory": float(flags["memory"]),
        "object_store_memory": float(flags["object-store-memory"]),
    }
    if "resources" in flags:
        resources |= json.loads(shlex.split(flags["resources"])[0])
    return resources


def worker_and_request(cpu, memory, gpu, job, make_spec, make_config):
    pool = "a100" if gpu else "cpu"
    spec = make_spec(
        cluster__nodePool=pool,
        training__workers=2,
        training__resourcesPerWorker={"cpu": cpu, "memory": memory, "gpu": gpu},
    )
    placement = resolve_placement(spec, make_config())
    pod = builders.worker_pod(job, spec, placement, make_config(), 0)
    cluster = Available(cpus=64, gpus=16, memory=2**40, nodes=3, worker_slots=2)
    sizing = size_workers(spec.training, cluster, workers=None, local=False)
    return pod, sizing


@pytest.mark.parametrize(("cpu", "memory", "gpu"), list(itertools.product(CPUS, MEMORIES, GPUS)))
def test_a_workers_request_fits_its_pod(cpu, memory, gpu, job, make_spec, make_config):
    pod, sizing = worker_and_request(cpu, memory, gpu, job, make_spec, make_config)
    container = pod["spec"]["containers"][0]
    offer = advertised(container["command"][-1])
    request = sizing.resources_per_worker()
    for resource, amount in request.items():
        assert amount <= offer.get(resource, 0.0), (resource, request, offer)
    assert request[WORKER_SLOT] == 1 and offer[WORKER_SLOT] == 1
    limits = container["resources"]["limits"]
    assert offer["CPU"] == max(1, int(parse_quantity(cpu)))
    assert offer["memory"] + offer["object_store_memory"] <= parse_quantity(limits["memory"])
    assert offer["GPU"] == gpu == float(limits.get("nvidia.com/gpu", 0))
    assert sizing.threads == offer["CPU"]


@pytest.mark.parametrize("cpu", CPUS)
def test_the_head_never_offers_a_worker_slot(cpu, job, make_spec, make_config):
    spec = make_spec(cluster__head={"resources": {"cpu": cpu, "memory": "2Gi"}})
    pod = builders.head_pod(job, spec, resolve_placement(spec, make_config()), make_config())
    offer = advertised(pod["spec"]["containers"][0]["command"][-1])
    assert WORKER_SLOT not in offer
    assert offer["CPU"] == whole_cpus(cpu) and offer["GPU"] == 0


def test_a_ray_cluster_without_worker_pods_gets_no_slot_request(make_spec):
    """A Ray cluster that the operator did not build (joined by address) has no slots."""
    spec = make_spec(training__resourcesPerWorker={"cpu": "1500m", "memory": "2Gi"})
    sizing = size_workers(spec.training, Available(cpus=8), workers=None, local=False)
    assert sizing.resources_per_worker() == {"CPU": 1.0, "memory": pytest.approx(0.7 * 2**31)}
