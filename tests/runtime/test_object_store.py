"""Data from a bucket and outputs into it, on a real S3 server (versitygw), through
``kubetrain run`` as a user runs it: the endpoint and credentials in the environment, the
local Ray kept between the runs (so its workers get the credentials through the job's
``runtime_env``), images and tables read in Ray Data tasks, checkpoints written to the
bucket and resumed from there. A missing bucket, wrong credentials and a refused bucket
each end the run at once with the URI and the cause."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from object_store import env_for, s3_filesystem

from kubetrain_runtime.datasets import write_digits_png

pytestmark = pytest.mark.runtime

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Images in the bucket: enough for ten classes to be learnt, few enough to list and read fast.
DIGITS = 600


def kubetrain_run(job: dict, tmp_path: Path, env: dict[str, str], ray_dir: Path, *args: str):
    manifest = tmp_path / f"{job['metadata']['name']}.yaml"
    manifest.write_text(yaml.safe_dump(job))
    full_env = {**os.environ, **env, "KUBETRAIN_RAY_TMPDIR": str(ray_dir),
                "KUBETRAIN_RAY_IDLE_SECONDS": "60", "COLUMNS": "200"}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "kubetrain.cli", "run", str(manifest), *args],
        capture_output=True, text=True, env=full_env, timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def ray_dir(tmp_path_factory):
    """One kept local Ray for the module's runs, stopped at the end."""
    folder = Path(f"/tmp/ktrs3-{os.getpid()}")
    yield folder
    env = {**os.environ, "KUBETRAIN_RAY_TMPDIR": str(folder)}
    subprocess.run([sys.executable, "-m", "kubetrain.cli", "ray", "stop"], env=env,
                   capture_output=True, timeout=120, check=False)  # fmt: skip


def image_job(name: str, source: str, output: str, epochs: int) -> dict:
    return {
        "apiVersion": "kubetrain.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "data": {
                "source": {"uri": {"path": source, "format": "images"}},
                "images": {"size": [16, 16], "mode": "L", "augment": {"cropPadding": 1}},
            },
            "model": {
                "type": "cnn",
                "cnn": {"channels": [8, 16], "kernelSizes": [3, 3], "hiddenUnits": 32},
            },
            "training": {
                "epochs": epochs,
                "batchSize": 64,
                "seed": 3,
                "optimizer": {"learningRate": 0.003},
                "checkpoint": {"everyEpochs": 1, "keep": 2},
            },
            "output": {"uri": output},
        },
    }


@pytest.fixture(scope="module")
def digits_in_bucket(object_store, tmp_path_factory):
    """The digits as PNG class folders, uploaded to a bucket of their own."""
    folder = tmp_path_factory.mktemp("digits-png")
    write_digits_png(folder, scale=2, limit=DIGITS)
    name = "digits-data"
    object_store.create_bucket(name)
    fs = s3_filesystem(object_store.endpoint, object_store.access_key, object_store.secret_key)
    fs.put(str(folder) + "/", f"{name}/digits-png/", recursive=True)
    return f"s3://{name}/digits-png"


def test_images_from_a_bucket_train_and_resume_from_its_checkpoints(
    digits_in_bucket, bucket, s3, s3_env, ray_dir, tmp_path
):
    output = f"s3://{bucket}/runs/digits"
    first = kubetrain_run(image_job("s3-digits", digits_in_bucket, output, 2), tmp_path,
                          s3_env, ray_dir)  # fmt: skip
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    files = {p.removeprefix(f"{bucket}/runs/digits/") for p in s3.find(f"{bucket}/runs/digits")}
    assert {"model/model.pt", "metrics.json", "data_report.json", "model/plan.json"} <= files
    assert any(f.startswith("checkpoints/s3-digits/checkpoint_epoch_00002/") for f in files)
    report = json.loads(s3.cat(f"{bucket}/runs/digits/data_report.json"))
    assert report["rowsRead"] == DIGITS and report["images"]["shape"] == [1, 16, 16]

    # More epochs: the run continues from the bucket's checkpoint. (Ray Train's own writes
    # to a bucket, from worker pods, are the e2e tier's: tests/e2e/test_object_storage.py.)
    second = kubetrain_run(image_job("s3-digits", digits_in_bucket, output, 4), tmp_path,
                           s3_env, ray_dir)  # fmt: skip
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming after epoch 2" in second.stdout
    metrics = json.loads(s3.cat(f"{bucket}/runs/digits/metrics.json"))
    assert metrics["resumedFromEpoch"] == 2
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert metrics["final"]["val_accuracy"] > 0.6
    # No secret reached the outputs.
    for name in ("metrics.json", "data_report.json", "model/trainingjob.yaml"):
        assert (
            s3_env["AWS_SECRET_ACCESS_KEY"] not in s3.cat(f"{bucket}/runs/digits/{name}").decode()
        )


def test_tables_of_image_bytes_and_of_series_from_a_bucket(bucket, s3, s3_env, ray_dir, tmp_path):
    """A Parquet table whose column holds encoded PNGs (with one broken file), and a CSV
    of several series, both read from the bucket."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for index in range(240):
        label = index % 2
        pixels = (rng.random((12, 12)) * 60 + (150 if label else 20)).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        rows.append({"png": buffer.getvalue(), "kind": ["dark", "light"][label]})
    rows.append({"png": b"not an image", "kind": "dark"})
    with s3.open(f"{bucket}/tables/images.parquet", "wb") as handle:
        pd.DataFrame(rows).to_parquet(handle, index=False)
    job = {
        "apiVersion": "kubetrain.io/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": "s3-bytes"},
        "spec": {
            "data": {"source": {"uri": {"path": f"s3://{bucket}/tables/images.parquet",
                                        "format": "parquet"}},
                     "images": {"column": "png"}, "label": "kind"},
            "model": {"type": "mlp", "mlp": {"hiddenUnits": [16]}},
            "training": {"epochs": 3, "batchSize": 32},
            "output": {"uri": f"s3://{bucket}/runs/bytes"},
        },
    }  # fmt: skip
    done = kubetrain_run(job, tmp_path, s3_env, ray_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(s3.cat(f"{bucket}/runs/bytes/data_report.json"))
    assert report["rowsRead"] == 241 and report["rowsAfterCleaning"] == 240
    assert report["images"]["undecodable"] == 1
    assert {"rule": "images.undecodable", "dropped": 1} in report["droppedByRule"]
    assert report["classCounts"] == {"dark": 120, "light": 120}

    t = np.arange(60)
    series = pd.concat(
        [pd.DataFrame({"device": f"d{d}", "minute": t, "temp": np.sin(t / 5 + d) + d})
         for d in range(4)]
    ).sample(frac=1, random_state=1)  # fmt: skip
    with s3.open(f"{bucket}/tables/series.csv", "wb") as handle:
        handle.write(series.to_csv(index=False).encode())
    job = {
        "apiVersion": "kubetrain.io/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": "s3-series"},
        "spec": {
            "data": {"source": {"uri": {"path": f"s3://{bucket}/tables/series.csv"}},
                     "sequence": {"window": 8, "horizon": 2, "orderBy": "minute",
                                  "groupBy": "device", "targets": ["temp"]}},
            "model": {"type": "rnn", "task": "regression", "rnn": {"hiddenSize": 8}},
            "training": {"epochs": 2, "batchSize": 32},
            "output": {"uri": f"s3://{bucket}/runs/series"},
        },
    }  # fmt: skip
    done = kubetrain_run(job, tmp_path, s3_env, ray_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(s3.cat(f"{bucket}/runs/series/data_report.json"))
    assert report["sequences"]["series"] == 4
    assert report["trainRows"] > 0 and report["validationRows"] > 0


BAD = {
    "missing bucket": ("data", "no-such-bucket", None, "the bucket does not exist"),
    "wrong secret": ("data", None, "wrong-secret", "the credentials are wrong"),
    "access denied": ("data", None, "denied", "access denied"),
    "output bucket missing": ("output", "no-such-bucket", None, "the bucket does not exist"),
    "output refused": ("output", None, "denied", "access denied"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_bucket_ends_the_run_at_once_naming_uri_and_cause(
    case, object_store, bucket, s3, tmp_path, ray_dir
):
    where, bucket_name, who, cause = BAD[case]
    s3.pipe(f"{bucket}/data/iris.csv", (REPO_ROOT / "examples/data/iris-dirty.csv").read_bytes())
    env = env_for(object_store)
    if who == "wrong-secret":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    elif who == "denied":  # valid credentials of a user who owns another bucket only
        user = f"user-{bucket}"
        object_store.create_user(user, "user-secret", buckets=[f"{bucket}-own"])
        env |= {"AWS_ACCESS_KEY_ID": user, "AWS_SECRET_ACCESS_KEY": "user-secret"}
    job = yaml.safe_load((REPO_ROOT / "examples/iris-csv-mlp.yaml").read_text())
    data_uri = f"s3://{bucket}/data/iris.csv"
    output_uri = f"s3://{bucket}/runs/iris"
    if where == "data":
        data_uri = f"s3://{bucket_name or bucket}/data/iris.csv"
    else:
        output_uri = f"s3://{bucket_name or bucket}/runs/iris"
    if where == "output" and who == "denied":  # may read the data, may not write here
        object_store.create_bucket(f"{bucket}-readable", owner=env["AWS_ACCESS_KEY_ID"])
        s3.pipe(f"{bucket}-readable/iris.csv", s3.cat(f"{bucket}/data/iris.csv"))
        data_uri = f"s3://{bucket}-readable/iris.csv"
    job["spec"]["data"]["source"]["uri"]["path"] = data_uri
    job["spec"]["output"] = {"uri": output_uri}
    done = kubetrain_run(job, tmp_path, env, ray_dir)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    line = done.stderr.strip().splitlines()
    assert len(line) == 1, done.stderr
    assert (data_uri if where == "data" else output_uri) in line[0], line[0]
    assert cause in line[0], line[0]
    assert env["AWS_SECRET_ACCESS_KEY"] not in done.stdout + done.stderr
    assert "Starting Ray" not in done.stdout  # ended before any Ray or data work
