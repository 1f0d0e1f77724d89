"""A long table (one row per time step) into windows, one series at a time: sort by the time
column, cut windows of ``window`` steps every ``stride`` steps, pair each with its target
(the next ``horizon`` values, or a class), and split by time. Pure pandas and numpy (no
Ray): the pipeline runs ``series_windows`` on each group of a Ray Data ``groupby``.

The split never leaks the future. With a label per window (or a forecast), each series'
rows are cut at one point in time: training windows lie wholly before it and validation
windows wholly after it, so no window of one split overlaps a window of the other. With a
label per series, whole series are held out instead (a seeded hash of the series' key).

Every series also yields one summary row (``SPLIT == SUMMARY``) with its length, so that
the series dropped for being shorter than a window are counted without a second pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from kubetrain.errors import DataError
from kubetrain_runtime.data.stats import value_key

FEATURES = "x"
LABEL = "y"
SPLIT = "__kt_split"
LENGTH = "__kt_length"
SERIES = "__kt_series"  # the group key when the spec names no groupBy
TRAIN, VALIDATION, SUMMARY = 0, 1, 2
#: Windows per output batch: a long series yields several, so no block grows unbounded.
WINDOWS_PER_BATCH = 8192
_ORDER = "spec.data.sequence.orderBy"


@dataclass(frozen=True)
class WindowPlan:
    window: int
    horizon: int
    stride: int
    order_by: str
    group_by: str
    features: tuple[str, ...]
    targets: tuple[str, ...] = ()
    label: str | None = None
    label_per: str = "window"
    #: Class index by label value (``stats.value_key`` of the value), for classification.
    classes: dict[str, int] | None = None
    fraction: float = 0.2
    seed: int = 0
    #: A split the data has (labelPer series): series whose column holds one of
    #: ``split_values`` validate.
    split_column: str | None = None
    split_values: frozenset[str] = frozenset()

    @property
    def forecasting(self) -> bool:
        return bool(self.targets)

    @property
    def span(self) -> int:
        """Rows one sample needs: the window, and the forecast after it."""
        return self.window + (self.horizon if self.forecasting else 0)

    @property
    def x_width(self) -> int:
        return self.window * len(self.features)

    @property
    def y_width(self) -> int:
        return self.horizon * len(self.targets) if self.forecasting else 1


def time_order(values: pd.Series) -> np.ndarray:
    """Sort keys for the time column: numbers and dates as they are, text read as dates.
    A DataError naming ``orderBy`` when a value cannot be placed in time."""
    if pd.api.types.is_bool_dtype(values):
        raise DataError("holds booleans, which do not order time", field=_ORDER)
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        keys = values
    else:
        text = values.astype("string")
        keys = pd.to_datetime(text, errors="coerce", format="mixed")
        bad = keys.isna() & text.notna()
        if bad.any():
            raise DataError(
                f"cannot sort by it: {text[bad].iloc[0]!r} is neither a number nor a date",
                field=_ORDER,
            )
    if keys.isna().any():
        raise DataError(
            "has empty cells; drop those rows (spec.data.cleaning.dropNulls)", field=_ORDER
        )
    return np.asarray(keys)


def held_out(key: Any, seed: int, fraction: float) -> bool:
    """Whether a whole series goes to validation: a seeded hash, stable across runs."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def _starts(plan: WindowPlan, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Window starts of the training and validation windows of one series (label per
    window or forecast): the rows are cut at one time, each window wholly on one side."""
    span, stride = plan.span, plan.stride
    cut = rows - round(rows * plan.fraction)
    if rows - cut < span or cut < span:  # too short to split: all of it trains
        return np.arange(0, rows - span + 1, stride), np.arange(0)
    return np.arange(0, cut - span + 1, stride), np.arange(cut, rows - span + 1, stride)


def _class_indices(plan: WindowPlan, values: np.ndarray) -> np.ndarray:
    assert plan.classes is not None
    try:
        return np.asarray([plan.classes[value_key(v)] for v in values], dtype=np.int64)
    except KeyError as exc:
        raise DataError(
            f"label value {exc.args[0]!r} is not among the classes seen", field="spec.data.label"
        ) from None


def _samples(
    plan: WindowPlan, group: pd.DataFrame, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    values = group[list(plan.features)].to_numpy(dtype=np.float32)
    views = sliding_window_view(values, (plan.window, values.shape[1]))[:, 0]
    x = views[starts].reshape(len(starts), plan.x_width)
    if plan.forecasting:
        targets = group[list(plan.targets)].to_numpy(dtype=np.float32)
        ahead = sliding_window_view(targets, (plan.horizon, targets.shape[1]))[:, 0]
        y = ahead[starts + plan.window].reshape(len(starts), plan.y_width)
        return x, y
    assert plan.label is not None
    labels = group[plan.label].to_numpy()
    return x, _class_indices(plan, labels[starts + plan.window - 1])


def _series_label(plan: WindowPlan, group: pd.DataFrame, key: Any) -> Any:
    assert plan.label is not None
    values = group[plan.label].dropna().unique()
    if len(values) != 1:
        raise DataError(
            f"series {key!r} has {len(values)} labels ({', '.join(map(str, values[:3]))}); "
            "labelPer series needs one label per series (or use labelPer window)",
            field="spec.data.sequence.labelPer",
        )
    return values[0]


def _validates(plan: WindowPlan, group: pd.DataFrame, key: Any) -> bool:
    """Whether a whole series validates: by the data's own split column, else by a seeded
    hash of its key."""
    if plan.split_column is None:
        return held_out(key, plan.seed, plan.fraction)
    marks = {value_key(v) in plan.split_values for v in group[plan.split_column].dropna()}
    if len(marks) != 1:
        raise DataError(
            f"series {key!r} is partly in validation and partly not; the split column must "
            "be the same for all of a series' rows",
            field="spec.data.validation.column",
        )
    return marks.pop()


def _batch(
    plan: WindowPlan, x: np.ndarray, y: np.ndarray, split: int, length: int = 0
) -> dict[str, np.ndarray]:
    rows = len(x)
    return {
        FEATURES: x,
        LABEL: y,
        SPLIT: np.full(rows, split, dtype=np.int8),
        LENGTH: np.full(rows, length, dtype=np.int64),
    }


def summary(plan: WindowPlan, length: int) -> dict[str, np.ndarray]:
    """The one row that tells the statistics a series' length."""
    y = np.zeros((1, plan.y_width), np.float32) if plan.forecasting else np.zeros(1, np.int64)
    return _batch(plan, np.zeros((1, plan.x_width), np.float32), y, SUMMARY, length)


def series_windows(group: pd.DataFrame, plan: WindowPlan) -> Iterator[dict[str, np.ndarray]]:
    """Every window of one series, in batches, then the series' summary row."""
    rows = len(group)
    if rows >= plan.span:
        order = np.argsort(time_order(group[plan.order_by]), kind="stable")
        group = group.iloc[order].reset_index(drop=True)
        key = group[plan.group_by].iloc[0]
        if plan.label_per == "series" and not plan.forecasting:
            label = _series_label(plan, group, key)
            split = VALIDATION if _validates(plan, group, key) else TRAIN
            chosen = [(split, np.arange(0, rows - plan.span + 1, plan.stride))]
            group = group.assign(**{plan.label: label})
        else:
            train, validation = _starts(plan, rows)
            chosen = [(TRAIN, train), (VALIDATION, validation)]
        for split, starts in chosen:
            for first in range(0, len(starts), WINDOWS_PER_BATCH):
                x, y = _samples(plan, group, starts[first : first + WINDOWS_PER_BATCH])
                yield _batch(plan, x, y, split)
    yield summary(plan, rows)


# ------------------------------------------------------------------ statistics


def counts_partial(batch: dict[str, np.ndarray], window: int, classes: int = 0) -> dict[str, Any]:
    """Windows per split (and per class), and series kept, dropped and their lengths, in
    one batch. ``window`` is the rows one sample needs."""
    split, length = np.asarray(batch[SPLIT]), np.asarray(batch[LENGTH])
    lengths = length[split == SUMMARY]
    short = lengths < window
    out: dict[str, Any] = {
        "train": int((split == TRAIN).sum()),
        "validation": int((split == VALIDATION).sum()),
        "series": int((~short).sum()),
        "seriesDropped": int(short.sum()),
        "rowsDropped": int(lengths[short].sum()),
        "longest": int(lengths.max()) if len(lengths) else 0,
    }
    if classes:
        labels = np.asarray(batch[LABEL])[split != SUMMARY].astype(np.int64)
        out["classes"] = np.bincount(labels, minlength=classes).tolist()
    return out


def merge_counts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"train": 0, "validation": 0, "series": 0, "seriesDropped": 0,
                             "rowsDropped": 0, "longest": 0}  # fmt: skip
    for part in parts:
        for key, value in part.items():
            if key == "classes":
                total[key] = (np.asarray(total.get(key, 0)) + np.asarray(value)).tolist()
            elif key == "longest":
                total[key] = max(total[key], value)
            else:
                total[key] += value
    return total


def moments_partial(
    batch: dict[str, np.ndarray],
    features: int,
    targets: int,
    relative: bool = False,
    target_columns: tuple[int, ...] = (),
) -> dict[str, list[float]]:
    """Sums and squares of each feature (and target) over one batch of training windows;
    ``relative``: of their differences from each window's last step (a target's from its
    own feature column's last step, ``target_columns``)."""
    x = np.asarray(batch[FEATURES], dtype=np.float64)
    steps = x.reshape(len(x), -1, features)
    last = steps[:, -1:, :]
    values = (steps - last if relative else steps).reshape(-1, features)
    out = {"n": [float(len(values))], "sum": values.sum(axis=0).tolist(),
           "squares": (values * values).sum(axis=0).tolist()}  # fmt: skip
    if targets:
        y = np.asarray(batch[LABEL], dtype=np.float64).reshape(len(x), -1, targets)
        if relative:
            y = y - last[:, :, list(target_columns)]
        y = y.reshape(-1, targets)
        out |= {"yn": [float(len(y))], "ysum": y.sum(axis=0).tolist(),
                "ysquares": (y * y).sum(axis=0).tolist()}  # fmt: skip
    return out


def moments(
    parts: list[dict[str, list[float]]], prefix: str = ""
) -> tuple[list[float], list[float]]:
    """Mean and standard deviation from merged partials (a constant column gets std 1)."""
    n = sum(p[f"{prefix}n"][0] for p in parts)
    total = np.sum([p[f"{prefix}sum"] for p in parts], axis=0)
    squares = np.sum([p[f"{prefix}squares"] for p in parts], axis=0)
    mean = total / max(n, 1.0)
    std = np.sqrt(np.maximum(squares / max(n, 1.0) - mean * mean, 0.0))
    std[std < 1e-8] = 1.0
    return [float(v) for v in mean], [float(v) for v in std]
