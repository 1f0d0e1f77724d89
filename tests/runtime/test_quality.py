"""Each example, as it ships, reaches a result a practitioner would call right for its
data, with its seeds fixed. Trained in process (the default local run), each takes seconds
to a minute on two cores; ``benchmarks/bench_local_run.py --examples all`` records the same
figures with their times."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.runtime


def _trained(example, train, tmp_path, name: str):
    summary, reporter = train(example(name), tmp_path)
    assert summary.succeeded, summary.message
    assert any("local mode" in n["message"] for n in reporter.of("note"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    plots = {p.rsplit("/", 1)[1] for p in reporter.result["artifacts"].plots}
    return summary, metrics, plots


def test_digits_cnn_reaches_97_percent(example, train, tmp_path):
    summary, metrics, plots = _trained(example, train, tmp_path, "digits-cnn")
    assert summary.metrics["val_accuracy"] >= 0.97, metrics["final"]
    assert plots == {"loss.png", "confusion_matrix.png"}


#: Training seeds of the iris bar. Its 35 validation flowers make one mistake worth 2.9
#: points, and which borderline flowers a seed gets right moves with the CPU's rounding
#: (0.943 here, 0.914 on another machine, same seed). The bar is the recipe's: the mean of
#: five seeds (sd of one ~0.025, measured over 20 seeds in BENCHMARKS.md), none far off.
IRIS_SEEDS = (0, 1, 2, 3, 4)


def test_iris_mlp_reaches_93_percent(example, train, tmp_path):
    accuracies = []
    for seed in IRIS_SEEDS:
        job = example("iris-csv-mlp", training={"seed": seed})
        summary, reporter = train(job, tmp_path / str(seed))
        assert summary.succeeded, summary.message
        accuracies.append(summary.metrics["val_accuracy"])
    assert sum(accuracies) / len(accuracies) >= 0.93, accuracies
    assert min(accuracies) >= 0.9, accuracies  # at most 3 of 35 wrong in any run
    plots = {p.rsplit("/", 1)[1] for p in reporter.result["artifacts"].plots}
    assert plots == {"loss.png", "confusion_matrix.png"}


def test_sine_rnn_comes_within_1_5x_of_its_noise_floor(example, train, tmp_path):
    summary, _, plots = _trained(example, train, tmp_path, "sine-rnn")
    report = json.loads((tmp_path / "data_report.json").read_text())
    floor = report["noiseFloorMse"]
    assert floor == pytest.approx(0.05**2)
    assert summary.metrics["val_mse"] <= 1.5 * floor, (summary.metrics["val_mse"], floor)
    assert plots == {"loss.png", "predictions.png"}


def test_vae_samples_look_like_digits(example, train, tmp_path):
    """A logistic regression fitted on the real digits labels 1000 samples from the prior:
    confident labels over most classes mean the samples look like digits."""
    _, metrics, plots = _trained(example, train, tmp_path, "digits-vae")
    quality = metrics["sampleQuality"]
    assert quality["classifierHeldOutAccuracy"] >= 0.9, "the judge itself knows digits"
    assert quality["classifierConfidenceOnNoise"] < 0.7, "and is not confident about noise"
    assert quality["meanConfidence"] >= 0.8, quality
    assert quality["classesCovered"] >= 8, quality
    assert plots == {"loss.png", "vae_samples.png"}


@pytest.fixture(scope="module")
def digits_png(tmp_path_factory):
    """The example's images, written as its header says (kubetrain datasets write)."""
    from kubetrain_runtime.datasets import write_digits_png

    folder = tmp_path_factory.mktemp("digits-png")
    write_digits_png(folder, scale=4)
    return folder


def test_digits_images_cnn_reads_png_files_and_reaches_97_percent(
    example, train, tmp_path, digits_png
):
    """The same digits as ``digits-cnn``, as 32x32 PNG files in class folders: decoded,
    resized to 28x28, normalized and augmented; the bar is the table version's."""
    job = example("digits-images-cnn", data={"source": {"uri": {"path": str(digits_png)}}})
    summary, reporter = train(job, tmp_path)
    assert summary.succeeded, summary.message
    assert summary.metrics["val_accuracy"] >= 0.97, summary.metrics
    stats = reporter.of("data_ready")[0]["stats"]
    assert stats.images.shape == [1, 28, 28] and stats.rowsRead == 1797
    assert sum(stats.classCounts.values()) == 1797 and len(stats.classCounts) == 10


def _co2_naive_errors(fraction: float, window: int, horizon: int) -> dict[str, float]:
    """MAE of the textbook benchmarks (Hyndman & Athanasopoulos, Forecasting: Principles and
    Practice, ch. 5.2) on the example's validation windows: the last value seen (naive), and
    the value one year before (seasonal naive, 52 weeks)."""
    import numpy as np

    from kubetrain_runtime.data.sources import co2_frame

    values = co2_frame().df.dropna().sort_values("date")["co2"].to_numpy(np.float64)
    cut = len(values) - round(len(values) * fraction)
    naive, seasonal = [], []
    for start in range(cut, len(values) - window - horizon + 1):
        ahead = np.arange(start + window, start + window + horizon)
        truth = values[ahead]
        naive.append(np.abs(truth - values[start + window - 1]).mean())
        seasonal.append(np.abs(truth - values[ahead - 52]).mean())
    return {"naive": float(np.mean(naive)), "seasonalNaive": float(np.mean(seasonal))}


def test_co2_forecast_beats_the_naive_and_seasonal_naive_forecasts(example, train, tmp_path):
    summary, _, plots = _trained(example, train, tmp_path, "co2-forecast-rnn")
    baselines = _co2_naive_errors(0.2, window=104, horizon=4)
    mae = summary.metrics["val_mae"]
    assert mae < 0.8 * min(baselines.values()), (mae, baselines)
    assert plots == {"loss.png", "predictions.png"}
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert {"rule": "dropNulls", "dropped": 59} in report["droppedByRule"]
    assert report["sequences"]["series"] == 1


#: The UCR archive's published 1-NN Euclidean accuracy on GunPoint's own train/test split
#: (error 0.0867; the UCR Time Series Classification Archive, 2018 summary table).
GUNPOINT_1NN_ACCURACY = 0.9133


def test_gunpoint_rnn_beats_the_archive_s_1nn_baseline(example, train, tmp_path):
    summary, _, plots = _trained(example, train, tmp_path, "gunpoint-rnn")
    assert summary.metrics["val_accuracy"] >= GUNPOINT_1NN_ACCURACY, summary.metrics
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert (report["trainRows"], report["validationRows"]) == (50, 150)  # UCR's split
    assert plots == {"loss.png", "confusion_matrix.png"}
