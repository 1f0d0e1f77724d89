"""In-memory sources: scikit-learn's bundled datasets and generated sine sequences.

Pure pandas/numpy (no Ray), so their shapes and names are unit-tested; ``read.py`` hands
the frames to Ray Data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kubetrain.api.v1alpha1 import GeneratedDataset

#: Bundled and generated datasets name their label this (see DataSpec.label).
TARGET = "target"

#: Frequencies of the generated sine waves, in cycles per sequence window; the range is
#: split into equal bands that serve as class labels.
SINE_MIN_CYCLES = 1.0
SINE_MAX_CYCLES = 5.0


@dataclass(frozen=True)
class Frame:
    """A source's rows plus the class names it knows (for plots and the model card)."""

    df: pd.DataFrame
    class_names: list[str] | None = None


def column_safe(name: str) -> str:
    """``'sepal length (cm)'`` → ``'sepal_length_cm'``: names that work in globs, YAML and
    expressions without quoting."""
    return re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_")


def co2_frame() -> Frame:
    """statsmodels' weekly CO2 at Mauna Loa (1958-2001), gaps (NaN) and all."""
    from statsmodels.datasets import co2

    raw = co2.load_pandas().data
    df = pd.DataFrame({"date": raw.index.to_numpy(), "co2": raw["co2"].to_numpy(np.float32)})
    return Frame(df)


def gunpoint_frame() -> Frame:
    """sktime's copy of UCR GunPoint in long form: one row per step of each series, with
    the archive's own train/test split as a column."""
    from sktime.datasets import load_gunpoint

    parts = []
    offset = 0
    for split in ("train", "test"):
        x, y = load_gunpoint(split=split, return_type="numpy3D")
        count, _, steps = x.shape
        parts.append(
            pd.DataFrame(
                {
                    "series": np.repeat(np.arange(offset, offset + count), steps),
                    "split": split,
                    "t": np.tile(np.arange(steps), count),
                    "value": x[:, 0, :].reshape(-1).astype(np.float32),
                    TARGET: np.repeat(np.asarray(y).astype(str), steps),
                }
            )
        )
        offset += count
    df = pd.concat(parts, ignore_index=True)
    return Frame(df, sorted(df[TARGET].unique().tolist()))


def builtin_frame(name: str) -> Frame:
    if name == "co2":
        return co2_frame()
    if name == "gunpoint":
        return gunpoint_frame()
    from sklearn import datasets

    loader = {
        "digits": datasets.load_digits,
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
    }
    bunch = loader[name](as_frame=True)
    features = bunch.frame.drop(columns=[TARGET])
    if name == "digits":  # pixel_0_0 .. pixel_7_7 → pixel_0 .. pixel_63, row-major
        features.columns = [f"pixel_{i}" for i in range(features.shape[1])]
    else:
        features.columns = [column_safe(c) for c in features.columns]
    df = features.astype(np.float32)
    df[TARGET] = bunch.frame[TARGET].astype(np.int64)
    names = [str(n) for n in bunch.target_names]
    return Frame(df.reset_index(drop=True), names)


def sine_frame(spec: GeneratedDataset, task: str) -> Frame:
    """Noisy sine waves with random frequency and phase.

    Columns ``t_0 .. t_{L-1}`` hold the sequence; ``target`` is the next value (regression)
    or the frequency band (classification, also used for generation where it is ignored).
    """
    rng = np.random.default_rng(spec.seed)
    n, length = spec.samples, spec.sequenceLength
    cycles = rng.uniform(SINE_MIN_CYCLES, SINE_MAX_CYCLES, size=n)
    phase = rng.uniform(0.0, 2 * np.pi, size=n)
    steps = np.arange(length + 1)
    clean = np.sin(2 * np.pi * cycles[:, None] * steps[None, :] / length + phase[:, None])
    noisy = (clean + rng.normal(0.0, spec.noise, size=clean.shape)).astype(np.float32)
    df = pd.DataFrame(noisy[:, :length], columns=[f"t_{i}" for i in range(length)])
    if task == "regression":
        df[TARGET] = noisy[:, length]
        return Frame(df)
    width = (SINE_MAX_CYCLES - SINE_MIN_CYCLES) / spec.classes
    band = np.minimum(((cycles - SINE_MIN_CYCLES) / width).astype(np.int64), spec.classes - 1)
    df[TARGET] = band
    edges = [SINE_MIN_CYCLES + i * width for i in range(spec.classes + 1)]
    names = [f"{edges[i]:.2g}-{edges[i + 1]:.2g} cycles" for i in range(spec.classes)]
    return Frame(df, names)
