"""Images and time series through the real Ray Data stage: class folders and tables of
paths, what is dropped and counted, statistics against a numpy reference of the same files,
windows that never span two series or leak the future, and every bad input refused before
training with the field or file to fix."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kubetrain.api.v1alpha1 import TrainingJob
from kubetrain.errors import DataError, SpecError, UserError
from kubetrain_runtime.data.pipeline import prepare

pytestmark = pytest.mark.runtime


def job(data: dict, model: dict | None = None, **spec) -> TrainingJob:
    return TrainingJob.model_validate({
        "apiVersion": "kubetrain.io/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": "t"},
        "spec": {"data": data, "model": model or {"type": "cnn"}, **spec},
    })  # fmt: skip


def save(path: Path, pixels: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)


@pytest.fixture
def folder(tmp_path) -> Path:
    """Three classes of 10x12 grey images, a broken file, a too-small image, a text file
    (skipped by its ending) and a hidden folder (skipped by Ray's listing)."""
    rng = np.random.default_rng(3)
    root = tmp_path / "images"
    for label, level in (("cats", 30), ("dogs", 120), ("owls", 220)):
        for index in range(20):
            noise = rng.integers(0, 30, (10, 12))
            save(root / label / f"{index}.png", (noise + level).astype(np.uint8), "L")
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    save(root / "owls" / "tiny.png", np.full((3, 3), 200, np.uint8), "L")
    (root / "owls" / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()
    return root


def reference_means(root: Path) -> float:
    values = [np.asarray(Image.open(p), dtype=np.float64) / 255 for p in sorted(root.rglob("*.png"))
              if p.name not in ("broken.png", "tiny.png")]  # fmt: skip
    return float(np.mean([v.mean() for v in values]))


def test_class_folders_decode_in_parallel_and_count_what_they_drop(ray_local, folder):
    images = {"minSize": [4, 4], "normalize": {"method": "fit"}}
    spec = job({"source": {"uri": {"path": str(folder), "format": "images"}}, "images": images})
    prepared = prepare(spec.spec, folder)
    stats = prepared.stats
    assert (stats.rowsRead, stats.rowsAfterCleaning) == (62, 60)
    drops = {d.rule: d.dropped for d in stats.droppedByRule}
    assert drops == {"images.undecodable": 1, "images.minSize": 1}
    assert stats.images.undecodable == 1 and stats.images.badFiles
    assert {Path(f).name for f in stats.images.badFiles} == {"broken.png", "tiny.png"}
    assert stats.classCounts == {"cats": 20, "dogs": 20, "owls": 20}
    assert stats.images.shape == [1, 10, 12]
    assert [(s.size, s.count) for s in stats.images.sizesSeen] == [("10x12", 60)]
    assert stats.images.channelMeans[0] == pytest.approx(reference_means(folder), abs=1e-3)
    assert prepared.class_names == ["cats", "dogs", "owls"]
    assert stats.trainRows + stats.validationRows == 60 and stats.validationRows == 12

    # Normalization is fitted on the training split alone, from the same pixels.
    train = np.stack(prepared.train.to_pandas()["x"].to_numpy()).astype(np.float64) / 255
    transform = prepared.input_transform
    assert transform["mean"][0] == pytest.approx(train.mean(), abs=1e-6)
    assert transform["std"][0] == pytest.approx(train.std(), abs=1e-6)
    # Pixels stay 8-bit in the object store; augmentation makes no copies.
    assert prepared.train.take_batch(1, batch_format="numpy")["x"].dtype == np.uint8
    assert prepared.train.count() == stats.trainRows


def test_a_table_of_relative_paths_counts_missing_files(ray_local, tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for index in range(40):
        label = ["a", "b"][index % 2]
        pixels = rng.integers(0, 255, (6, 6, 3)).astype(np.uint8)
        save(tmp_path / "pics" / f"{index}.jpg", pixels, "RGB")
        rows.append({"file": f"pics/{index}.jpg", "label": label, "fold": index % 5})
    rows.append({"file": "pics/gone.jpg", "label": "a", "fold": 0})
    pd.DataFrame(rows).to_csv(tmp_path / "table.csv", index=False)
    data = {"source": {"uri": {"path": str(tmp_path / "table.csv")}}, "label": "label",
            "images": {"column": "file", "mode": "RGB"},
            "validation": {"column": "fold", "values": ["0"]}}  # fmt: skip
    prepared = prepare(job(data, {"type": "mlp"}).spec, tmp_path)
    stats = prepared.stats
    assert stats.images.missing == 1 and stats.images.badFiles == ["pics/gone.jpg"]  # as written
    assert {"rule": "images.missing", "dropped": 1} in [d.model_dump() for d in stats.droppedByRule]
    assert stats.images.shape == [3, 6, 6]
    assert (stats.trainRows, stats.validationRows) == (32, 8)  # fold 0 validates


def bad_folder(tmp_path: Path, kind: str) -> Path:
    root = tmp_path / kind
    root.mkdir()
    grey, colour = np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.uint8)
    if kind == "files-only":
        save(root / "a.png", grey, "L")
    elif kind == "mixed-channels":
        for i in range(4):
            save(root / "x" / f"{i}.png", grey, "L")
            save(root / "y" / f"{i}.png", colour, "RGB")
    elif kind == "mixed-sizes":
        for i in range(4):
            save(root / "x" / f"{i}.png", grey, "L")
            save(root / "y" / f"{i}.png", np.zeros((9, 8), np.uint8), "L")
    elif kind == "all-broken":
        for i in range(3):
            (root / "x").mkdir(exist_ok=True)
            (root / "x" / f"{i}.png").write_bytes(b"junk")
    elif kind == "no-images":
        (root / "x").mkdir()
        (root / "x" / "a.txt").write_text("x")
    return root


@pytest.mark.parametrize(
    ("kind", "error", "field", "words"),
    [
        ("empty", DataError, None, "the folder is empty"),
        ("files-only", DataError, None, "no class subfolders"),
        ("no-images", DataError, None, "no image files"),
        ("all-broken", DataError, None, "no image is left to train on (3 undecodable"),
        ("mixed-channels", SpecError, "spec.data.images.mode", "1 and 3 channels"),
        ("mixed-sizes", SpecError, "spec.data.images.size", "2 sizes, height x width: 8x8 (4)"),
    ],
)
def test_bad_image_folders_are_refused_naming_the_folder_or_field(
    ray_local, tmp_path, kind, error, field, words
):
    root = bad_folder(tmp_path, kind)
    spec = job({"source": {"uri": {"path": str(root), "format": "images"}}})
    with pytest.raises(UserError) as raised:
        prepare(spec.spec, tmp_path)
    assert type(raised.value) is error, raised.value
    assert raised.value.field == (field or str(root)), raised.value
    assert words in raised.value.message, raised.value.message


def test_a_vae_learns_images_and_draws_its_samples_as_a_grid(ray_local, train, folder, tmp_path):
    spec = job({"source": {"uri": {"path": str(folder), "format": "images"}},
                "images": {"minSize": [5, 5]}},
               {"type": "vae", "vae": {"latentDim": 2, "hiddenUnits": [32], "samples": 8}},
               training={"epochs": 3, "batchSize": 16})  # fmt: skip
    summary, _ = train(spec, tmp_path / "out")
    assert summary.succeeded, summary.message
    import json

    plan = json.loads((tmp_path / "out/model/plan.json").read_text())
    assert plan["input_transform"]["normalization"] == "none"  # pixels in [0, 1]
    assert plan["likelihood"] == "bernoulli" and plan["num_features"] == 120
    picture = Image.open(tmp_path / "out/plots/vae_samples.png")
    assert picture.width > 300


@pytest.fixture
def sensor_log(tmp_path) -> Path:
    """Four devices' readings, interleaved and unsorted; a device's id is in its values, so
    a window that spans two series shows. Device d3 is too short for a window."""
    frames = []
    for device, rows in (("d0", 50), ("d1", 60), ("d2", 40), ("d3", 5)):
        minutes = pd.date_range("2026-01-01", periods=rows, freq="min").astype(str)
        number = int(device[1])
        frames.append(pd.DataFrame({"device": device, "time": minutes,
                                    "id": float(number), "step": np.arange(rows, dtype=float),
                                    "reading": np.sin(np.arange(rows) / 4) + number}))  # fmt: skip
    table = pd.concat(frames).sample(frac=1, random_state=4)
    path = tmp_path / "log.parquet"
    table.to_parquet(path, index=False)
    return path


def series_job(path: Path, features: list[str] | None = None, **sequence) -> TrainingJob:
    settings = {"window": 8, "horizon": 2, "orderBy": "time", "groupBy": "device",
                "targets": ["reading"]} | sequence  # fmt: skip
    return job({"source": {"uri": {"path": str(path), "format": "parquet"}},
                "sequence": settings, "validation": {"fraction": 0.25},
                "features": features or []},
               {"type": "rnn", "task": "regression"})  # fmt: skip


def test_windows_stay_within_a_series_and_validate_later_in_time(ray_local, sensor_log):
    prepared = prepare(series_job(sensor_log).spec, sensor_log.parent)
    stats = prepared.stats
    assert stats.sequences.series == 3 and stats.sequences.seriesDropped == 1
    assert {"rule": "sequence.window", "dropped": 5} in [
        d.model_dump() for d in stats.droppedByRule
    ]
    assert stats.sequences.longestSeries == 60 and stats.sequences.features == 3
    assert prepared.sample_shape == [8, 3] and prepared.num_outputs == 2
    frames = {}
    for name, ds in (("train", prepared.train), ("validation", prepared.validation)):
        frame = ds.to_pandas()
        windows = np.stack(frame["x"].to_numpy()).reshape(-1, 8, 3)
        ids, steps = windows[:, :, 0], windows[:, :, 1]
        assert (ids == ids[:, :1]).all(), "a window spans two series"
        assert (np.diff(steps, axis=1) == 1).all(), "a window is out of time order"
        frames[name] = (ids[:, 0], steps[:, 0])
    for device in (0.0, 1.0, 2.0):
        train_starts = frames["train"][1][frames["train"][0] == device]
        val_starts = frames["validation"][1][frames["validation"][0] == device]
        assert len(train_starts) and len(val_starts)
        assert val_starts.min() >= train_starts.max() + 8 + 2  # after every training sample


def test_bad_series_are_refused_naming_the_field(ray_local, sensor_log, tmp_path):
    with pytest.raises(DataError) as raised:
        prepare(series_job(sensor_log, window=100).spec, tmp_path)
    assert raised.value.field == "spec.data.sequence.window"
    assert "the longest has 60" in raised.value.message
    table = pd.read_parquet(sensor_log).assign(time=lambda f: f["time"].str.replace("2026", "x"))
    table.to_parquet(tmp_path / "bad-time.parquet", index=False)
    with pytest.raises(DataError) as raised:
        prepare(series_job(tmp_path / "bad-time.parquet").spec, tmp_path)
    assert raised.value.field == "spec.data.sequence.orderBy"
    assert "neither a number nor a date" in raised.value.message
    table = pd.read_parquet(sensor_log).assign(time=lambda f: [[1, 2]] * len(f))
    table.to_parquet(tmp_path / "list-time.parquet", index=False)
    with pytest.raises(SpecError) as raised:
        prepare(series_job(tmp_path / "list-time.parquet").spec, tmp_path)
    assert raised.value.field == "spec.data.sequence.orderBy"
    with pytest.raises(SpecError) as raised:
        prepare(series_job(sensor_log, targets=["temperature"]).spec, tmp_path)
    assert raised.value.field == "spec.data.sequence.targets[0]"
    with pytest.raises(SpecError) as raised:
        prepare(series_job(sensor_log, ["id", "step"], normalize="lastValue").spec, tmp_path)
    assert raised.value.field == "spec.data.sequence.normalize"
    assert "['reading'] are not features" in raised.value.message


def test_images_bytes_in_a_table_round_trip(ray_local, tmp_path):
    """PNG bytes in a Parquet column decode to the very pixels that were encoded."""
    rng = np.random.default_rng(1)
    originals = [rng.integers(0, 255, (5, 7)).astype(np.uint8) for _ in range(20)]
    encoded = []
    for pixels in originals:
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    pd.DataFrame({"png": encoded, "label": [i % 2 for i in range(20)],
                  "n": range(20)}).to_parquet(tmp_path / "t.parquet")  # fmt: skip
    data = {"source": {"uri": {"path": str(tmp_path / "t.parquet"), "format": "parquet"}},
            "images": {"column": "png", "normalize": {"method": "none"}}, "label": "label",
            "validation": {"column": "n", "values": ["0", "1", "2", "3"]}}  # fmt: skip
    prepared = prepare(job(data, {"type": "mlp"}).spec, tmp_path)
    rows = pd.concat([prepared.train.to_pandas(), prepared.validation.to_pandas()])
    got = {bytes(np.asarray(x, np.uint8)) for x in rows["x"]}
    assert got == {p.tobytes() for p in originals}


def test_kubetrain_datasets_write_makes_the_files_the_readers_take(tmp_path):
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kubetrain.cli", "datasets", "write", *args],
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip

    done = cli("digits-png", str(tmp_path / "png"), "--scale", "2")
    assert done.returncode == 0, done.stderr
    files = sorted((tmp_path / "png").rglob("*.png"))
    assert len(files) == 1797 and {f.parent.name for f in files} == {str(d) for d in range(10)}
    assert Image.open(files[0]).size == (16, 16) and Image.open(files[0]).mode == "L"
    done = cli("gunpoint", str(tmp_path / "tables"), "--format", "csv")
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(tmp_path / "tables" / "gunpoint.csv")
    assert list(table.columns) == ["series", "split", "t", "value", "target"]
    assert table.groupby("series").size().eq(150).all() and table["series"].nunique() == 200
    unknown = cli("mnist", str(tmp_path / "x"))
    assert unknown.returncode == 2 and "known: digits-png" in unknown.stderr


def test_ray_data_logs_no_traceback_for_a_users_mistake(ray_local, tmp_path):
    """A user's mistake found inside a Ray Data task: Ray Data's own error records (a
    traceback, "please open an issue") are held back, so the user sees only the run's one
    line naming the field; Ray's wrapping is gone from the error."""
    import logging

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    loggers = [
        logging.getLogger(name)
        for name in ("ray.data._internal.execution.streaming_executor_state", "ray.data.exceptions")
    ]
    keep = Keep(level=logging.DEBUG)
    for logger in loggers:
        logger.addHandler(keep)
    pd.DataFrame({"when": ["monday", "tuesday", "wednesday", "thursday", "friday", "sat"],
                  "v": range(6)}).to_csv(tmp_path / "log.csv", index=False)  # fmt: skip
    spec = job({"source": {"uri": {"path": str(tmp_path / "log.csv")}},
                "sequence": {"window": 2, "orderBy": "when", "targets": ["v"]}},
               {"type": "rnn", "task": "regression"})  # fmt: skip
    try:
        with pytest.raises(DataError) as raised:
            prepare(spec.spec, tmp_path)
    finally:
        for logger in loggers:
            logger.removeHandler(keep)
    assert str(raised.value) == (
        "spec.data.sequence.orderBy: cannot sort by it: 'monday' is neither a number nor a date"
    )
    assert [r.getMessage()[:80] for r in records if r.levelno >= logging.ERROR] == []
