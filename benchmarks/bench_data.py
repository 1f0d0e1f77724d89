"""Ray Data cleaning + preprocessing vs single-process pandas doing the same rules.

    ~/.cache/kubetrain/venv/bin/python benchmarks/bench_data.py [--rows 2000000] [--files 8]

Generates a messy CSV (empty cells, junk in an int column, out-of-range values, duplicates)
into ~/.cache/kubetrain/bench/ (not git), then times, one after the other:
  pandas: read, cast, dropNulls, filters, clip, dropDuplicates, describe, split, scale and
          one-hot fitted on the training split, float32 matrix;
  Ray:    the runtime's data stage (kubetrain_runtime.data.pipeline.prepare) on the same
          files and rules, with a private local Ray (its start-up is timed separately).
Prints rows/s for each and the ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

CACHE = Path(os.environ.get("KUBETRAIN_CACHE", Path.home() / ".cache" / "kubetrain")) / "bench"

RULES = {
    "casts": [{"column": "count", "type": "int"}],
    "dropNulls": True,
    "dropNullsIn": ["value", "category"],
    "filters": [
        {"column": "value", "op": ">", "value": 0},
        {"column": "category", "op": "not_in", "value": ["bad"]},
    ],
    "clip": [{"column": "value", "max": 10}],
    "dropDuplicates": True,
    "duplicateKeys": ["id", "value", "category"],
}


def generate(rows: int, files: int) -> Path:
    folder = CACHE / f"messy-{rows}-{files}"
    if (folder / "DONE").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    per = rows // files
    for index in range(files):
        df = pd.DataFrame(
            {
                "id": rng.integers(0, rows // 2, per),
                "value": rng.normal(5, 4, per).round(2),
                "x1": rng.normal(0, 1, per).round(4),
                "category": rng.choice(["a", "b", "c", "d", "bad"], per),
                "count": rng.integers(0, 9, per).astype(str).astype(object),
            }
        )
        df.loc[rng.random(per) < 0.03, "value"] = np.nan
        df.loc[rng.random(per) < 0.02, "category"] = None
        df.loc[rng.random(per) < 0.01, "count"] = "n/a-ish"
        df = pd.concat([df, df.sample(frac=0.05, random_state=index)])
        df.to_csv(folder / f"part-{index:02d}.csv", index=False)
    (folder / "DONE").write_text("ok")
    return folder


def with_pandas(folder: Path) -> tuple[int, int, float]:
    began = time.perf_counter()
    df = pd.concat(
        [
            pd.read_csv(p, keep_default_na=False, na_values=[""])
            for p in sorted(folder.glob("*.csv"))
        ],
        ignore_index=True,
    )
    rows = len(df)
    numbers = pd.to_numeric(df["count"].astype("string").str.strip(), errors="coerce")
    bad = df["count"].notna() & (numbers.isna() | (numbers % 1 != 0))
    df = df[~bad].assign(count=numbers[~bad])
    df = df[~df[["value", "category"]].isna().any(axis=1)]
    df = df[df["value"] > 0]
    df = df[df["category"].notna() & ~df["category"].isin(["bad"])]
    df = df.assign(value=df["value"].clip(upper=10))
    df = df.drop_duplicates(subset=["id", "value", "category"])
    df.describe(include="all")
    train = df.sample(frac=0.8, random_state=42)
    validation = df.drop(train.index)
    mean, std = train[["value", "x1"]].mean(), train[["value", "x1"]].std(ddof=0)
    categories = sorted(train["category"].unique())
    for part in (train, validation):
        scaled = ((part[["value", "x1"]] - mean) / std).to_numpy(np.float32)
        onehot = (part["category"].to_numpy()[:, None] == np.array(categories)[None, :]).astype(
            np.float32
        )
        np.concatenate([scaled, onehot], axis=1)
    return rows, len(df), time.perf_counter() - began


def with_ray(folder: Path) -> tuple[int, int, float, float, float, dict[str, float]]:
    from kubetrain.api.v1alpha1 import TrainingJobSpec
    from kubetrain_runtime.data.pipeline import prepare
    from kubetrain_runtime.ray_env import ray_session

    spec = TrainingJobSpec.model_validate(
        {
            "data": {
                "source": {"uri": {"path": str(folder), "format": "csv"}},
                "cleaning": RULES,
                "preprocessing": {
                    "scale": [{"columns": ["value", "x1"], "method": "standard"}],
                    "encode": [{"columns": ["category"], "method": "onehot"}],
                },
                "features": ["value", "x1", "category"],
                "label": "count",
                "validation": {"fraction": 0.2, "seed": 42},
            },
            "model": {"type": "mlp", "task": "regression"},
        }
    )
    began = time.perf_counter()
    with ray_session(local=True):
        ready = time.perf_counter()
        prepare(spec, folder)  # cold: Ray's worker processes start and import pandas/pyarrow
        cold = time.perf_counter()
        prepared = prepare(spec, folder)
        warm = time.perf_counter()
    rows, kept = prepared.stats.rowsRead or 0, prepared.stats.rowsAfterCleaning or 0
    return rows, kept, cold - ready, warm - cold, ready - began, prepared.timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=8)
    args = parser.parse_args()
    folder = generate(args.rows, args.files)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    size = sum(p.stat().st_size for p in folder.glob("*.csv")) / 2**20
    print(f"data: {folder} ({size:.0f} MiB)")
    rows, kept, pandas_s = with_pandas(folder)
    rate = rows / pandas_s
    print(f"pandas   : {rows} rows -> {kept} kept in {pandas_s:6.2f} s = {rate:>10,.0f} rows/s")
    ray_rows, ray_kept, cold_s, warm_s, init_s, steps = with_ray(folder)
    assert (ray_rows, ray_kept) == (rows, kept), "Ray and pandas disagree on the counts"
    for name, seconds in (("cold", cold_s), ("warm", warm_s)):
        print(
            f"Ray Data ({name}): {ray_rows} rows -> {ray_kept} kept in {seconds:6.2f} s = "
            f"{ray_rows / seconds:>10,.0f} rows/s"
        )
    print(
        f"  ray.init {init_s:.1f} s; warm steps: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items())
    )
    print(f"ratio Ray/pandas rows/s: cold {pandas_s / cold_s:.2f}, warm {pandas_s / warm_s:.2f}")


if __name__ == "__main__":
    main()
