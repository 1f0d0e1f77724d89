"""The data stage on the driver: read → clean → stats → split → preprocess, ending in two
materialized datasets (``x``, ``y``) for the workers.

Materializing matters on small machines: otherwise Ray Data tasks compete with training
workers for CPUs (two workers at one CPU each on two cores hang), and unmaterialized
preprocessing re-runs every epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import ray.data

from kubetrain.api.shapes import input_shape
from kubetrain.api.v1alpha1 import MAX_STATUS_CLASSES, DataSpec, DataStats, TrainingJobSpec
from kubetrain.errors import DataError, SpecError
from kubetrain_runtime.data import preprocess, rules
from kubetrain_runtime.data import split as splitting
from kubetrain_runtime.data import stats as column_stats
from kubetrain_runtime.data.clean import Cleaned, clean
from kubetrain_runtime.data.preprocess import FEATURES, FeaturePlan
from kubetrain_runtime.data.read import Source, read_source
from kubetrain_runtime.data.stage import (
    PreparedData,
    StepTimer,
    arrow_schema,
    column_statistics,
    reading,
)

__all__ = ["PreparedData", "prepare"]


def noise_floor(data: DataSpec, task: str) -> dict[str, Any]:
    """For generated regression data, the MSE that no model beats on average: the variance
    of the noise added to the target (``noise`` is its standard deviation)."""
    generated = data.source.generated
    if generated is None or task != "regression":
        return {}
    return {
        "noiseFloorMse": round(float(generated.noise) ** 2, 8),
        "noiseFloor": "the target's noise variance: the lowest validation MSE a model can reach",
    }


@dataclass
class _Cleaned:
    source: Source
    cleaning: rules.CleaningPlan
    features: FeaturePlan
    result: Cleaned


@dataclass
class _Described:
    merged: dict[str, Any]
    classes: preprocess.Classes | None


@dataclass
class _Split:
    train: ray.data.MaterializedDataset
    validation: ray.data.MaterializedDataset
    train_rows: int
    validation_rows: int
    chain: Any
    label_encoder: Any | None
    label_dtype: str | None
    num_features: int


def prepare(
    spec: TrainingJobSpec,
    manifest_dir: Path,
    on_step: Callable[[str], None] = lambda _name: None,
) -> PreparedData:
    """Read, clean, describe, split and preprocess; ``on_step`` hears each step after the
    first (reading and cleaning) begin. Images and sequences have stages of their own."""
    if spec.data.image_spec is not None:
        from kubetrain_runtime.data.image_stage import prepare_images

        return prepare_images(spec, manifest_dir, on_step)
    if spec.data.sequence is not None:
        from kubetrain_runtime.data.sequence_stage import prepare_sequences

        return prepare_sequences(spec, manifest_dir, on_step)
    timer = StepTimer()
    task = spec.model.effective_task
    with timer.step("read_and_clean"):
        cleaned = _read_and_clean(spec, manifest_dir, task)
    on_step("statistics")
    with timer.step("stats"):
        described = _describe(cleaned, task)
    on_step("splitting and preprocessing")
    with timer.step("preprocess"):
        split = _split_and_preprocess(spec.data, cleaned, described, task)
    return _prepared(spec, cleaned, described, split, task=task, timings=timer.seconds)


def _read_and_clean(spec: TrainingJobSpec, manifest_dir: Path, task: str) -> _Cleaned:
    """Read the source, plan cleaning and features from its schema (failing early on a
    shape the model cannot take), and clean."""
    data, model = spec.data, spec.model
    source = read_source(data, task, manifest_dir)
    with reading(source.description):
        kinds = rules.kinds_of(arrow_schema(source.ds))
    cleaning = rules.plan_cleaning(data.cleaning, kinds)
    features = preprocess.plan_features(
        data, cleaning.kinds, default_label=source.default_label, model_type=model.type, task=task
    )
    if not features.onehot and not spec.training.trainFunction:
        input_shape(model, len(features.features))  # fail early, before any pass
    with reading(source.description):
        result = clean(source.ds, cleaning)
    return _Cleaned(source, cleaning, features, result)


def _describe(cleaned: _Cleaned, task: str) -> _Described:
    """Column statistics in one pass; the classes of a classification label."""
    label = cleaned.features.label
    classifying = task == "classification" and label is not None
    merged = column_statistics(cleaned.result.ds, (label,) if classifying else ())
    preprocess.check_nulls(cleaned.features, merged)
    classes = None
    if classifying:
        assert label is not None
        classes = preprocess.plan_classes(
            label, cleaned.cleaning.kinds, merged, cleaned.source.class_names
        )
    rows = cleaned.result.rows_after
    if rows < 2:
        raise DataError(
            f"{rows} rows are left after cleaning; nothing to train on",
            field=cleaned.source.description,
        )
    return _Described(merged, classes)


def _split_and_preprocess(
    data: DataSpec, cleaned: _Cleaned, described: _Described, task: str
) -> _Split:
    """Split, encode the label, fit the preprocessors on the training split only, and
    materialize both splits as (x, y)."""
    split, features, classes = data.validation, cleaned.features, described.classes
    label = features.label
    if split.column is not None:
        train, validation = splitting.by_column(cleaned.result.ds, split)
    else:
        train, validation = cleaned.result.ds.train_test_split(
            test_size=split.fraction, shuffle=True, seed=split.seed
        )
    train_rows, val_rows = train.count(), validation.count()
    if train_rows == 0 or val_rows == 0:
        rows = cleaned.result.rows_after
        raise SpecError(
            f"{rows} rows cannot be split {splitting.describe(split)}: "
            f"{train_rows} would train and {val_rows} validate",
            field=splitting.FIELD if split.column else "spec.data.validation.fraction",
        )
    label_encoder = None
    if classes is not None and classes.needs_encoding:
        from ray.data.preprocessors import LabelEncoder

        # Fitted on all cleaned rows: the class list is not a statistic that leaks, and a
        # class seen only in validation must still have an index.
        label_encoder = LabelEncoder(label).fit(cleaned.result.ds)
        train, validation = label_encoder.transform(train), label_encoder.transform(validation)
    chain = preprocess.build_preprocessor(features).fit(train)
    classifying = task == "classification" and label is not None
    label_dtype = None if label is None else ("int64" if classifying else "float32")
    to_xy = partial(
        preprocess.to_xy, lists=features.list_features, label=label, label_dtype=label_dtype
    )
    train_xy = chain.transform(train).map_batches(to_xy, batch_format="numpy").materialize()
    val_xy = chain.transform(validation).map_batches(to_xy, batch_format="numpy").materialize()
    num_features = int(train_xy.take_batch(1, batch_format="numpy")[FEATURES].shape[1])
    return _Split(
        train_xy, val_xy, train_rows, val_rows, chain, label_encoder, label_dtype, num_features
    )


def _class_counts(described: _Described, label: str | None) -> dict[str, int] | None:
    """Rows per class after cleaning (the largest ``MAX_STATUS_CLASSES``), by class name."""
    if described.classes is None or label is None:
        return None
    values = described.merged.get(label, {}).get("values", {})
    names = described.classes.names
    if not described.classes.needs_encoding:  # 0..K-1: show the known names
        values = {names[int(k)]: n for k, n in values.items() if int(k) < len(names)}
    largest = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_STATUS_CLASSES]
    return {str(k): int(n) for k, n in largest}


def _prepared(
    spec: TrainingJobSpec,
    cleaned: _Cleaned,
    described: _Described,
    split: _Split,
    *,
    task: str,
    timings: dict[str, float],
) -> PreparedData:
    """The stage's result, with its statistics and its data report."""
    result, features = cleaned.result, cleaned.features
    stats = DataStats(
        rowsRead=result.rows_read,
        rowsAfterCleaning=result.rows_after,
        droppedByRule=result.dropped,
        trainRows=split.train_rows,
        validationRows=split.validation_rows,
        classCounts=_class_counts(described, features.label),
    )
    class_names = described.classes.names if described.classes else None
    report = {
        "source": cleaned.source.description,
        **stats.model_dump(mode="json"),
        "features": features.vector_layout,
        "numFeatures": split.num_features,
        "label": features.label,
        "classes": class_names,
        "columns": column_stats.describe(described.merged),
        "preprocessing": repr(split.chain),
        "timingsSeconds": {k: round(v, 3) for k, v in timings.items()},
        **noise_floor(spec.data, task),
    }
    likelihood = None
    if spec.model.type == "vae":
        likelihood = "bernoulli" if features.unit_interval(cleaned.cleaning.kinds) else "gaussian"
    return PreparedData(
        train=split.train,
        validation=split.validation,
        stats=stats,
        report=report,
        features=features,
        num_features=split.num_features,
        class_names=class_names,
        label_dtype=split.label_dtype,
        likelihood=likelihood,
        preprocessor=split.chain,
        label_encoder=split.label_encoder,
        size_bytes=int(split.train.size_bytes() + split.validation.size_bytes()),
        timings=timings,
    )
