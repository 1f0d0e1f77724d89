"""Every model type trains on its example and improves; checkpoints resume at the next
epoch; early stopping stops. Each fit costs tens of seconds on two cores, so each test
checks several things about its run."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.runtime


def losses(reporter) -> list[float]:
    return [e["metrics"]["train_loss"] for e in reporter.of("epoch")]


def test_cnn_on_digits_with_two_workers(example, train, tmp_path):
    """``--workers 2``: two Ray Train worker actors with DDP (the cluster's path)."""
    job = example("digits-cnn", training={"epochs": 3})
    summary, reporter = train(job, tmp_path, workers=2)
    assert summary.succeeded, summary.message
    assert reporter.epochs == [1, 2, 3]
    assert losses(reporter)[-1] < losses(reporter)[0]
    last = reporter.of("epoch")[-1]
    assert last["metrics"]["val_accuracy"] > 0.5
    assert last["progress"].totalEpochs == 3 and last["progress"].percent == 100
    assert [c["epoch"] for c in reporter.of("checkpoint")] == [2, 3]  # everyEpochs 2, and the last
    stats = reporter.of("data_ready")[0]["stats"]
    assert (stats.trainRows, stats.validationRows) == (1437, 360)
    # Metrics are all-reduced over both workers' shards: the confusion matrix counts the
    # whole validation split.
    state = json.loads(
        (tmp_path / "checkpoints/digits-cnn/checkpoint_epoch_00003/state.json").read_text()
    )
    assert sum(map(sum, state["confusion"])) == 360
    assert not any("local mode" in n["message"] for n in reporter.of("note"))
    artifacts = reporter.result["artifacts"]
    assert {p.rsplit("/", 1)[1] for p in artifacts.plots} == {"loss.png", "confusion_matrix.png"}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert (tmp_path / "model" / "model.pt").exists() and (
        tmp_path / "model" / "trainingjob.yaml"
    ).exists()
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert report["rowsRead"] == 1797 and "pixel_63" in report["columns"]
    assert summary.metrics["time_to_first_step_seconds"] > 0


def test_mlp_resumes_at_the_next_epoch_across_both_ways_of_training(example, train, tmp_path):
    """In process (local mode) → one Ray Train worker actor → in process again: each run
    resumes the checkpoint the previous one left, whichever way it was written."""
    spec = {"epochs": 2, "checkpoint": {"everyEpochs": 1, "keep": 2}}
    first, reporter = train(example("iris-csv-mlp", training=spec), tmp_path)
    assert first.succeeded, first.message
    assert any("local mode" in n["message"] for n in reporter.of("note"))
    assert [c["epoch"] for c in reporter.of("checkpoint")] == [1, 2]
    runs = tmp_path / "checkpoints" / "iris-csv-mlp"
    assert sorted(p.name for p in runs.iterdir()) == [
        "checkpoint_epoch_00001",
        "checkpoint_epoch_00002",
    ]
    summary, reporter = train(example("iris-csv-mlp", training={**spec, "epochs": 4}), tmp_path, 1)
    assert summary.succeeded, summary.message
    assert reporter.epochs == [3, 4]
    assert any("resuming after epoch 2" in n["message"] for n in reporter.of("note"))
    third, reporter = train(example("iris-csv-mlp", training={**spec, "epochs": 6}), tmp_path)
    assert third.succeeded, third.message
    assert reporter.epochs == [5, 6]
    assert sorted(p.name for p in runs.iterdir() if p.name.startswith("checkpoint_epoch")) == [
        "checkpoint_epoch_00005",
        "checkpoint_epoch_00006",
    ], "keep: 2 holds in process too"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4, 5, 6]
    assert metrics["resumedFromEpoch"] == 4
    history = [h["train_loss"] for h in metrics["history"]]
    assert history[-1] < history[0]


def test_rnn_regression_stops_early_through_a_custom_train_function(example, train, tmp_path):
    # The escape hatch, naming the built-in loop as ``module:function``: the reference is
    # imported on the driver and called by every worker with the same config.
    job = example(
        "sine-rnn",
        data={"source": {"generated": {"samples": 2000}}},
        training={
            "trainFunction": "kubetrain_runtime.train_loop:train_loop_per_worker",
            "epochs": 6,
            "earlyStopping": {
                "metric": "val_loss",
                "mode": "min",
                "patience": 1,
                "minDelta": 1000.0,
            },
        },
    )
    summary, reporter = train(job, tmp_path)
    assert summary.succeeded, summary.message
    assert reporter.epochs == [1, 2]  # nothing improves by 1000: stop after patience 1
    assert "stopped early" in summary.message
    assert losses(reporter)[1] < losses(reporter)[0]
    assert "val_mse" in reporter.of("epoch")[-1]["metrics"]
    assert json.loads((tmp_path / "metrics.json").read_text())["stoppedEarly"] is True
