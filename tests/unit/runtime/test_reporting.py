"""Reporters: JSON lines the operator can parse, the registry, isolation of failures."""

from __future__ import annotations

import io

import pytest

from kubetrain.api.contract import parse_event
from kubetrain.api.v1alpha1 import Artifacts, DataStats, Progress, RuleDrop, TrainingJob
from kubetrain.errors import UserError
from kubetrain_runtime.reporting import (
    CollectingReporter,
    Guarded,
    LogReporter,
    Reporter,
    create_reporter,
)

pytestmark = pytest.mark.unit

JOB = TrainingJob.model_validate(
    {
        "apiVersion": "kubetrain.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "demo"},
        "spec": {"data": {"source": {"builtin": {"name": "iris"}}}, "model": {"type": "mlp"}},
    }
)


def test_log_reporter_writes_one_parsable_event_per_line():
    out = io.StringIO()
    reporter = LogReporter(JOB, stream=out)
    reporter.stage("data", "builtin iris")
    reporter.data_ready(
        DataStats(rowsRead=10, droppedByRule=[RuleDrop(rule="dropNulls", dropped=2)]), {}
    )
    reporter.epoch(
        Progress(stage="training", epoch=1, totalEpochs=2, percent=50), {"train_loss": 0.5}
    )
    reporter.finished(True, {"val_accuracy": 0.9}, Artifacts(outputUri="/tmp/x"), "done")
    events = [parse_event(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["stage", "data_ready", "epoch", "finished"]
    assert events[1]["dataStats"]["droppedByRule"] == [{"rule": "dropNulls", "dropped": 2}]
    assert events[2]["progress"]["epoch"] == 1 and events[2]["metrics"] == {"train_loss": 0.5}
    assert (
        events[3]["artifacts"] == {"outputUri": "/tmp/x", "plots": []}
        and events[3]["job"] == "demo"
    )
    assert parse_event("ordinary log line") is None


def test_registry_builds_and_fans_out():
    reporter = create_reporter("collect,collect", JOB)
    reporter.note("hello")
    assert all(r.of("note") == [{"message": "hello"}] for r in reporter.reporters)


@pytest.mark.parametrize(
    ("names", "text"), [("fancy", "unknown reporter 'fancy'"), ("", "at least one")]
)
def test_registry_rejects_unknown_names(names, text):
    with pytest.raises(UserError, match=text):
        create_reporter(names, JOB)


class Broken(Reporter):
    def epoch(self, progress, metrics):
        raise RuntimeError("API down")


def test_a_failing_reporter_does_not_stop_the_others():
    collect = CollectingReporter()
    guarded = Guarded(Broken(), collect)
    guarded.epoch(Progress(epoch=1), {"epoch": 1.0})
    guarded.epoch(Progress(epoch=2), {"epoch": 2.0})
    assert collect.epochs == [1, 2]


def test_the_plain_display_names_every_step_with_its_time():
    """What a CI log of ``kubetrain run`` shows: each stage and step, then how long it took
    (no silent minute), and the time per stage in the summary."""
    from rich.console import Console

    from kubetrain_runtime.rich_reporter import RichReporter

    out = io.StringIO()
    reporter = RichReporter(JOB, Console(file=out, width=120, emoji=False))
    reporter.step("starting Ray", "a private Ray for this run")
    reporter.stage("data", "builtin iris")
    reporter.step("statistics")
    reporter.step("splitting and preprocessing")
    reporter.data_ready(DataStats(rowsRead=150, rowsAfterCleaning=150, trainRows=120,
                                  validationRows=30), {})  # fmt: skip
    reporter.stage("training", "mlp/classification, 1 worker(s) × 2 CPU")
    reporter.epoch(Progress(stage="training", epoch=1, totalEpochs=1), {"train_loss": 0.5})
    reporter.stage("finishing", "/tmp/out")
    metrics = {"epoch": 1.0, "starting_ray_seconds": 1.5, "training_seconds": 0.25}
    reporter.finished(True, metrics, Artifacts(), "1 epochs")
    text = out.getvalue()
    order = [
        "Starting Ray",
        "Reading and cleaning",
        "Statistics",
        "Splitting and preprocessing",
        "Starting training",
        "Training",
        "Writing outputs",
    ]
    positions = [text.index(line) for line in order]
    assert positions == sorted(positions), text
    for line in order[:-1]:
        assert f"{line} took " in text, f"{line} has no time: {text}"
    assert "starting Ray (s)" in text and "training (s)" in text


def test_stage_seconds_come_from_the_timeline():
    from kubetrain_runtime.job import stage_seconds

    timeline = {"ray_ready": 1.0, "data_ready": 3.5, "training_started": 3.6,
                "first_step": 4.6, "training_finished": 6.0, "finished": 7.0}  # fmt: skip
    assert stage_seconds(timeline) == {
        "starting_ray_seconds": 1.0,
        "preparing_data_seconds": 2.5,
        "starting_training_seconds": 1.0,
        "training_seconds": 1.4,
        "writing_outputs_seconds": 1.0,
    }
    assert "training_seconds" not in stage_seconds({"ray_ready": 1.0, "training_finished": 2.0})
