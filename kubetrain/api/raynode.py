"""What a Ray pod advertises and what a Ray Train worker asks for, from one definition.

The operator writes these numbers into each pod's ``ray start`` command and the runtime
asks Ray Train for them in ``ScalingConfig``. Deriving both from the same function is
what guarantees that a worker's request fits its pod: a request larger than what any
node advertises never schedules, and Ray Train then waits for ever.

Ray cannot see a pod's limits the way Kubernetes enforces them (it reads the cgroup, and
keeps part of it for the object store), so nothing is left to its detection: the CPUs,
memory and object store of every Ray node are passed explicitly, the way KubeRay derives
``--num-cpus`` and ``--memory`` from the container's limits.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from kubetrain.api.quantity import parse_quantity
from kubetrain.api.v1alpha1 import PodResources, WorkerResources

#: Share of a pod's memory limit given to Ray's object store (Ray's own default, 30%).
OBJECT_STORE_FRACTION = 0.3
#: Ray refuses an object store smaller than this (75 MiB).
MIN_OBJECT_STORE = 75 * 2**20
#: A custom resource that only worker pods advertise, one unit each: every Ray Train worker
#: asks for one, so it lands on a worker pod of its own, never on the head (whose CPUs are
#: for the driver and Ray Data).
WORKER_SLOT = "kubetrain_worker"
#: The spec fields that size a worker pod and the head pod (errors and advice name them).
WORKER_RESOURCES_FIELD = "spec.training.resourcesPerWorker"
HEAD_RESOURCES_FIELD = "spec.cluster.head.resources"
#: Ray starts at most this many worker processes at once on a node (its default is the
#: node's CPU count). A job's first seconds start several on the head at once (the job's
#: supervisor, Ray Train's controller, Ray Data's coordinators and tasks): one at a time on
#: a 1-CPU head, they queued for 20 s of a 60 s job (BENCHMARKS.md, cluster start).
MIN_STARTUP_CONCURRENCY = 4
STARTUP_CONCURRENCY_ENV = "RAY_worker_maximum_startup_concurrency"
#: The smallest head the operator accepts (``spec.cluster.head.resources.memory``). Before
#: any data, a head holds Ray's own processes (GCS, raylet, the dashboard and its nine
#: module processes, agents, the client server), the job's supervisor and driver, Ray
#: Train's controller (which imports torch) and Ray Data's actors: 2.2-2.3 GiB measured
#: with 1, 2 and 4 workers alike (BENCHMARKS.md, head and worker footprints). Ray's memory
#: monitor stops processes at 95% of the limit, so 3Gi leaves about 0.5 GiB for the data
#: stage; the default (4Gi) about 1.5 GiB.
HEAD_MEMORY_MINIMUM = "3Gi"
#: The main process of every Ray pod, around ``ray start --block``: it ends the node when
#: the kernel OOM-kills one of its processes, so the pod fails as ``OOMKilled``.
NODE_GUARD = "python -m kubetrain_runtime.node_guard"


@dataclass(frozen=True)
class RayNodeResources:
    """The logical resources of one Ray node (one pod)."""

    cpus: int
    gpus: int
    memory: int  # bytes Ray may schedule, the object store excluded
    object_store_memory: int
    worker_slots: int = 0

    def ray_start_flags(self) -> str:
        """The ``ray start`` flags that advertise exactly these resources."""
        flags = (
            f"--num-cpus={self.cpus} --num-gpus={self.gpus}"
            f" --memory={self.memory} --object-store-memory={self.object_store_memory}"
        )
        if self.worker_slots:
            custom = json.dumps({WORKER_SLOT: self.worker_slots}, separators=(",", ":"))
            flags += f" --resources='{custom}'"
        return flags

    def startup_concurrency(self) -> int:
        """Worker processes this node's raylet may start at once (``STARTUP_CONCURRENCY_ENV``)."""
        return max(self.cpus, MIN_STARTUP_CONCURRENCY)

    def train_worker_request(self) -> dict[str, float]:
        """Ray Train's ``resources_per_worker`` for a worker that owns this whole node."""
        request: dict[str, float] = {"CPU": float(self.cpus), WORKER_SLOT: 1.0}
        if self.gpus:
            request["GPU"] = float(self.gpus)
        if self.memory:
            request["memory"] = float(self.memory)
        return request


def whole_cpus(quantity: str | int, field: str | None = None) -> int:
    """CPUs a Ray node with this CPU limit advertises: whole ones, at least one (Ray's
    ``--num-cpus`` is an integer, and a 500m pod must still run a task)."""
    return max(1, math.floor(parse_quantity(quantity, field) + 1e-9))


def split_memory(quantity: str | int, field: str | None = None) -> tuple[int, int]:
    """A memory limit as (Ray's schedulable memory, object store) in bytes. The object
    store lives in the pod's /dev/shm, which counts against the same limit."""
    limit = int(parse_quantity(quantity, field))
    store = max(MIN_OBJECT_STORE, int(limit * OBJECT_STORE_FRACTION))
    return max(0, limit - store), store


def node_resources(
    cpu: str | int, memory: str | int, gpus: int = 0, *, worker: bool, field: str | None = None
) -> RayNodeResources:
    """The resources a Ray pod with these limits advertises; ``field`` is the spec field
    that holds them, named in a QuantityError."""
    schedulable, store = split_memory(memory, field and f"{field}.memory")
    return RayNodeResources(
        cpus=whole_cpus(cpu, field and f"{field}.cpu"),
        gpus=gpus,
        memory=schedulable,
        object_store_memory=store,
        worker_slots=1 if worker else 0,
    )


def worker_node(resources: WorkerResources) -> RayNodeResources:
    """A training worker's pod: ``spec.training.resourcesPerWorker``."""
    return node_resources(
        resources.cpu,
        resources.memory,
        resources.gpu,
        worker=True,
        field=WORKER_RESOURCES_FIELD,
    )


def head_node(resources: PodResources) -> RayNodeResources:
    """The head pod: the driver, Ray Data and Ray Train's controller, no training worker."""
    return node_resources(resources.cpu, resources.memory, worker=False, field=HEAD_RESOURCES_FIELD)
