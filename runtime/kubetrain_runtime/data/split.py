"""A split the data already has (``spec.data.validation.column``): the rows whose column
holds one of ``values`` validate. The mask is computed per batch in Ray Data tasks and the
two sides are filtered from it, so the split costs one pass and no shuffle."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import ray.data
from ray.data.expressions import col

from kubetrain.api import columns as cols
from kubetrain.api.v1alpha1 import ValidationSplit
from kubetrain_runtime.data.stats import value_key

HELD_OUT = "__kt_validation"
FIELD = "spec.data.validation.column"


def held_out(values: Any, wanted: frozenset[str]) -> np.ndarray:
    """Which of ``values`` mark a validation row (compared as text: ``3`` matches '3')."""
    return np.asarray(
        [not pd.isna(v) and value_key(v) in wanted for v in np.asarray(values, dtype=object)],
        dtype=bool,
    )


def _mark(batch: dict[str, np.ndarray], column: str, wanted: frozenset[str]) -> dict[str, Any]:
    batch[HELD_OUT] = held_out(batch[column], wanted)
    return batch


def require_column(split: ValidationSplit, names: list[str]) -> str | None:
    """The split column, checked against the data's columns (None: a random split)."""
    if split.column is None:
        return None
    return cols.require(split.column, names, FIELD)


def by_column(
    ds: ray.data.Dataset, split: ValidationSplit
) -> tuple[ray.data.Dataset, ray.data.Dataset]:
    """Training and validation rows by the split column (its own column is kept)."""
    assert split.column is not None
    marked = ds.map_batches(
        partial(_mark, column=split.column, wanted=frozenset(split.values)), batch_format="numpy"
    ).materialize()
    train = marked.filter(expr=col(HELD_OUT) == False).drop_columns([HELD_OUT])  # noqa: E712
    validation = marked.filter(expr=col(HELD_OUT) == True).drop_columns([HELD_OUT])  # noqa: E712
    return train, validation


def describe(split: ValidationSplit) -> str:
    """How the split was made, for error messages."""
    if split.column is None:
        return f"{1 - split.fraction:g}/{split.fraction:g}"
    return f"by {split.column} in {split.values}"
