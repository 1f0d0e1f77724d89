"""What the cluster commands print: the table, the one-line progress and ``describe``."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kubetrain.jobview import age, describe, table

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
JOB = {
    "metadata": {"name": "digits", "namespace": "ml", "creationTimestamp": "2026-01-01T11:00:00Z"},
    "spec": {"model": {"type": "cnn"}},
    "status": {
        "phase": "Running", "reason": "RayJobSubmitted", "message": "attempt 2 submitted",
        "progress": {"stage": "training", "epoch": 4, "totalEpochs": 10, "percent": 44,
                     "samplesPerSecond": 9120.4, "etaSeconds": 12},
        "keyMetric": "val_accuracy=0.91", "metrics": {"val_accuracy": 0.912345},
        "conditions": [{"type": "Running", "status": "True", "reason": "RayJobRunning",
                        "message": "Ray job x is running"}],
        "dataStats": {"rowsRead": 1797, "rowsAfterCleaning": 1797, "trainRows": 1437,
                      "validationRows": 360,
                      "droppedByRule": [{"rule": "dropNulls", "dropped": 0}]},
        "artifacts": {"outputUri": "/output/digits", "logUri": "/output/digits/logs/driver.log"},
    },
}  # fmt: skip


@pytest.mark.parametrize(
    ("created", "shown"),
    [("2026-01-01T11:59:15Z", "45s"), ("2026-01-01T11:48:00Z", "12m"),
     ("2026-01-01T09:00:00Z", "3h"), ("2025-12-27T12:00:00Z", "5d"), (None, "<unknown>")],
)  # fmt: skip
def test_ages_read_like_kubectl(created, shown):
    assert age(created, NOW) == shown


def test_the_table_has_the_printer_columns_and_the_stage():
    new = {"metadata": {"name": "fresh-one", "creationTimestamp": "2026-01-01T11:59:50Z"}}
    assert table([JOB, new], NOW).splitlines() == [
        "NAME        PHASE     STAGE      PROGRESS   METRIC              MODEL   AGE",
        "digits      Running   training   44%        val_accuracy=0.91   cnn     60m",
        "fresh-one   <new>                                                       10s",
    ]


def test_describe_is_readable():
    events = [{"type": "Normal", "reason": "ClusterReady", "message": "ready", "count": 2}]
    text = describe(JOB, events)
    for line in ("Name:        digits", "Model:       cnn (classification)",
                 "Phase:       Running (RayJobSubmitted)",
                 "  Running=True RayJobRunning: Ray job x is running",
                 "  stage training, epoch 4/10, 44%, 9120 samples/s, eta 12s",
                 "  rows read: 1797", "  dropped by dropNulls: 0", "  val_accuracy = 0.9123",
                 "  driver log: /output/digits/logs/driver.log",
                 "  Normal ClusterReady (x2): ready"):  # fmt: skip
        assert line in text.splitlines(), (line, text)


@pytest.mark.parametrize(
    ("model", "shown"),
    [({"type": "vae"}, "vae (generation)"), ({"type": "rnn", "task": "regression"},
     "rnn (regression)"), ({"type": "transformer"}, "transformer ()")],
)  # fmt: skip
def test_describe_names_the_task_the_api_fills_in(model, shown):
    """kubectl-applied specs often leave the task out: it comes from the model type."""
    job = {**JOB, "spec": {"model": model}}
    assert f"Model:       {shown}" in describe(job, []).splitlines()


def test_describe_shows_classes_images_and_series():
    from kubetrain.jobview import _data_stats

    lines = _data_stats({
        "rowsRead": 62, "classCounts": {"cats": 20, "dogs": 19},
        "images": {"shape": [3, 28, 28], "sizesSeen": [{"size": "480x640", "count": 50}],
                   "distinctSizes": 3, "channelMeans": [0.5, 0.4, 0.3], "undecodable": 1,
                   "badFiles": ["s3://b/dogs/7.png"]},
        "sequences": {"series": 3, "window": 8, "features": 2, "longestSeries": 60,
                      "seriesDropped": 1},
    })  # fmt: skip
    assert "classes: cats 20, dogs 19" in lines
    assert "image shape: 3x28x28 (channels x h x w)" in lines
    assert "sizes read: 480x640 (50) of 3 sizes" in lines
    assert "files dropped: 1 undecodable (first: s3://b/dogs/7.png)" in lines
    assert "series: 3 (window 8 x 2 features, longest 60), 1 too short for a window" in lines
