"""The whole run, the same locally and in a cluster: data → plan → train → outputs, with
every step told to the reporter. ``local.py`` and ``entrypoint.py`` only choose the Ray,
the reporter and the output location."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetrain.api.contract import FINAL_METRIC
from kubetrain.api.shapes import input_shape
from kubetrain.api.v1alpha1 import (
    Artifacts,
    DataSource,
    TrainingJob,
    TrainingJobSpec,
    is_object_store,
)
from kubetrain.errors import SpecError, UserError
from kubetrain_runtime import models
from kubetrain_runtime.data.pipeline import PreparedData, prepare
from kubetrain_runtime.plan import (
    KEY_METRIC,
    Sizing,
    TrainPlan,
    fingerprint,
    size_workers,
    trains_in_process,
)
from kubetrain_runtime.ray_env import RaySession
from kubetrain_runtime.reporting import Reporter
from kubetrain_runtime.storage import Store, check_writable, use_storage_settings
from kubetrain_runtime.trainer import (
    TrainingFailed,
    TrainOutcome,
    load_train_function,
    prepare_resume,
    run_training,
)

#: Shards up to this size (per worker) are kept in memory after the first epoch.
CACHE_LIMIT_BYTES = int(float(os.environ.get("KUBETRAIN_CACHE_MB", "512")) * 2**20)


def process_started() -> float:
    """When this process started (Unix time): ``kubetrain run`` was typed then. Linux keeps
    it in /proc, in clock ticks since boot; elsewhere, now is the best guess."""
    try:
        with open("/proc/self/stat") as handle:
            after_name = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        age = uptime - int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        return time.time() - age
    except (OSError, ValueError, IndexError):
        return time.time()


@dataclass
class RunOptions:
    output: str
    manifest_dir: Path
    workers: int | None = None
    local: bool = True
    #: When the user started the run (process start), for the time to the first step.
    started: float = field(default_factory=time.time)
    #: Where the driver's own output is copied (``status.artifacts.logUri``), if anywhere.
    log_uri: str | None = None
    #: The spec's own train function as ``preflight`` loaded it (None: loaded here).
    train_function: Callable[..., Any] | None = None


@dataclass
class RunSummary:
    succeeded: bool
    message: str
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: Artifacts = field(default_factory=Artifacts)
    history: list[dict[str, float]] = field(default_factory=list)
    #: A training worker ran out of memory (the process exits with ``EXIT_OUT_OF_MEMORY``).
    out_of_memory: bool = False


def build_plan(job: TrainingJob, prepared: PreparedData, sizing: Sizing) -> TrainPlan:
    spec = job.spec
    model, training = spec.model, spec.training
    task = model.effective_task
    custom = bool(training.trainFunction)
    try:
        shape = input_shape(model, prepared.num_features, prepared.sample_shape)
    except SpecError:
        if not custom:
            raise
        shape = [prepared.num_features]  # a custom loop brings its own model
    outputs = {
        "classification": len(prepared.class_names or []),
        "regression": prepared.num_outputs or 1,
    }.get(task, prepared.num_features)
    stopping = training.earlyStopping
    return TrainPlan(
        name=job.metadata.name,
        model_type=model.type,
        task=task,
        section=model.section().model_dump(mode="json"),
        input_shape=shape,
        num_features=prepared.num_features,
        num_outputs=outputs,
        epochs=training.epochs,
        batch_size=training.batchSize,
        optimizer=training.optimizer.model_dump(mode="json"),
        seed=training.seed,
        fingerprint=fingerprint(spec),
        class_names=prepared.class_names,
        likelihood=prepared.likelihood,
        early_stopping=stopping.model_dump(mode="json") if stopping else None,
        checkpoint_every=training.checkpoint.everyEpochs,
        checkpoint_keep=training.checkpoint.keep,
        threads=sizing.threads,
        use_gpu=sizing.use_gpu,
        mixed_precision=training.mixedPrecision and sizing.use_gpu,
        # A second epoch reads a small shard from memory; one epoch would only pay for it.
        cache_batches=training.epochs > 1
        and prepared.size_bytes / sizing.workers <= CACHE_LIMIT_BYTES,
        feature_names=prepared.features.vector_layout,
        label=prepared.features.label,
        input_transform=prepared.input_transform,
    )


#: Summary durations: (name, milestone it starts at, milestone it ends at).
STAGES = (
    ("starting_ray", None, "ray_ready"),
    ("preparing_data", "ray_ready", "data_ready"),
    ("starting_training", "training_started", "first_step"),
    ("starting_train_workers", "training_started", "loop_started"),
    ("training", "first_step", "training_finished"),
    ("writing_outputs", "training_finished", "finished"),
)


def stage_seconds(timeline: dict[str, float]) -> dict[str, float]:
    """``<stage>_seconds`` for each stage whose milestones were reached (``starting_ray``
    counts from the process start: imports included)."""
    out: dict[str, float] = {}
    for name, start, end in STAGES:
        if end in timeline and (start is None or start in timeline):
            out[f"{name}_seconds"] = round(timeline[end] - (timeline[start] if start else 0), 2)
    return out


def _headline(plan: TrainPlan, history: list[dict[str, float]], stopped_early: bool) -> str:
    if not history:
        return "finished"
    last = history[-1]
    key = KEY_METRIC[plan.task][0]
    done = f"{int(last.get('epoch', len(history)))} epochs" + (
        " (stopped early)" if stopped_early else ""
    )
    return f"{done}, {key}={last[key]:.4g}" if key in last else done


def preflight(
    job: TrainingJob, manifest_dir: Path, output: str | None = None
) -> Callable[..., Any] | None:
    """Checks that need no Ray: run before starting it, mistakes fail in a second (a missing
    file, a bucket that is missing, refused or read-only). Returns the spec's own train
    function, loaded (``RunOptions.train_function``)."""
    spec = job.spec
    use_storage_settings(spec.storage)
    train_function = load_train_function(spec.training.trainFunction)
    if spec.data.source.uri is not None:
        from kubetrain_runtime.data.read import check_uri

        check_uri(spec.data.source.uri, manifest_dir)
    if output is not None and is_object_store(output):
        check_writable(Store(output), "spec.output.uri")
    return train_function


class Milestones:
    """Seconds from the start of the run (of the process, for the CLI) to each milestone."""

    def __init__(self, started: float) -> None:
        self.began = time.time()
        self.origin = min(started, self.began)
        self.timeline: dict[str, float] = {}

    def mark(self, name: str, at: float | None = None) -> None:
        self.timeline[name] = round((at or time.time()) - self.origin, 2)


def source_description(source: DataSource) -> str:
    """The data stage's first line: the file, or the bundled or generated dataset."""
    if source.uri:
        return source.uri.path
    return f"builtin {source.builtin.name}" if source.builtin else "generated sine"


def run_notes(
    spec: TrainingJobSpec, sizing: Sizing, session: RaySession, store: Store
) -> list[str]:
    """What the user should know before training starts (sizing, no GPU, local outputs on
    a cluster of several nodes)."""
    notes = list(sizing.notes)
    if spec.training.mixedPrecision and not sizing.use_gpu:
        notes.append("mixedPrecision needs a GPU: training in float32")
    nodes = session.available.nodes
    if not session.local and nodes > 1 and store.is_local:
        notes.append(
            f"output {store.uri} is a local path on a {nodes}-node cluster: "
            "checkpoints need shared storage (set spec.output.uri)"
        )
    return notes


def training_detail(plan: TrainPlan, sizing: Sizing) -> str:
    gpu = f" + {sizing.gpu:g} GPU" if sizing.gpu else ""
    return f"{plan.model_type}/{plan.task}, {sizing.workers} worker(s) × {sizing.cpu:g} CPU{gpu}"


def final_metrics(history: list[dict[str, float]], timeline: dict[str, float]) -> dict[str, float]:
    """The last epoch's metrics with the time of each stage, the wall time and the time
    to the first step."""
    final = dict(history[-1]) if history else {}
    final |= stage_seconds(timeline)
    final[FINAL_METRIC] = timeline["finished"]
    if "first_step" in timeline:
        final["time_to_first_step_seconds"] = timeline["first_step"]
    return final


def stopped_early(outcome: TrainOutcome, plan: TrainPlan) -> bool:
    return bool(outcome.history and outcome.history[-1].get("epoch", plan.epochs) < plan.epochs)


def run_job(
    job: TrainingJob, reporter: Reporter, options: RunOptions, session: RaySession
) -> RunSummary:
    """Run one TrainingJob. UserErrors propagate (after a ``finished`` event carrying their
    message); a failed training run returns a summary with ``succeeded=False``."""
    store = Store(options.output)
    failed = Artifacts(outputUri=store.uri, logUri=options.log_uri)
    try:
        return _run(job, reporter, options, session, store)
    except UserError as exc:
        reporter.finished(False, {}, failed, str(exc))
        raise
    except TrainingFailed as exc:
        message = f"training failed: {exc}"
        reporter.finished(False, {}, failed, message)
        return RunSummary(False, message, out_of_memory=exc.out_of_memory)
    except Exception as exc:
        reporter.finished(False, {}, failed, f"internal error: {type(exc).__name__}: {exc}")
        raise


def _run(
    job: TrainingJob, reporter: Reporter, options: RunOptions, session: RaySession, store: Store
) -> RunSummary:
    spec = job.spec
    clock = Milestones(options.started)
    clock.mark("ray_ready", clock.began)
    train_function = options.train_function or load_train_function(spec.training.trainFunction)
    in_process = options.local and trains_in_process(
        spec.training, workers=options.workers, private_ray=session.private
    )
    sizing = size_workers(
        spec.training, session.available, workers=options.workers, local=options.local,
        in_process=in_process,
    )  # fmt: skip
    reporter.stage("data", source_description(spec.data.source))
    prepared = prepare(spec, options.manifest_dir, on_step=reporter.step)
    reporter.data_ready(prepared.stats, prepared.report)
    clock.mark("data_ready")
    plan = build_plan(job, prepared, sizing)
    if not spec.training.trainFunction:
        models.dry_run(plan)
    for note in run_notes(spec, sizing, session, store):
        reporter.note(note)
    resume = prepare_resume(store, plan)
    if resume.message:
        reporter.note(resume.message)
    reporter.stage("training", training_detail(plan, sizing))
    clock.mark("training_started")
    outcome = run_training(
        plan, prepared, sizing, store, reporter, train_function=train_function,
        max_failures=spec.training.maxFailures, resume=resume,
    )  # fmt: skip
    clock.mark("training_finished")
    if outcome.first_step_unix is not None:
        clock.mark("first_step", outcome.first_step_unix)
    if outcome.loop_started_unix is not None:
        clock.mark("loop_started", outcome.loop_started_unix)
    reporter.stage("finishing", store.uri)
    from kubetrain_runtime.outputs import write_outputs

    artifacts, history = write_outputs(
        store,
        job,
        plan,
        prepared,
        outcome,
        resumed_from=resume.epoch,
        timeline=clock.timeline,
        timeline_origin=clock.origin,
    )
    clock.mark("finished")
    final = final_metrics(history, clock.timeline)
    message = _headline(plan, history, stopped_early(outcome, plan))
    artifacts.logUri = options.log_uri
    reporter.finished(True, final, artifacts, message)
    return RunSummary(True, message, final, artifacts, history)
