"""Ray Train samples/s vs a plain PyTorch loop with the same model and data.

    ~/.cache/kubetrain/venv/bin/python benchmarks/bench_train.py [--copies 10] [--epochs 4]

Data: scikit-learn's digits repeated ``--copies`` times with a little noise (8x8 images,
written once as Parquet under ~/.cache/kubetrain/bench/); model: the digits-cnn example's
CNN from the runtime's factory. Throughput is training samples per second of the training
phase, averaged over epochs 2..N (epoch 1 pays for warm-up); wall time is the whole call.
Plain PyTorch runs in this process (1 and 2 threads); Ray Train runs the runtime's job with
1 and 2 workers on a private local Ray, whose start-up counts in its wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

CACHE = Path(os.environ.get("KUBETRAIN_CACHE", Path.home() / ".cache" / "kubetrain")) / "bench"
BATCH = 64


def dataset(copies: int) -> Path:
    path = CACHE / f"digits-x{copies}.parquet"
    if not path.exists():
        from kubetrain_runtime.data.sources import builtin_frame

        base = builtin_frame("digits").df
        rng = np.random.default_rng(0)
        parts = []
        for _ in range(copies):
            part = base.copy()
            pixels = part.columns[:-1]
            part[pixels] = np.clip(
                part[pixels] + rng.normal(0, 0.5, (len(part), len(pixels))), 0, 16
            ).astype(np.float32)
            parts.append(part)
        CACHE.mkdir(parents=True, exist_ok=True)
        pd.concat(parts, ignore_index=True).to_parquet(path)
    return path


def spec(path: Path, epochs: int, workers: int) -> dict:
    return {
        "apiVersion": "kubetrain.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": f"bench-cnn-{workers}"},
        "spec": {
            "data": {
                "source": {"uri": {"path": str(path), "format": "parquet"}},
                "preprocessing": {"scale": [{"columns": ["pixel_*"], "method": "minmax"}]},
                "label": "target",
            },
            "model": {
                "type": "cnn",
                "cnn": {"channels": [16, 32], "kernelSizes": [3, 3], "hiddenUnits": 64},
            },
            "training": {"epochs": epochs, "batchSize": BATCH, "workers": workers, "seed": 7},
        },
    }


def plain_torch(path: Path, epochs: int, threads: int) -> tuple[float, float]:
    import torch
    import torch.nn.functional as F

    from kubetrain_runtime.models import build_model
    from kubetrain_runtime.plan import TrainPlan

    began = time.perf_counter()
    torch.set_num_threads(threads)
    df = pd.read_parquet(path)
    train = df.sample(frac=0.8, random_state=42)
    x = train.drop(columns=["target"]).to_numpy(np.float32)
    low, high = x.min(axis=0), x.max(axis=0)
    x = (x - low) / np.where(high > low, high - low, 1)
    xs, ys = torch.from_numpy(x), torch.tensor(train["target"].to_numpy(np.int64))
    plan = TrainPlan(
        name="bench",
        model_type="cnn",
        task="classification",
        section={"channels": [16, 32], "kernelSizes": [3, 3], "hiddenUnits": 64, "dropout": 0.25},
        input_shape=[1, 8, 8],
        num_features=64,
        num_outputs=10,
        epochs=epochs,
        batch_size=BATCH,
        optimizer={},
        seed=7,
        fingerprint="",
    )
    torch.manual_seed(7)
    model = build_model(plan)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rates = []
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        for index in torch.randperm(len(xs)).split(BATCH):
            optimizer.zero_grad()
            F.cross_entropy(model(xs[index]), ys[index]).backward()
            optimizer.step()
        if epoch:
            rates.append(len(xs) / (time.perf_counter() - start))
    return statistics.mean(rates), time.perf_counter() - began


def ray_train(path: Path, epochs: int, workers: int) -> tuple[float, float, float]:
    from kubetrain.api.v1alpha1 import TrainingJob
    from kubetrain_runtime.job import RunOptions, run_job
    from kubetrain_runtime.ray_env import ray_session
    from kubetrain_runtime.reporting import CollectingReporter

    began = time.time()
    job = TrainingJob.model_validate(spec(path, epochs, workers))
    reporter = CollectingReporter()
    output = CACHE / "runs" / job.metadata.name
    with ray_session(local=True) as session:
        summary = run_job(
            job, reporter, RunOptions(str(output), path.parent, None, started=began), session
        )
    assert summary.succeeded, summary.message
    rates = [e["metrics"]["samples_per_second"] for e in reporter.of("epoch")[1:]]
    return (
        statistics.mean(rates),
        time.time() - began,
        summary.metrics.get("time_to_first_step_seconds", float("nan")),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    path = dataset(args.copies)
    rows = len(pd.read_parquet(path, columns=["target"]))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"data: {rows} rows of 8x8 digits, {int(rows * 0.8)} for training; batch {BATCH}")
    results = {}
    for threads in (1, 2):
        rate, wall = plain_torch(path, args.epochs, threads)
        results[f"torch-{threads}t"] = rate
        print(f"plain PyTorch, {threads} thread(s) : {rate:>9,.0f} samples/s   wall {wall:6.1f} s")
    for workers in (1, 2):
        rate, wall, first = ray_train(path, args.epochs, workers)
        results[f"ray-{workers}w"] = rate
        print(
            f"Ray Train, {workers} worker(s)      : {rate:>9,.0f} samples/s   wall {wall:6.1f} s"
            f" (first step after {first:.1f} s)"
        )
    print(f"ratio Ray 1 worker / PyTorch 1 thread : {results['ray-1w'] / results['torch-1t']:.2f}")
    print(f"ratio Ray 2 workers / PyTorch 2 threads: {results['ray-2w'] / results['torch-2t']:.2f}")


if __name__ == "__main__":
    main()
