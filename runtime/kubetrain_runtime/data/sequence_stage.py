"""The data stage for time series: read → clean → describe → window and split (per series,
in Ray Data tasks) → normalize, ending in two materialized datasets of ``x`` (a window,
``[time, features]`` flattened) and ``y`` (the forecast, or the class).

A long table holds one row per time step, of one series or of many (``groupBy``); Ray
Data's ``groupby`` brings each series' rows together and ``sequences.series_windows``
sorts and cuts them, so no window spans two series. Standardization is fitted on the
training windows and applied on the training device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data
from ray.data.expressions import col

from kubetrain.api import columns as cols
from kubetrain.api.v1alpha1 import (
    MAX_STATUS_CLASSES,
    DataStats,
    RuleDrop,
    SequenceSpec,
    SequenceStats,
    TrainingJobSpec,
)
from kubetrain.errors import DataError, SpecError
from kubetrain_runtime.data import preprocess, rules, sequences
from kubetrain_runtime.data import split as splitting
from kubetrain_runtime.data.clean import Cleaned, clean
from kubetrain_runtime.data.preprocess import FeaturePlan
from kubetrain_runtime.data.read import Source, read_source
from kubetrain_runtime.data.stage import (
    PreparedData,
    StepTimer,
    arrow_schema,
    column_statistics,
    reading,
    reduce_blocks,
)
from kubetrain_runtime.transforms import LAST_VALUE, STANDARDIZE

_SEQUENCE = "spec.data.sequence"


@dataclass(frozen=True)
class SequenceColumns:
    order_by: str
    group_by: str | None
    features: list[str]
    targets: list[str]
    label: str | None


def _sortable(schema: pa.Schema, name: str) -> None:
    kind = schema.field(name).type
    ok = (
        rules.kind_of(kind) in ("number", "string")
        or pa.types.is_timestamp(kind)
        or pa.types.is_date(kind)
    )
    if not ok:
        raise SpecError(
            f"column {name!r} holds {kind}, which does not sort into time; orderBy needs "
            "numbers, dates or text that reads as dates",
            field=f"{_SEQUENCE}.orderBy",
        )


def _numeric(names: list[str], kinds: dict[str, rules.Kind], field: str, what: str) -> None:
    for name in names:
        if kinds[name] not in ("number", "bool"):
            raise SpecError(
                f"column {name!r} holds {kinds[name]} values; {what} must be numbers",
                field=field,
            )


def plan_columns(
    spec: TrainingJobSpec, kinds: dict[str, rules.Kind], schema: pa.Schema
) -> SequenceColumns:
    """Resolve the time, series, feature and target columns against the cleaned table."""
    sequence, data = spec.data.sequence, spec.data
    assert sequence is not None
    names = list(kinds)
    order_by = cols.require(sequence.orderBy, names, f"{_SEQUENCE}.orderBy")
    _sortable(schema, order_by)
    group_by = None
    if sequence.groupBy is not None:
        group_by = cols.require(sequence.groupBy, names, f"{_SEQUENCE}.groupBy")
    label = None
    if data.label is not None:
        label = cols.require(data.label, names, "spec.data.label")
    targets = cols.expand(sequence.targets, names, f"{_SEQUENCE}.targets")
    _numeric(targets, kinds, f"{_SEQUENCE}.targets", "forecast targets")
    split_column = splitting.require_column(data.validation, names)
    apart = {order_by, group_by, label, split_column}
    if data.features:
        features = cols.expand(data.features, names, "spec.data.features")
        for index, name in enumerate(features):
            if name in apart:
                raise SpecError(
                    f"{name!r} is the time, series or label column, not a feature",
                    field=f"spec.data.features[{index}]",
                )
    else:
        features = [c for c in names if c not in apart and kinds[c] in ("number", "bool")]
    if not features:
        raise SpecError("no numeric feature columns are left", field="spec.data.features")
    _numeric(features, kinds, "spec.data.features", "sequence features")
    return SequenceColumns(order_by, group_by, features, targets, label)


def _check_nulls(columns: SequenceColumns, merged: dict[str, Any]) -> None:
    named = [(columns.order_by, f"{_SEQUENCE}.orderBy")]
    if columns.group_by:
        named.append((columns.group_by, f"{_SEQUENCE}.groupBy"))
    if columns.label:
        named.append((columns.label, "spec.data.label"))
    named += [(c, "spec.data.features") for c in columns.features]
    named += [(c, f"{_SEQUENCE}.targets") for c in columns.targets]
    for name, field in named:
        nulls = merged.get(name, {}).get("nulls", 0)
        if nulls:
            raise SpecError(
                f"column {name!r} has {nulls} empty cells after cleaning; drop those rows "
                f"(spec.data.cleaning.dropNulls, dropNullsIn: [{name}])",
                field=field,
            )


def _with_series(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    first = next(iter(batch.values()))
    batch[sequences.SERIES] = np.zeros(len(first), dtype=np.int8)
    return batch


@dataclass
class _Read:
    source: Source
    columns: SequenceColumns
    cleaning: rules.CleaningPlan
    result: Cleaned


def _read_and_clean(spec: TrainingJobSpec, manifest_dir: Path, task: str) -> _Read:
    source = read_source(spec.data, task, manifest_dir)
    with reading(source.description):
        schema = arrow_schema(source.ds)
    kinds = rules.kinds_of(schema)
    cleaning = rules.plan_cleaning(spec.data.cleaning, kinds)
    columns = plan_columns(spec, cleaning.kinds, schema)
    with reading(source.description):
        result = clean(source.ds, cleaning)
    return _Read(source, columns, cleaning, result)


def window_plan(
    sequence: SequenceSpec, columns: SequenceColumns, spec: TrainingJobSpec,
    classes: dict[str, int] | None,
) -> sequences.WindowPlan:  # fmt: skip
    return sequences.WindowPlan(
        window=sequence.window,
        horizon=sequence.horizon,
        stride=sequence.stride,
        order_by=columns.order_by,
        group_by=columns.group_by or sequences.SERIES,
        features=tuple(columns.features),
        targets=tuple(columns.targets),
        label=columns.label,
        label_per=sequence.labelPer,
        classes=classes,
        fraction=spec.data.validation.fraction,
        seed=spec.data.validation.seed,
        split_column=spec.data.validation.column,
        split_values=frozenset(spec.data.validation.values),
    )


def _windows(read: _Read, plan: sequences.WindowPlan) -> ray.data.MaterializedDataset:
    ds: ray.data.Dataset = read.result.ds
    if read.columns.group_by is None:
        ds = ds.map_batches(_with_series, batch_format="numpy")
    keep = [plan.order_by, plan.group_by, *plan.features, *plan.targets]
    keep += [c for c in (plan.label, plan.split_column) if c]
    ds = ds.select_columns(list(dict.fromkeys(keep)))
    with reading(read.source.description):
        return (
            ds.groupby(plan.group_by)
            .map_groups(partial(sequences.series_windows, plan=plan), batch_format="pandas")
            .materialize()
        )


def prepare_sequences(
    spec: TrainingJobSpec, manifest_dir: Path, on_step: Callable[[str], None]
) -> PreparedData:
    sequence = spec.data.sequence
    assert sequence is not None
    task = spec.model.effective_task
    timer = StepTimer()
    with timer.step("read_and_clean"):
        read = _read_and_clean(spec, manifest_dir, task)
    on_step("statistics")
    with timer.step("stats"):
        columns = read.columns
        classifying = task == "classification" and columns.label is not None
        merged = column_statistics(read.result.ds, (columns.label,) if classifying else ())
        _check_nulls(columns, merged)
        classes = None
        if classifying:
            assert columns.label is not None
            classes = preprocess.plan_classes(columns.label, read.cleaning.kinds, merged, None)
    on_step("windows and split")
    with timer.step("preprocess"):
        indices = _class_indices(classes) if classes else None
        plan = window_plan(sequence, columns, spec, indices)
        prepared = _split(spec, read, plan, classes)
    prepared.timings = timer.seconds
    prepared.report["timingsSeconds"] = {k: round(v, 3) for k, v in timer.seconds.items()}
    return prepared


def _class_indices(classes: preprocess.Classes) -> dict[str, int]:
    if not classes.needs_encoding:
        return {str(index): index for index in range(len(classes.names))}
    return {name: index for index, name in enumerate(classes.names)}


def _no_series(plan: sequences.WindowPlan, longest: int) -> DataError:
    need = f"window {plan.window}" + (f" + horizon {plan.horizon}" if plan.forecasting else "")
    return DataError(
        f"no series is as long as one sample ({need} = {plan.span} rows); the longest "
        f"has {longest}",
        field=f"{_SEQUENCE}.window",
    )


def _split(
    spec: TrainingJobSpec, read: _Read, plan: sequences.WindowPlan,
    classes: preprocess.Classes | None,
) -> PreparedData:  # fmt: skip
    windows = _windows(read, plan)
    classes_count = len(classes.names) if classes else 0
    columns = [sequences.SPLIT, sequences.LENGTH] + ([sequences.LABEL] if classes_count else [])
    counts = sequences.merge_counts(reduce_blocks(
        windows, sequences.counts_partial, columns=columns, window=plan.span,
        classes=classes_count,
    ))  # fmt: skip
    if counts["series"] == 0:
        raise _no_series(plan, counts["longest"])
    if counts["validation"] == 0 or counts["train"] == 0:
        raise SpecError(
            f"the {counts['series']} series hold {counts['train']} training and "
            f"{counts['validation']} validation windows; a split by time needs series of at "
            f"least {2 * plan.span} rows (two samples) or a larger fraction",
            field="spec.data.validation.fraction",
        )
    xy = [sequences.FEATURES, sequences.LABEL]
    train = windows.filter(expr=col(sequences.SPLIT) == sequences.TRAIN).select_columns(xy)
    validation = windows.filter(expr=col(sequences.SPLIT) == sequences.VALIDATION).select_columns(
        xy
    )
    transform = _standardization(spec.data.sequence, plan, train)  # type: ignore[arg-type]
    train_xy, val_xy = train.materialize(), validation.materialize()
    del windows
    stats = _stats(read, plan, counts, classes)
    class_names = classes.names if classes else None
    num_features = plan.x_width
    report = {
        "source": read.source.description,
        **stats.model_dump(mode="json", exclude_none=True),
        "features": list(plan.features),
        "targets": list(plan.targets),
        "numFeatures": num_features,
        "label": plan.label,
        "classes": class_names,
        "sequence": {**spec.data.sequence.model_dump(mode="json"),  # type: ignore[union-attr]
                     "normalization": transform},
    }  # fmt: skip
    return PreparedData(
        train=train_xy,
        validation=val_xy,
        stats=stats,
        report=report,
        features=FeaturePlan(list(plan.features), plan.label),
        num_features=num_features,
        class_names=class_names,
        label_dtype="int64" if classes else "float32",
        likelihood=None,
        preprocessor=None,
        label_encoder=plan.classes,
        size_bytes=int(train_xy.size_bytes() + val_xy.size_bytes()),
        sample_shape=[plan.window, len(plan.features)],
        input_transform=transform,
        num_outputs=plan.y_width if plan.forecasting else None,
    )


def _standardization(
    sequence: SequenceSpec, plan: sequences.WindowPlan, train: ray.data.Dataset
) -> dict[str, Any] | None:
    """``TrainPlan.input_transform`` of the windows, fitted on the training windows."""
    if sequence.normalize == "none":
        return None
    relative = sequence.normalize == "lastValue"
    target_columns = tuple(plan.features.index(t) for t in plan.targets if t in plan.features)
    if relative and len(target_columns) != len(plan.targets):
        absent = [t for t in plan.targets if t not in plan.features]
        raise SpecError(
            f"lastValue forecasts each target from its own last value, but {absent} are not "
            "features; add them to spec.data.features, or use normalize standard",
            field=f"{_SEQUENCE}.normalize",
        )
    parts = reduce_blocks(
        train, sequences.moments_partial, features=len(plan.features),
        targets=len(plan.targets), relative=relative, target_columns=target_columns,
    )  # fmt: skip
    mean, std = sequences.moments(parts)
    transform: dict[str, Any] = {"kind": LAST_VALUE if relative else STANDARDIZE,
                                 "mean": mean, "std": std}  # fmt: skip
    if plan.forecasting:
        transform["targetMean"], transform["targetStd"] = sequences.moments(parts, "y")
        transform["targetFeatures"] = list(target_columns)
    return transform


def _stats(
    read: _Read, plan: sequences.WindowPlan, counts: dict[str, Any],
    classes: preprocess.Classes | None,
) -> DataStats:  # fmt: skip
    result = read.result
    dropped = [*result.dropped, RuleDrop(rule="sequence.window", dropped=counts["rowsDropped"])]
    class_counts: dict[str, int] = {}
    if classes is not None:  # windows per class
        per_class = zip(classes.names, counts.get("classes", []), strict=False)
        largest = sorted(per_class, key=lambda kv: -kv[1])[:MAX_STATUS_CLASSES]
        class_counts = {name: int(n) for name, n in largest}
    return DataStats(
        rowsRead=result.rows_read,
        rowsAfterCleaning=result.rows_after - counts["rowsDropped"],
        droppedByRule=dropped,
        trainRows=counts["train"],
        validationRows=counts["validation"],
        classCounts=class_counts or None,
        sequences=SequenceStats(
            series=counts["series"],
            seriesDropped=counts["seriesDropped"],
            longestSeries=counts["longest"],
            window=plan.window,
            features=len(plan.features),
        ),
    )
