"""Pure decisions: how many workers with what resources, which metrics a task reports,
what identifies a run for resuming, and the TrainPlan that the per-worker loop receives.

Nothing here imports Ray or torch, so every rule is unit-tested in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from kubetrain.api.quantity import parse_quantity
from kubetrain.api.raynode import WORKER_RESOURCES_FIELD, WORKER_SLOT, worker_node
from kubetrain.api.v1alpha1 import TASK_METRICS, TrainingJobSpec, TrainingSpec

#: CPUs a local run leaves free for the driver, the Ray Train controller and Ray Data.
LOCAL_CPU_RESERVE = 0.2

#: The headline metric of a task and whether higher is better.
KEY_METRIC: dict[str, tuple[str, str]] = {
    "classification": ("val_accuracy", "max"),
    "regression": ("val_mse", "min"),
    "generation": ("val_elbo", "max"),
}


def learning_rate(optimizer: Mapping[str, Any], epoch: int, epochs: int) -> float:
    """The learning rate for ``epoch`` (1-based). A pure function of the epoch, so a
    resumed run needs no scheduler state to continue on the same curve."""
    base = float(optimizer["learningRate"])
    if optimizer.get("schedule", "constant") != "cosine" or epochs <= 1:
        return base
    return base * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))


def metric_names(task: str) -> tuple[str, ...]:
    return TASK_METRICS[task]


# ---------------------------------------------------------------------- sizing


@dataclass(frozen=True)
class Available:
    """What the Ray cluster has (``ray.cluster_resources()``)."""

    cpus: float
    gpus: float = 0.0
    memory: float = 0.0
    nodes: int = 1
    worker_slots: float = 0.0  # pods the operator made for training workers


@dataclass(frozen=True)
class Sizing:
    workers: int
    cpu: float
    gpu: float
    memory: float | None
    threads: int
    notes: tuple[str, ...] = ()
    #: In a cluster: exactly what a worker pod advertises (``kubetrain.api.raynode``).
    request: Mapping[str, float] | None = None
    #: Ray Train's local mode: the loop runs in the driver, no worker actors.
    in_process: bool = False

    @property
    def use_gpu(self) -> bool:
        return self.gpu > 0

    def resources_per_worker(self) -> dict[str, float]:
        if self.request is not None:
            return dict(self.request)
        resources = {"CPU": self.cpu}
        if self.gpu:
            resources["GPU"] = self.gpu
        if self.memory:
            resources["memory"] = self.memory
        return resources


def _fmt(value: float) -> str:
    return f"{value:g}"


def trains_in_process(training: TrainingSpec, *, workers: int | None, private_ray: bool) -> bool:
    """A local run trains in its own process (Ray Train's local mode) unless the user asked
    for workers (``--workers``), joined another Ray, or brings a loop of their own (whose
    ``ray.train.report`` checkpoints only worker actors keep)."""
    return private_ray and workers is None and not training.trainFunction


def _in_process_sizing(training: TrainingSpec, available: Available) -> Sizing:
    cpus = max(1, math.floor(available.cpus))
    gpu = 1.0 if training.resourcesPerWorker.gpu and available.gpus >= 1 else 0.0
    asked = training.workers
    note = (
        "training in this process with Ray Train's local mode (1 worker, "
        f"{cpus} threads); spec.training.workers ({asked}) sizes the cluster; "
        f"--workers {max(asked, 2)} runs {max(asked, 2)} Ray Train workers with DDP"
    )
    return Sizing(1, float(cpus), gpu, None, cpus, (note,), in_process=True)


def size_workers(
    training: TrainingSpec,
    available: Available,
    *,
    workers: int | None,
    local: bool,
    in_process: bool = False,
) -> Sizing:
    """Worker count and per-worker resources.

    In a cluster each worker asks for what its pod advertises, from the same definition
    that the operator's pod builder uses. Locally the requests are clamped to this
    machine, each clamp explained in a note, and CPUs are fractional so that two workers
    fit on two cores with room for the driver. In process, one worker uses every core.
    """
    count = workers or training.workers
    res = training.resourcesPerWorker
    if not local:
        return _cluster_sizing(count, training, available)
    if in_process:
        return _in_process_sizing(training, available)
    cpu = parse_quantity(res.cpu, WORKER_RESOURCES_FIELD + ".cpu")
    memory: float | None = parse_quantity(res.memory, WORKER_RESOURCES_FIELD + ".memory")
    gpu = float(res.gpu)
    notes: list[str] = []
    if local:
        whole = max(1, math.floor(available.cpus))
        if count > whole:
            notes.append(
                f"{count} workers asked; this machine has {_fmt(available.cpus)} CPUs, "
                f"so {whole} run"
            )
            count = whole
        share = max(0.1, (available.cpus - LOCAL_CPU_RESERVE) / count)
        if cpu > share:
            notes.append(
                f"each worker gets {share:.2g} CPU instead of {_fmt(cpu)} so that {count} "
                f"fit on {_fmt(available.cpus)} CPUs"
            )
            cpu = round(share, 3)
        if gpu and available.gpus < gpu * count:
            if available.gpus <= 0:
                notes.append("no GPU here: training on CPU")
                gpu = 0.0
            else:
                gpu = available.gpus / count
                notes.append(f"each worker gets {gpu:.2g} GPU to fit {_fmt(available.gpus)} GPUs")
        if memory and available.memory and memory * count > available.memory:
            notes.append(
                f"{count} × {res.memory} memory does not fit the "
                f"{available.memory / 2**30:.1f} GiB Ray may use here; not reserving memory"
            )
            memory = None
    threads = max(1, math.floor(cpu + 1e-6))
    return Sizing(count, cpu, gpu, memory, threads, tuple(notes))


def _cluster_sizing(count: int, training: TrainingSpec, available: Available) -> Sizing:
    """A Ray cluster that has no worker pods of the operator's (one started by hand, say)
    gets the same request without the worker slot, which only those pods advertise."""
    node = worker_node(training.resourcesPerWorker)
    request = node.train_worker_request()
    if not available.worker_slots:
        request.pop(WORKER_SLOT)
    return Sizing(
        count, float(node.cpus), float(node.gpus), float(node.memory) or None,
        threads=node.cpus, request=request,
    )  # fmt: skip


# ------------------------------------------------------------------------ plan


def fingerprint(spec: TrainingJobSpec) -> str:
    """What must match for a checkpoint to be resumed: the data, the model and the
    optimisation, but not epochs, stopping, checkpointing or worker count (a resumed run
    may go on longer or on more workers)."""
    training = spec.training.model_dump(
        mode="json",
        include={"batchSize", "optimizer", "seed", "mixedPrecision", "trainFunction"},
    )
    body = {
        "data": spec.data.model_dump(mode="json"),
        "model": spec.model.model_dump(mode="json"),
        "training": training,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrainPlan:
    """Everything the per-worker loop needs, as plain JSON-able values (it travels to the
    workers inside ``train_loop_config['plan']`` and is stored with the model)."""

    name: str
    model_type: str
    task: str
    section: dict[str, Any]
    input_shape: list[int]
    num_features: int
    num_outputs: int
    epochs: int
    batch_size: int
    optimizer: dict[str, Any]
    seed: int
    fingerprint: str
    class_names: list[str] | None = None
    likelihood: str | None = None  # vae: bernoulli (inputs in [0, 1]) or gaussian
    early_stopping: dict[str, Any] | None = None
    checkpoint_every: int = 1
    checkpoint_keep: int = 2
    threads: int = 1
    use_gpu: bool = False
    mixed_precision: bool = False
    cache_batches: bool = True
    feature_names: list[str] = field(default_factory=list)
    label: str | None = None
    #: What the device does to each batch first (``kubetrain_runtime.transforms``): pixel
    #: scaling, normalization and augmentation, or a sequence's standardization.
    input_transform: dict[str, Any] | None = None

    @property
    def image_shape(self) -> list[int] | None:
        """``[channels, height, width]`` when the inputs are images."""
        transform = self.input_transform or {}
        return list(transform["shape"]) if transform.get("kind") == "image" else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainPlan:
        return cls(**data)

    @property
    def metrics(self) -> tuple[str, ...]:
        return metric_names(self.task)


@dataclass
class Resume:
    resume: bool
    epoch: int = 0
    message: str = ""
    #: The checkpoint's folder name under ``checkpoints/<run>/`` (set by the trainer).
    checkpoint: str = ""


def decide_resume(saved: Mapping[str, Any] | None, plan: TrainPlan) -> Resume:
    """Resume the newest checkpoint (its ``state.json``) only when it belongs to the same
    job (fingerprint) and has epochs left; a finished or early-stopped run starts over."""
    if saved is None:
        return Resume(False)
    epoch = int(saved.get("epoch", 0))
    if saved.get("fingerprint") != plan.fingerprint:
        return Resume(
            False, message="the spec changed since the last checkpoint: starting at epoch 1"
        )
    if saved.get("stopped_early"):
        return Resume(False, message="the last run stopped early: starting at epoch 1")
    if epoch >= plan.epochs:
        return Resume(
            False, message=f"the last run finished all {epoch} epochs: starting at epoch 1"
        )
    return Resume(True, epoch, f"resuming after epoch {epoch} from the last checkpoint")
