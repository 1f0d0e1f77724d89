"""``kubetrain watch`` replays stored statuses into the local display: each change once, in
the order the runtime reported it, whatever versions the watch happened to see."""

from __future__ import annotations

from typing import Any

import pytest

from kubetrain.watching import StatusReplay

pytestmark = pytest.mark.unit


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def stage(self, name: Any, detail: str = "") -> None:
        self.calls.append(("stage", name))

    def step(self, name: str, detail: str = "") -> None:
        self.calls.append(("step", name))

    def data_ready(self, stats: Any, report: dict[str, Any]) -> None:
        self.calls.append(("data", stats.rowsRead))

    def epoch(self, progress: Any, metrics: dict[str, float]) -> None:
        self.calls.append(("epoch", progress.epoch))

    def finished(self, succeeded: bool, metrics: Any, artifacts: Any, message: str) -> None:
        self.calls.append(("finished", succeeded))


def job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "j"}, "status": status}


DATA = {"rowsRead": 150, "rowsAfterCleaning": 150, "trainRows": 120, "validationRows": 30}


def test_every_change_is_shown_once_in_order():
    shown = Recorder()
    replay = StatusReplay(shown)
    versions = [
        job(), job(phase="Pending", reason="Scheduling"), job(phase="Pending", reason="Scheduling"),
        job(phase="Provisioning"), job(phase="Running", progress={"stage": "data"}),
        job(phase="Running", progress={"stage": "data"}, dataStats=DATA),
        job(phase="Running", progress={"stage": "training", "epoch": 1}, dataStats=DATA),
        job(phase="Running", progress={"stage": "training", "epoch": 1}, dataStats=DATA),
        job(phase="Running", progress={"stage": "training", "epoch": 2}, dataStats=DATA),
    ]  # fmt: skip
    assert not any(replay.update(v) for v in versions)
    assert replay.update(job(phase="Succeeded", progress={"stage": "finishing", "epoch": 2}))
    assert shown.calls == [
        ("step", "Waiting for the operator"), ("step", "Waiting for pods"),
        ("step", "Starting the Ray cluster"), ("stage", "data"), ("data", 150),
        ("stage", "training"), ("epoch", 1), ("epoch", 2), ("stage", "finishing"),
        ("finished", True),
    ]  # fmt: skip


def test_a_watch_that_starts_late_still_shows_the_data_stage_first():
    shown = Recorder()
    StatusReplay(shown).update(job(phase="Failed", progress={"stage": "training"}, dataStats=DATA))
    assert shown.calls == [("stage", "data"), ("data", 150), ("stage", "training"),
                           ("finished", False)]  # fmt: skip
