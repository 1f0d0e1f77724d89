"""Progress reporting: one small interface, several implementations.

The runtime calls a ``Reporter`` and never knows which one it has: a live terminal display
(``rich``), JSON lines on stdout that the operator parses from the Ray job's logs
(``log``), a patcher of ``TrainingJob.status`` (``status``, written by the operator side in
``kubetrain_runtime.status_reporter``) or a collector for tests. Payloads are the API's own
status models, so every implementation speaks the CRD's vocabulary.

A reporter is made by ``create_reporter("log,status", job)``: each name maps to
``module:callable`` in ``REPORTERS``, called with the TrainingJob. Calls are serialized and
a failing reporter is logged, never allowed to fail the training run.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from typing import Any, Literal, TextIO

from kubetrain.api.contract import EventKind, event_line
from kubetrain.api.v1alpha1 import Artifacts, DataStats, Progress, TrainingJob
from kubetrain.errors import UserError

Stage = Literal["data", "training", "finishing"]

log = logging.getLogger(__name__)

REPORTERS: dict[str, str] = {
    "rich": "kubetrain_runtime.rich_reporter:RichReporter",
    "log": "kubetrain_runtime.reporting:LogReporter",
    "status": "kubetrain_runtime.status_reporter:StatusReporter",
    "collect": "kubetrain_runtime.reporting:CollectingReporter",
}


class Reporter:
    """What the runtime tells the outside world. Every method has a no-op default, so an
    implementation overrides only the events it cares about."""

    def stage(self, name: Stage, detail: str = "") -> None:
        """A new stage began: data, training or finishing (``detail``: a short line)."""

    def step(self, name: str, detail: str = "") -> None:
        """A named step inside the current stage began (starting Ray, reading and
        cleaning, ...): the live display shows each with its elapsed time."""

    def note(self, message: str) -> None:
        """Something the user should know that is not an error (a clamped request)."""

    def data_ready(self, stats: DataStats, report: dict[str, Any]) -> None:
        """The data is cleaned, split and preprocessed; ``report`` is the data report."""

    def epoch(self, progress: Progress, metrics: dict[str, float]) -> None:
        """An epoch finished; ``metrics`` are combined over all workers."""

    def checkpoint(self, uri: str, epoch: int) -> None:
        """A checkpoint was persisted after ``epoch``."""

    def finished(
        self, succeeded: bool, metrics: dict[str, float], artifacts: Artifacts, message: str
    ) -> None:
        """The run ended; ``message`` is the one line to show (the error, if it failed)."""


class LogReporter(Reporter):
    """One JSON object per event on stdout, after ``KUBETRAIN_EVENT ``, for log parsers."""

    def __init__(self, job: TrainingJob | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.job = job.metadata.name if job else None
        self.task = job.spec.model.effective_task if job else "classification"

    def _emit(self, event: EventKind, **payload: Any) -> None:
        self.stream.write(event_line(event, self.job, **payload))
        self.stream.flush()

    def stage(self, name: Stage, detail: str = "") -> None:
        self._emit("stage", stage=name, detail=detail)

    def step(self, name: str, detail: str = "") -> None:
        self._emit("step", step=name, detail=detail)

    def note(self, message: str) -> None:
        self._emit("note", message=message)

    def data_ready(self, stats: DataStats, report: dict[str, Any]) -> None:
        self._emit("data_ready", dataStats=stats.model_dump(mode="json", exclude_none=True))

    def epoch(self, progress: Progress, metrics: dict[str, float]) -> None:
        self._emit(
            "epoch", progress=progress.model_dump(mode="json", exclude_none=True), metrics=metrics
        )

    def checkpoint(self, uri: str, epoch: int) -> None:
        self._emit("checkpoint", uri=uri, epoch=epoch)

    def finished(
        self, succeeded: bool, metrics: dict[str, float], artifacts: Artifacts, message: str
    ) -> None:
        self._emit(
            "finished",
            succeeded=succeeded,
            keyMetric=key_metric(self.task, metrics),
            metrics=metrics,
            artifacts=artifacts.model_dump(mode="json", exclude_none=True),
            message=message,
        )


def key_metric(task: str, metrics: dict[str, float]) -> str | None:
    """``status.keyMetric``: the task's headline metric as ``name=value``."""
    from kubetrain_runtime.plan import KEY_METRIC

    name = KEY_METRIC.get(task, ("val_loss", "min"))[0]
    return f"{name}={metrics[name]:.4g}" if name in metrics else None


class CollectingReporter(Reporter):
    """Keeps every event in order, for tests: ``events`` holds (name, payload) pairs."""

    def __init__(self, job: TrainingJob | None = None) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def stage(self, name: Stage, detail: str = "") -> None:
        self.events.append(("stage", {"name": name, "detail": detail}))

    def step(self, name: str, detail: str = "") -> None:
        self.events.append(("step", {"name": name, "detail": detail}))

    def note(self, message: str) -> None:
        self.events.append(("note", {"message": message}))

    def data_ready(self, stats: DataStats, report: dict[str, Any]) -> None:
        self.events.append(("data_ready", {"stats": stats, "report": report}))

    def epoch(self, progress: Progress, metrics: dict[str, float]) -> None:
        self.events.append(("epoch", {"progress": progress, "metrics": metrics}))

    def checkpoint(self, uri: str, epoch: int) -> None:
        self.events.append(("checkpoint", {"uri": uri, "epoch": epoch}))

    def finished(
        self, succeeded: bool, metrics: dict[str, float], artifacts: Artifacts, message: str
    ) -> None:
        self.events.append(
            (
                "finished",
                {
                    "succeeded": succeeded,
                    "metrics": metrics,
                    "artifacts": artifacts,
                    "message": message,
                },
            )
        )

    def of(self, name: str) -> list[dict[str, Any]]:
        return [payload for event, payload in self.events if event == name]

    @property
    def epochs(self) -> list[int]:
        return [int(e["metrics"]["epoch"]) for e in self.of("epoch")]

    @property
    def result(self) -> dict[str, Any]:
        done = self.of("finished")
        if not done:
            raise AssertionError("the run reported no 'finished' event")
        return done[-1]


class Guarded(Reporter):
    """Serializes calls (epoch events come from a background thread) and fans them out;
    an exception in one reporter is logged once per event type and otherwise ignored."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters
        self._lock = threading.Lock()
        self._warned: set[tuple[int, str]] = set()

    def _call(self, method: str, *args: Any) -> None:
        with self._lock:
            for index, reporter in enumerate(self.reporters):
                try:
                    getattr(reporter, method)(*args)
                except Exception:
                    if (index, method) not in self._warned:
                        self._warned.add((index, method))
                        log.warning(
                            "reporter %s failed in %s",
                            type(reporter).__name__,
                            method,
                            exc_info=True,
                        )

    def stage(self, name: Stage, detail: str = "") -> None:
        self._call("stage", name, detail)

    def step(self, name: str, detail: str = "") -> None:
        self._call("step", name, detail)

    def note(self, message: str) -> None:
        self._call("note", message)

    def data_ready(self, stats: DataStats, report: dict[str, Any]) -> None:
        self._call("data_ready", stats, report)

    def epoch(self, progress: Progress, metrics: dict[str, float]) -> None:
        self._call("epoch", progress, metrics)

    def checkpoint(self, uri: str, epoch: int) -> None:
        self._call("checkpoint", uri, epoch)

    def finished(
        self, succeeded: bool, metrics: dict[str, float], artifacts: Artifacts, message: str
    ) -> None:
        self._call("finished", succeeded, metrics, artifacts, message)


def _load(name: str) -> Any:
    if name not in REPORTERS:
        raise UserError(
            f"unknown reporter {name!r}; choose from {', '.join(REPORTERS)}", field="--reporter"
        )
    module_name, attr = REPORTERS[name].split(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"reporter {name!r} is not available: {exc}", field="--reporter") from None


def create_reporter(names: str, job: TrainingJob) -> Guarded:
    """``names``: one registry name, or several separated by commas (``log,status``)."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise UserError("name at least one reporter", field="--reporter")
    return Guarded(*(_load(name)(job) for name in wanted))
