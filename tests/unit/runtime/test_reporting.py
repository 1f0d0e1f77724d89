"""Reporters: JSON lines the operator can parse, the registry, isolation of failures."""

from __future__ import annotations

import io

import pytest

from kubetrain.api.v1alpha1 import Artifacts, DataStats, Progress, RuleDrop, TrainingJob
from kubetrain.errors import UserError
from kubetrain_runtime.reporting import (
    CollectingReporter,
    Guarded,
    LogReporter,
    Reporter,
    create_reporter,
    parse_event,
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
