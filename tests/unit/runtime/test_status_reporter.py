"""The runtime's status reporter: the fields it writes, coalescing, and never failing."""

from __future__ import annotations

import urllib.error

import pytest

from kubetrain.api.v1alpha1 import Artifacts, DataStats, Progress, TrainingJob
from kubetrain_runtime.reporting import REPORTERS
from kubetrain_runtime.status_reporter import StatusPatcher, StatusReporter

pytestmark = pytest.mark.unit


class FakePatcher:
    def __init__(self, fail: int = 0) -> None:
        self.patches: list[dict] = []
        self.fail = fail

    def patch(self, status: dict) -> None:
        if self.fail:
            self.fail -= 1
            raise urllib.error.URLError("connection refused")
        self.patches.append(status)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def job() -> TrainingJob:
    return TrainingJob.model_validate(
        {
            "apiVersion": "kubetrain.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "iris", "namespace": "team-a"},
            "spec": {"data": {"source": {"builtin": {"name": "iris"}}}, "model": {"type": "mlp"}},
        }
    )


def test_it_is_the_registered_status_reporter():
    assert REPORTERS["status"] == "kubetrain_runtime.status_reporter:StatusReporter"


def test_writes_only_runtime_fields_and_coalesces_fast_epochs(job):
    patcher, clock = FakePatcher(), Clock()
    reporter = StatusReporter(job, patcher=patcher, min_interval=2.0, clock=clock)
    reporter.stage("data")
    reporter.data_ready(DataStats(rowsRead=150, trainRows=120), {})
    clock.now = 10.0
    for epoch in (1, 2, 3):
        clock.now += 0.5
        reporter.epoch(Progress(stage="training", epoch=epoch, totalEpochs=3, percent=epoch * 33),
                       {"val_accuracy": 0.5 + epoch / 10, "loss": 1.0 / epoch})  # fmt: skip
    reporter.checkpoint("s3://b/ckpt/3", 3)
    reporter.finished(True, {"val_accuracy": 0.8}, Artifacts(modelUri="s3://b/model.pt"), "ok")

    assert patcher.patches[0] == {"progress": {"stage": "data"}}
    assert patcher.patches[1] == {"dataStats": {"rowsRead": 150, "trainRows": 120,
                                                "droppedByRule": []}}  # fmt: skip
    epoch_patch = patcher.patches[2]  # the first epoch goes out, the next two wait
    assert epoch_patch["progress"]["epoch"] == 1
    final = patcher.patches[-1]
    assert len(patcher.patches) == 4, "epochs 2-3 and the checkpoint rode on the final patch"
    assert final["metrics"] == {"val_accuracy": 0.8, "loss": pytest.approx(1 / 3)}
    assert final["keyMetric"] == "val_accuracy=0.8"
    assert final["artifacts"] == {
        "latestCheckpoint": "s3://b/ckpt/3",
        "checkpointEpoch": 3,
        "modelUri": "s3://b/model.pt",
        "plots": [],
    }
    for patch in patcher.patches:
        assert not patch.keys() & {"phase", "conditions", "reason", "attempts"}


def test_a_failed_patch_is_retried_with_the_next_and_never_raises(job):
    patcher, clock = FakePatcher(fail=1), Clock()
    reporter = StatusReporter(job, patcher=patcher, clock=clock)
    reporter.stage("training")
    assert patcher.patches == []
    reporter.finished(False, {}, Artifacts(), "boom")
    assert patcher.patches[0]["progress"] == {"stage": "finishing"}


def test_without_an_api_it_does_nothing(job, monkeypatch):
    for var in ("KUBETRAIN_API_SERVER", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    reporter = StatusReporter(job)
    assert reporter.patcher is None
    reporter.stage("data")  # no error


def test_patcher_targets_the_status_subresource(monkeypatch):
    monkeypatch.setenv("KUBETRAIN_API_SERVER", "https://api:6443/")
    monkeypatch.setenv("KUBETRAIN_API_TOKEN", "t")
    patcher = StatusPatcher.from_environment("team-a", "iris")
    assert patcher.url == (
        "https://api:6443/apis/kubetrain.io/v1alpha1/namespaces/team-a/trainingjobs/iris/status"
    )
