"""Describe-style column statistics, computed per block and merged.

Each Ray Data block yields a small ``partial`` (counts, mean and M2 for Chan's parallel
variance, min/max, a quantile sketch, value counts); ``merge`` combines them and
``describe`` turns the result into the data report's per-column table. Quantiles are exact
while the data has at most ``SKETCH_SIZE`` rows per block and approximate beyond. Pure
pandas/numpy: no Ray.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

SKETCH_SIZE = 1024
#: Distinct values counted per text column; beyond this, unique/top are approximate.
MAX_DISTINCT = 1000
QUANTILES = (0.25, 0.5, 0.75)

Partial = dict[str, Any]


def _kind(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_numeric_dtype(series):
        return "number"
    return "text"


def _sketch(values: np.ndarray) -> list[list[float]]:
    """[value, weight] pairs: every value when few, else evenly spaced order statistics."""
    values = np.sort(values)
    if len(values) <= SKETCH_SIZE:
        return [[float(v), 1.0] for v in values]
    picks = np.quantile(values, np.linspace(0, 1, SKETCH_SIZE))
    weight = len(values) / SKETCH_SIZE
    return [[float(v), weight] for v in picks]


def partial(series: pd.Series, *, count_values: bool = False) -> Partial:
    """Statistics of one column of one block. Text and bool columns always count their
    values; numeric ones only when asked (the label, whose classes are needed)."""
    kind = _kind(series)
    present = series.dropna()
    out: Partial = {"kind": kind, "count": len(present), "nulls": len(series) - len(present)}
    if kind == "number" and len(present):
        values = present.to_numpy(dtype=np.float64)
        mean = float(values.mean())
        out |= {
            "mean": mean,
            "m2": float(((values - mean) ** 2).sum()),
            "min": float(values.min()),
            "max": float(values.max()),
            "sketch": _sketch(values),
        }
    if kind in ("text", "bool") or count_values:
        counts = present.astype(str).value_counts() if kind != "number" else present.value_counts()
        out["values"] = {value_key(k): int(v) for k, v in counts.head(MAX_DISTINCT).items()}
        out["truncated"] = len(counts) > MAX_DISTINCT
    return out


def value_key(value: Any) -> str:
    """Value-count keys are strings (JSON); whole floats read as ints (3.0 → '3')."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def partials(df: pd.DataFrame, count_values: Iterable[str] = ()) -> dict[str, Partial]:
    wanted = set(count_values)
    return {str(c): partial(df[c], count_values=c in wanted) for c in df.columns}


def partials_batch(df: pd.DataFrame, count_values: Iterable[str] = ()) -> dict[str, list[str]]:
    """One block's partials as a one-row batch (JSON), for ``Dataset.map_batches``."""
    return {"partial": [json.dumps(partials(df, count_values))]}


def _merge_two(a: Partial, b: Partial) -> Partial:
    """Chan et al.'s pairwise update for mean and M2; everything else adds up."""
    numeric = "mean" in a or "mean" not in b
    out: Partial = {
        "kind": a["kind"] if numeric else b["kind"],
        "count": a["count"] + b["count"],
        "nulls": a["nulls"] + b["nulls"],
    }
    if "mean" in a and "mean" in b:
        n_a, n_b = a["count"], b["count"]
        delta = b["mean"] - a["mean"]
        total = n_a + n_b
        out["mean"] = a["mean"] + delta * n_b / total
        out["m2"] = a["m2"] + b["m2"] + delta * delta * n_a * n_b / total
        out["min"] = min(a["min"], b["min"])
        out["max"] = max(a["max"], b["max"])
        out["sketch"] = _compress(a["sketch"] + b["sketch"])
    elif "mean" in a or "mean" in b:
        source = a if "mean" in a else b
        out |= {k: source[k] for k in ("mean", "m2", "min", "max", "sketch")}
    if "values" in a or "values" in b:
        values = dict(a.get("values", {}))
        for key, n in b.get("values", {}).items():
            values[key] = values.get(key, 0) + n
        truncated = a.get("truncated", False) or b.get("truncated", False)
        if len(values) > MAX_DISTINCT:
            values, truncated = (
                dict(sorted(values.items(), key=lambda kv: -kv[1])[:MAX_DISTINCT]),
                True,
            )
        out["values"], out["truncated"] = values, truncated
    return out


def _compress(sketch: list[list[float]]) -> list[list[float]]:
    if len(sketch) <= 4 * SKETCH_SIZE:
        return sketch
    pairs = sorted(sketch)
    weights = np.array([w for _, w in pairs])
    values = np.array([v for v, _ in pairs])
    total = weights.sum()
    targets = np.linspace(0, 1, SKETCH_SIZE) * total
    picked = np.interp(targets, np.cumsum(weights), values)
    return [[float(v), float(total / SKETCH_SIZE)] for v in picked]


def merge(parts: Iterable[dict[str, Partial]]) -> dict[str, Partial]:
    merged: dict[str, Partial] = {}
    for block in parts:
        for column, stats in block.items():
            merged[column] = _merge_two(merged[column], stats) if column in merged else stats
    return merged


def quantile(sketch: list[list[float]], q: float) -> float:
    """pandas' default (linear) quantile when the sketch holds every value; a weighted
    interpolation otherwise."""
    pairs = sorted(sketch)
    values = np.array([v for v, _ in pairs])
    weights = np.array([w for _, w in pairs])
    if np.all(weights == 1.0):
        return float(np.quantile(values, q))
    cumulative = np.cumsum(weights) - weights / 2
    return float(np.interp(q * weights.sum(), cumulative, values))


def _round(value: float) -> float:
    return float(f"{value:.6g}") if math.isfinite(value) else value


def describe(merged: dict[str, Partial]) -> dict[str, dict[str, Any]]:
    """The data report's per-column table, in the spirit of ``pandas.DataFrame.describe``."""
    table: dict[str, dict[str, Any]] = {}
    for column, stats in merged.items():
        row: dict[str, Any] = {
            "type": stats["kind"],
            "count": stats["count"],
            "nulls": stats["nulls"],
        }
        if "mean" in stats:
            n = stats["count"]
            std = math.sqrt(stats["m2"] / (n - 1)) if n > 1 else float("nan")
            row |= {"mean": _round(stats["mean"]), "std": _round(std), "min": _round(stats["min"])}
            for q in QUANTILES:
                row[f"{int(q * 100)}%"] = _round(quantile(stats["sketch"], q))
            row["max"] = _round(stats["max"])
        if "values" in stats:
            values = stats["values"]
            row["unique"] = len(values)
            if stats.get("truncated"):
                row["uniqueAtLeast"] = True
            if values:
                top = max(values.items(), key=lambda kv: kv[1])
                row |= {"top": top[0], "freq": top[1]}
        table[column] = row
    return table


def distinct_values(merged: dict[str, Partial], column: str) -> list[str] | None:
    """Every distinct value of a text/bool column, or None when there were too many."""
    stats = merged.get(column, {})
    if "values" not in stats or stats.get("truncated"):
        return None
    return sorted(stats["values"])
