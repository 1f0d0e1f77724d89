"""``kubetrain watch``: a cluster job's stored status, replayed into the same display that
``kubetrain run`` draws locally. Each new version of the job is compared with the last
one seen and turned into the reporter calls the runtime made (a new stage, the data
statistics, an epoch, the end), so both commands show a job the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from kubetrain.api.v1alpha1 import (
    TERMINAL_PHASES,
    Artifacts,
    DataStats,
    Progress,
    TrainingJobStatus,
)

#: Phases before the runtime reports: shown as one waiting line each, with the reason
#: (no phase yet: no operator has looked at the job).
_WAITING: dict[str | None, str] = {
    None: "Waiting for the operator",
    "Pending": "Waiting for pods",
    "Provisioning": "Starting the Ray cluster",
    "Retrying": "Retrying",
    "Suspended": "Suspended",
}


class Display(Protocol):
    """The part of the runtime's Reporter that a replay drives."""

    def stage(self, name: Any, detail: str = "") -> None: ...
    def step(self, name: str, detail: str = "") -> None: ...
    def data_ready(self, stats: DataStats, report: dict[str, Any]) -> None: ...
    def epoch(self, progress: Progress, metrics: dict[str, float]) -> None: ...
    def finished(
        self, succeeded: bool, metrics: dict[str, float], artifacts: Artifacts, message: str
    ) -> None: ...


class StatusReplay:
    """Feeds successive stored statuses of one job to a display, each change once."""

    def __init__(self, display: Display) -> None:
        self.display = display
        self.phase: tuple[str | None, str | None] | None = None
        self.stage: str | None = None
        self.epoch: int | None = None
        self.data_shown = False

    def update(self, stored: Mapping[str, Any]) -> bool:
        """Show what changed; True once the job reached a terminal phase."""
        status = TrainingJobStatus.model_validate(stored.get("status") or {})
        phase = status.phase
        if phase in _WAITING and (phase, status.reason) != self.phase:
            self.display.step(_WAITING[phase], status.message or status.reason or "")
        self.phase = (phase, status.reason)
        self._progress(status)
        if phase in TERMINAL_PHASES:
            self.display.finished(
                phase == "Succeeded",
                dict(status.metrics),
                status.artifacts or Artifacts(),
                status.message or phase,
            )
            return True
        return False

    def _progress(self, status: TrainingJobStatus) -> None:
        progress = status.progress
        if progress is None:
            return
        stage = progress.stage
        if stage and stage != self.stage:
            if stage != "data" and status.dataStats and not self.data_shown:
                if self.stage != "data":  # first seen past the data stage: show it anyway
                    self.display.stage("data")
                self._data(status.dataStats)
            self.stage = stage
            self.display.stage(stage)
        if progress.epoch and progress.epoch != self.epoch:
            self.epoch = progress.epoch
            self.display.epoch(progress, dict(status.metrics))

    def _data(self, stats: DataStats) -> None:
        self.data_shown = True
        if stats.rowsRead is not None:
            self.display.data_ready(stats, {})
