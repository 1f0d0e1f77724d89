"""The operator–runtime contract (``kubetrain/api/contract.py``), from both ends: what the
runtime writes is what the operator reads, for every event kind, and each side keeps to its
own status fields, environment and output location."""

from __future__ import annotations

import io
import json
import typing

import pytest

from kubetrain.api import contract
from kubetrain.api.v1alpha1 import (
    Artifacts,
    DataStats,
    Progress,
    RuleDrop,
    TrainingJob,
    TrainingJobStatus,
)
from kubetrain_operator import builders
from kubetrain_operator.config import OperatorConfig
from kubetrain_operator.naming import JobRef
from kubetrain_operator.observe import FinalReport, parse_final_report
from kubetrain_operator.validation import resolve_placement
from kubetrain_runtime import entrypoint, local
from kubetrain_runtime.reporting import LogReporter
from kubetrain_runtime.status_reporter import StatusReporter

pytestmark = pytest.mark.unit

JOB = TrainingJob.model_validate({
    "apiVersion": "kubetrain.io/v1alpha1", "kind": "TrainingJob",
    "metadata": {"name": "digits", "namespace": "ml"},
    "spec": {"data": {"source": {"builtin": {"name": "digits"}}, "label": "target"},
             "model": {"type": "mlp"}},
})  # fmt: skip
STATS = DataStats(rowsRead=10, rowsAfterCleaning=9, trainRows=7, validationRows=2,
                  droppedByRule=[RuleDrop(rule="dropNulls", dropped=1)])  # fmt: skip
PROGRESS = Progress(stage="training", epoch=2, totalEpochs=2, percent=100)
FINAL = Artifacts(outputUri="/o", modelUri="/o/model/model.pt", logUri="/o/logs/driver.log")


def play(reporter) -> None:
    """One call of every reporter method, in a run's order."""
    reporter.stage("data", "reading")
    reporter.step("statistics", "9 rows")
    reporter.note("local mode")
    reporter.data_ready(STATS, {})
    reporter.epoch(PROGRESS, {"train_loss": 0.5, "val_accuracy": 0.9})
    reporter.checkpoint("/o/checkpoints/2", 2)
    reporter.finished(True, {"val_accuracy": 0.91, "epoch": 2.0}, FINAL, "2 epochs, 0.91")


def test_the_runtime_writes_every_event_kind_and_the_operator_reads_them():
    out = io.StringIO()
    play(LogReporter(JOB, stream=out))
    lines = [
        "(raylet) unrelated",
        *(f"(driver pid=7) {line}" for line in out.getvalue().splitlines()),
    ]
    events = [contract.parse_event(line) for line in lines]
    assert events[0] is None
    assert [e["event"] for e in events[1:]] == list(contract.EVENT_KINDS)
    assert all(e["job"] == "digits" for e in events[1:])
    assert parse_final_report("\n".join(lines)) == FinalReport(
        metrics={"train_loss": 0.5, "val_accuracy": 0.91, "epoch": 2.0},
        key_metric="val_accuracy=0.91",
        artifacts={**FINAL.model_dump(exclude_none=True),
                   "latestCheckpoint": "/o/checkpoints/2", "checkpointEpoch": 2},
        data_stats=STATS.model_dump(mode="json", exclude_none=True),
        message="2 epochs, 0.91",
    )  # fmt: skip


def test_a_broken_event_line_is_skipped_not_fatal():
    assert contract.parse_event(contract.EVENT_PREFIX + "{not json") is None
    assert contract.parse_event(contract.EVENT_PREFIX + "[1, 2]") is None
    assert parse_final_report("nothing here\n") is None


class RecordingPatcher:
    def __init__(self) -> None:
        self.patches: list[dict] = []

    def patch(self, status: dict) -> None:
        self.patches.append(json.loads(json.dumps(status)))


def test_the_runtime_patches_only_the_status_fields_it_owns():
    patcher = RecordingPatcher()
    play(StatusReporter(JOB, patcher=patcher, min_interval=0))  # type: ignore[arg-type]
    written = set().union(*(p.keys() for p in patcher.patches))
    assert written == set(contract.RUNTIME_STATUS_FIELDS)
    assert all(contract.runtime_fields_only(p) for p in patcher.patches)
    owners = (set(contract.RUNTIME_STATUS_FIELDS), set(contract.OPERATOR_STATUS_FIELDS))
    assert not owners[0] & owners[1], "one owner per field"
    assert owners[0] | owners[1] | {"kopf"} == set(TrainingJobStatus.model_fields)


def test_both_sides_put_outputs_in_the_same_default_places(monkeypatch):
    monkeypatch.delenv(contract.ENV_OUTPUT_ROOT, raising=False)
    assert entrypoint.output_uri("digits", None, None) == "runs/digits"
    assert local.default_output(JOB, None).endswith("/runs/digits")
    monkeypatch.setenv(contract.ENV_OUTPUT_ROOT, "/data/")
    assert entrypoint.output_uri("digits", None, None) == "/data/digits"
    assert entrypoint.output_uri("digits", "s3://b/o", None) == "s3://b/o"
    assert entrypoint.output_uri("digits", "s3://b/o", "/x") == "/x"
    ref = JobRef("digits", "ml", "0d2c6b1e-aaaa-bbbb-cccc-123456789abc")
    config = OperatorConfig.model_validate({"outputVolume": "outputs"})
    document = builders.runtime_spec_document(ref, JOB.spec, config)
    assert document["spec"]["output"]["uri"] == contract.cluster_output_uri("ml", ref.cluster)
    assert document["spec"]["output"]["uri"].startswith(contract.OUTPUT_MOUNT + "/")


def test_the_pods_get_only_the_kubetrain_environment_the_runtime_reads():
    ref = JobRef("digits", "ml", "0d2c6b1e-aaaa-bbbb-cccc-123456789abc")
    spec, config = JOB.spec, OperatorConfig()
    pods = builders.build_children(ref, spec, resolve_placement(spec, config), config).pods
    for pod in pods:
        names = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
        assert {n for n in names if n.startswith("KUBETRAIN_")} == {contract.ENV_JOB_NAMESPACE}
    request = builders.submission_request(ref, 2, config)
    assert "runtime_env" not in request, "nothing in the Ray job reads an env of its own"
    assert typing.get_args(contract.EventKind) == contract.EVENT_KINDS
