"""On the driver: Ray Train's TorchTrainer from the plan, a deliberate resume
policy, and epoch events forwarded to the reporter while training runs.

Ray Train V2 resumes by itself whenever a run name and storage path are reused. Here that
is a decision: the newest checkpoint is resumed only when it was written for the same
data, model and optimisation (the plan's fingerprint) and has epochs left to run;
otherwise the old run's checkpoints are removed and training starts at epoch 1.

Worker metrics reach the driver through a ``ray.train.UserCallback``. It runs in the Train
controller, an actor that V2 pins to the driver's node, so it appends each report to a
local JSON-lines file that a driver thread follows and hands to the reporter (no extra
actor to start, which costs seconds on a small machine).
"""

from __future__ import annotations

import importlib
import json
import os
import posixpath
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import ray.train
from ray.train.torch import TorchTrainer

from kubetrain.api.raynode import HEAD_RESOURCES_FIELD, WORKER_RESOURCES_FIELD
from kubetrain.api.v1alpha1 import Progress
from kubetrain.errors import SpecError, UserError
from kubetrain_runtime.data.pipeline import PreparedData
from kubetrain_runtime.plan import Resume, Sizing, TrainPlan, decide_resume
from kubetrain_runtime.reporting import Reporter
from kubetrain_runtime.storage import Store
from kubetrain_runtime.train_loop import (
    CHECKPOINT_PREFIX,
    CHECKPOINTS,
    IN_PROCESS_KEY,
    OUTPUT_KEY,
    RESUME_KEY,
    SHARDS_KEY,
    STATE_FILE,
    append_event,
    train_loop_per_worker,
)

#: Values in worker metrics that are bookkeeping, not metrics.
INTERNAL_METRICS = frozenset({"first_step_unix", "loop_started_unix", "stopped_early"})


class TrainingFailed(Exception):
    """Training broke for a reason that is not the user's input (exit code 1, or
    ``EXIT_OUT_OF_MEMORY`` when a worker ran out of memory)."""

    def __init__(self, message: str, *, out_of_memory: bool = False) -> None:
        super().__init__(message)
        self.out_of_memory = out_of_memory


def latest_checkpoint(store: Store, run: str) -> tuple[str, dict[str, Any]] | None:
    """The run's newest checkpoint: its folder name and its ``state.json``."""
    folder = posixpath.join(CHECKPOINTS, run)
    for name in reversed(store.children(folder)):
        if name.startswith(CHECKPOINT_PREFIX) and store.exists(
            posixpath.join(folder, name, STATE_FILE)
        ):
            return name, json.loads(store.read_text(posixpath.join(folder, name, STATE_FILE)))
    return None


def prepare_resume(store: Store, plan: TrainPlan) -> Resume:
    """Decide, and clear the old run's folder when not resuming (so V2 starts afresh)."""
    latest = latest_checkpoint(store, plan.name)
    decision = decide_resume(latest[1] if latest else None, plan)
    if latest is None or not decision.resume:
        store.remove(posixpath.join(CHECKPOINTS, plan.name))
        return decision
    return replace(decision, checkpoint=latest[0])


def load_train_function(reference: str | None) -> Callable[[dict[str, Any]], None]:
    """The per-worker loop: the built-in one, or ``spec.training.trainFunction``."""
    if not reference:
        return train_loop_per_worker
    module_name, name = reference.split(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise SpecError(
            f"cannot import {reference}: {exc}", field="spec.training.trainFunction"
        ) from None
    if not callable(function):
        raise SpecError(f"{reference} is not callable", field="spec.training.trainFunction")
    return function


class EventForwarder(ray.train.UserCallback):
    """Runs in the Train controller: appends each report to the driver's events file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def after_report(
        self,
        run_context: Any,
        metrics: list[dict[str, Any]],
        checkpoint: ray.train.Checkpoint | None,
    ) -> None:
        append_event(
            self.path, metrics[0] if metrics else {}, checkpoint.path if checkpoint else None
        )


@dataclass
class TrainOutcome:
    checkpoint: ray.train.Checkpoint | None
    history: list[dict[str, float]] = field(default_factory=list)
    first_step_unix: float | None = None
    loop_started_unix: float | None = None
    last_checkpoint_uri: str | None = None
    last_checkpoint_epoch: int | None = None


class EpochPump(threading.Thread):
    """Driver thread: follows the events file and tells the reporter, with an ETA."""

    def __init__(
        self, path: str, reporter: Reporter, plan: TrainPlan, store: Store, outcome: TrainOutcome
    ) -> None:
        super().__init__(name="kubetrain-epochs", daemon=True)
        self.path, self.reporter, self.plan, self.store, self.outcome = (
            path,
            reporter,
            plan,
            store,
            outcome,
        )
        self.stopping = threading.Event()
        self.seconds: list[float] = []
        self.offset = 0

    def poll(self) -> None:
        """Handle the complete lines written since the last poll."""
        with open(self.path) as handle:
            handle.seek(self.offset)
            while (line := handle.readline()).endswith("\n"):
                self.offset = handle.tell()
                self.handle(json.loads(line))

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            self.poll()

    def drain(self) -> None:
        self.stopping.set()
        self.join()
        self.poll()

    def handle(self, item: dict[str, Any]) -> None:
        raw = item["metrics"]
        if "first_step_unix" in raw and self.outcome.first_step_unix is None:
            self.outcome.first_step_unix = float(raw["first_step_unix"])
            self.outcome.loop_started_unix = raw.get("loop_started_unix")
        metrics = {
            k: float(v)
            for k, v in raw.items()
            if isinstance(v, (int, float)) and k not in INTERNAL_METRICS
        }
        epoch = int(metrics.get("epoch", len(self.outcome.history) + 1))
        self.outcome.history.append(metrics)
        if "epoch_seconds" in metrics:
            self.seconds.append(metrics["epoch_seconds"])
        total = self.plan.epochs
        left = max(total - epoch, 0)
        recent = self.seconds[1:] or self.seconds  # the first epoch pays for start-up
        eta = round(sum(recent) / len(recent) * left) if recent else None
        progress = Progress(
            stage="training",
            epoch=epoch,
            totalEpochs=total,
            percent=min(100, int(100 * epoch / total)),
            samplesPerSecond=metrics.get("samples_per_second"),
            etaSeconds=0 if raw.get("stopped_early") else eta,
        )
        self.reporter.epoch(progress, metrics)
        if item["checkpoint"]:
            uri = self.store.uri_of(
                CHECKPOINTS, self.plan.name, posixpath.basename(item["checkpoint"])
            )
            self.outcome.last_checkpoint_uri, self.outcome.last_checkpoint_epoch = uri, epoch
            self.reporter.checkpoint(uri, epoch)


def _user_error(exc: BaseException) -> UserError | None:
    """A UserError raised inside a worker (a custom loop's SpecError, say)."""
    return next((e for e in _causes(exc) if isinstance(e, UserError)), None)


@dataclass(frozen=True)
class MemoryKill:
    """Ray's memory monitor stopped a process: on which node, and how full it was."""

    node_ip: str | None
    usage: str | None  # "1.92GB / 2.00GB"


#: Ray's memory monitor names the node and its usage: "Memory on the node (IP: 10.0.0.5,
#: ID: ...) where the task ... was running was 1.92GB / 2.00GB (0.96), which exceeds ...".
_OOM_NODE = re.compile(r"\(IP: ([0-9A-Fa-f.:]+)")
_OOM_USAGE = re.compile(r"was (\d+(?:\.\d+)?\s*[KMGT]i?B) / (\d+(?:\.\d+)?\s*[KMGT]i?B)")


def memory_kill(exc: BaseException) -> MemoryKill | None:
    """Whether Ray stopped a process for memory, and where. Its memory monitor's kill
    arrives as an ``OutOfMemoryError`` or, through a health check, only as text."""
    import ray.exceptions

    for cause in _causes(exc):
        text = str(cause)
        said = any(words in text.lower() for words in ("out of memory", "running low on memory"))
        if isinstance(cause, ray.exceptions.OutOfMemoryError) or said:
            node, usage = _OOM_NODE.search(text), _OOM_USAGE.search(text)
            return MemoryKill(node and node[1], usage and f"{usage[1]} / {usage[2]}")
    return None


def out_of_memory_message(kill: MemoryKill, head_ip: str | None, pods: dict[str, str]) -> str:
    """Blame the pod that ran out, with the field to raise. ``head_ip`` is the driver's
    node in a cluster (None locally, where one machine is head and worker); ``pods`` maps
    node IPs to pod names (a Ray pod's hostname is its name)."""
    usage = f" ({kill.usage})" if kill.usage else ""
    pod = pods.get(kill.node_ip or "")
    if head_ip is not None and kill.node_ip == head_ip:
        name = f" {pod}" if pod else ""
        return (
            f"the Ray head pod{name} ran out of memory{usage}: Ray's memory monitor stopped "
            "a process on it (the head holds the driver, the data stage and Ray Train's "
            f"controller); raise {HEAD_RESOURCES_FIELD}.memory"
        )
    where = f" on pod {pod}" if pod else ""
    return (
        f"a training worker{where} ran out of memory{usage}: Ray's memory monitor stopped "
        f"it near its pod's limit; raise {WORKER_RESOURCES_FIELD}.memory, or lower "
        "batchSize or the model's size"
    )


def _ray_nodes() -> tuple[str | None, dict[str, str]]:
    """The driver's node IP when Ray has several nodes (a cluster), and every node's pod."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    pods = {n["NodeManagerAddress"]: n.get("NodeManagerHostname", "") for n in nodes}
    head = ray.util.get_node_ip_address() if len(nodes) > 1 else None
    return head, pods


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its workers' failures and everything they were caused by."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        failures = getattr(current, "worker_failures", None)
        linked = [current.__cause__, current.__context__, getattr(current, "cause", None),
                  *(failures.values() if isinstance(failures, dict) else ())]  # fmt: skip
        pending += [e for e in linked if isinstance(e, BaseException)]


def _first_line(exc: BaseException) -> str:
    failures = getattr(exc, "worker_failures", None)
    if isinstance(failures, dict) and failures:
        rank, failure = sorted(failures.items())[0]
        cause = getattr(failure, "cause", None) or failure
        text = str(cause).strip().splitlines()
        return f"worker {rank}: {type(cause).__name__}: {text[-1] if text else ''}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def loop_config(
    plan: TrainPlan, store: Store, resume: Resume, events: str, *, in_process: bool
) -> dict[str, Any]:
    """What every worker's loop receives (the keys are documented in ``train_loop``)."""
    config: dict[str, Any] = {"plan": plan.to_dict(), OUTPUT_KEY: store.uri}
    if resume.checkpoint:
        config[RESUME_KEY] = resume.checkpoint
    if in_process:
        config[IN_PROCESS_KEY] = events
    return config


def _training_failure(exc: BaseException) -> UserError | TrainingFailed:
    """What a failed fit means: the user's mistake, a worker out of memory, or a crash."""
    user = _user_error(exc)
    if user is not None:
        return user
    kill = memory_kill(exc)
    if kill is not None:
        return TrainingFailed(out_of_memory_message(kill, *_ray_nodes()), out_of_memory=True)
    return TrainingFailed(_first_line(exc))


def split_for_workers(prepared: PreparedData, workers: int) -> dict[str, list[Any]]:
    """Each worker's shard of both (materialized) splits, equal in rows so that every rank
    runs as many steps (DDP waits for all). Split here instead of by Ray Train: its
    streaming split starts a dataset manager and a coordinator per dataset on the head, new
    processes that cost seconds before the first step (BENCHMARKS.md, cluster start)."""
    if workers <= 1:
        return {"train": [prepared.train], "validation": [prepared.validation]}
    return {
        "train": prepared.train.split(workers, equal=True),
        "validation": prepared.validation.split(workers, equal=True),
    }


def run_training(
    plan: TrainPlan,
    prepared: PreparedData,
    sizing: Sizing,
    store: Store,
    reporter: Reporter,
    *,
    train_function: Callable[[dict[str, Any]], None],
    max_failures: int,
    resume: Resume,
) -> TrainOutcome:
    """Fit with Ray Train: ``sizing.workers`` worker actors, or, when ``sizing.in_process``,
    Ray Train's local mode (``num_workers=0``), the same loop in this process."""
    storage_path, filesystem = store.ray_storage(CHECKPOINTS)
    handle, events = tempfile.mkstemp(prefix="kubetrain-events-", suffix=".jsonl")
    os.close(handle)
    config = loop_config(plan, store, resume, events, in_process=sizing.in_process)
    datasets: dict[str, Any] | None = {"train": prepared.train, "validation": prepared.validation}
    if train_function is train_loop_per_worker:
        config[SHARDS_KEY] = split_for_workers(prepared, 1 if sizing.in_process else sizing.workers)
        datasets = None
    trainer = TorchTrainer(
        train_function,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=0 if sizing.in_process else sizing.workers,
            use_gpu=sizing.use_gpu,
            resources_per_worker=sizing.resources_per_worker(),
        ),
        run_config=ray.train.RunConfig(
            name=plan.name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=plan.checkpoint_keep),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            callbacks=[EventForwarder(events)],
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
        datasets=datasets,
    )
    outcome = TrainOutcome(checkpoint=None)
    pump = EpochPump(events, reporter, plan, store, outcome)
    pump.start()
    try:
        result = trainer.fit()
    except UserError:
        raise  # local mode: the loop's own error, unwrapped
    except Exception as exc:
        if not (sizing.in_process or isinstance(exc, ray.train.TrainingFailedError)):
            raise
        failure = _training_failure(exc)
        if isinstance(failure, UserError):
            raise failure from None  # one line for the user, not Ray's traceback
        raise failure from exc
    finally:
        pump.drain()
        os.unlink(events)
    outcome.checkpoint = result.checkpoint
    return outcome
