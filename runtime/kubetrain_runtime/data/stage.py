"""What every kind of input shares in the data stage: its result (``PreparedData``), its
step timer, Arrow's errors turned into one line for the user, and statistics computed per
block in Ray Data tasks and merged on the driver (kilobytes per block, never the rows)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pyarrow as pa
import ray.data

from kubetrain.api.v1alpha1 import DataStats
from kubetrain.errors import DataError, UserError
from kubetrain_runtime.data import stats as column_stats
from kubetrain_runtime.data.preprocess import FeaturePlan


@dataclass
class PreparedData:
    train: ray.data.MaterializedDataset
    validation: ray.data.MaterializedDataset
    stats: DataStats
    report: dict[str, Any]
    features: FeaturePlan
    num_features: int
    class_names: list[str] | None
    label_dtype: str | None
    likelihood: str | None
    preprocessor: Any
    label_encoder: Any | None
    size_bytes: int
    timings: dict[str, float] = field(default_factory=dict)
    #: The shape the data gives one sample: images ``[channels, height, width]``, sequence
    #: windows ``[time, features]``; None for a table's row of ``num_features`` values.
    sample_shape: list[int] | None = None
    #: ``TrainPlan.input_transform``: what the training device does to each batch first.
    input_transform: dict[str, Any] | None = None
    #: A regression's outputs per sample (a forecast's horizon times its targets).
    num_outputs: int | None = None


class StepTimer:
    """Seconds of each named step of the data stage, each measured on its own."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - started


def arrow_schema(ds: ray.data.Dataset) -> pa.Schema:
    schema = ds.schema()
    if schema is None:
        raise DataError("the source has no rows", field="spec.data.source")
    base = getattr(schema, "base_schema", None)
    if isinstance(base, pa.Schema):
        return base
    return pa.schema([(n, _to_arrow(t)) for n, t in zip(schema.names, schema.types, strict=True)])


def _to_arrow(dtype: Any) -> pa.DataType:
    """Blocks from pandas report Ray or numpy dtypes; object columns hold text."""
    if isinstance(dtype, pa.DataType):
        return dtype
    try:
        return (
            dtype.to_arrow_dtype()
            if hasattr(dtype, "to_arrow_dtype")
            else pa.from_numpy_dtype(dtype)
        )
    except (TypeError, ValueError, NotImplementedError, pa.ArrowException):
        return pa.string()


def _read_error(exc: BaseException) -> str | None:
    """The reason a file could not be read: an Arrow parse error anywhere in the chain, or
    an error raised inside one of Ray Data's read tasks."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, pa.ArrowException):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    if "ray::Read" in text:
        lines = [line for line in text.splitlines() if line.startswith(("ValueError", "OSError"))]
        return lines[-1] if lines else text.splitlines()[-1]
    return None


def user_error_inside(exc: BaseException) -> UserError | None:
    """The UserError a batch function raised in a Ray Data task, unwrapped from the
    ``RayTaskError`` (itself an instance of the error's class) that carries it."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        if isinstance(current, UserError) and not isinstance(cause, UserError):
            return current
        linked = (cause, current.__cause__, current.__context__)
        pending += [e for e in linked if isinstance(e, BaseException)]
    return None


@contextmanager
def reading(where: str) -> Iterator[None]:
    """Malformed files surface inside Ray tasks; turn Arrow's errors into one DataError
    line, and hand on a UserError that a batch function raised, without Ray's wrapping."""
    try:
        yield
    except Exception as exc:
        inner = user_error_inside(exc)
        if inner is exc:
            raise
        if inner is not None:
            raise type(inner)(inner.message, field=inner.field) from None
        reason = _read_error(exc)
        if reason is None:
            raise
        message = reason.strip().splitlines()[0]
        raise DataError(f"cannot read the data: {message}", field=where) from None


def _one_row(batch: Any, *, fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, list]:
    return {"partial": [json.dumps(fn(batch, **kwargs), default=float)]}


def reduce_blocks(
    ds: ray.data.Dataset,
    fn: Callable[..., Any],
    *,
    batch_format: str = "numpy",
    columns: list[str] | None = None,
    **kwargs: Any,
) -> list[Any]:
    """``fn`` applied to each block in a Ray Data task; the driver gathers only what it
    returns (a small JSON value per block)."""
    if columns is not None:
        ds = ds.select_columns(columns)
    rows = ds.map_batches(
        partial(_one_row, fn=fn, kwargs=kwargs), batch_format=batch_format, batch_size=None
    ).take_all()
    return [json.loads(row["partial"]) for row in rows]


def column_statistics(
    ds: ray.data.Dataset, count_values: tuple[str, ...] = (), columns: list[str] | None = None
) -> dict[str, Any]:
    """Describe-style statistics of ``columns`` (default all), per block, merged."""
    parts = reduce_blocks(
        ds, column_stats.partials, batch_format="pandas", columns=columns,
        count_values=count_values,
    )  # fmt: skip
    return column_stats.merge(parts)
