"""The columns of the datasets kubetrain bundles or generates, known without reading them.

With them a spec that names a column these datasets lack, or a model that cannot take their
shape (a CNN on 13 wine features), is refused when it is validated, by ``kubetrain validate``
and by the operator, instead of minutes later in a Ray cluster. The runtime's readers make
the same columns; a runtime-tier test holds the two to each other.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence

from kubetrain.api import columns as cols
from kubetrain.api.shapes import input_shape
from kubetrain.api.v1alpha1 import BUILTIN_LABEL, DataSource, TrainingJobSpec
from kubetrain.errors import SpecError

_BUILTIN_COLUMNS: dict[str, list[str]] = {
    "digits": [f"pixel_{i}" for i in range(64)],
    "iris": ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"],
    "wine": [
        "alcohol",
        "malic_acid",
        "ash",
        "alcalinity_of_ash",
        "magnesium",
        "total_phenols",
        "flavanoids",
        "nonflavanoid_phenols",
        "proanthocyanins",
        "color_intensity",
        "hue",
        "od280_od315_of_diluted_wines",
        "proline",
    ],
    "co2": ["date", "co2"],
    "gunpoint": ["series", "split", "t", "value"],
}
#: Bundled columns that hold no numbers (a sequence's default features leave them out).
_NOT_NUMERIC = {"co2": {"date"}, "gunpoint": {"split"}}
#: Datasets without a label column: a series to forecast.
_UNLABELLED = {"co2"}
_DATA = "spec.data"


def feature_columns(source: DataSource) -> list[str] | None:
    """The columns besides the label, in order; None for files (known only once read)."""
    if source.builtin is not None:
        return list(_BUILTIN_COLUMNS[source.builtin.name])
    if source.generated is not None:
        return [f"t_{i}" for i in range(source.generated.sequenceLength)]
    return None


def check(spec: TrainingJobSpec) -> None:
    """A SpecError naming the field, where the spec cannot work on its bundled data (or
    on images whose size and mode it fixes)."""
    custom = bool(spec.training.trainFunction)
    if not custom:
        _check_image_shape(spec)
    columns = feature_columns(spec.data.source)
    if columns is None:
        return
    name = spec.data.source.builtin.name if spec.data.source.builtin else ""
    everything = columns if name in _UNLABELLED else [*columns, BUILTIN_LABEL]
    _check_rule_columns(spec, everything)
    if spec.data.sequence is not None:
        sample = _sequence_sample(spec, everything, _NOT_NUMERIC.get(name, set()))
        if not custom:
            input_shape(spec.model, sample[0] * sample[1], sample)
        return
    if name in _UNLABELLED:
        raise SpecError(
            f"{name} is a series with no label: cut it into windows with spec.data.sequence "
            "and forecast it (sequence.targets)",
            field=f"{_DATA}.sequence",
        )
    features = _features(spec.data.features, everything)
    if not spec.data.preprocessing.encode and not custom:
        input_shape(spec.model, len(features))  # one-hot widths would come from the data


def _check_image_shape(spec: TrainingJobSpec) -> None:
    """Images with a fixed size and mode have a known shape: a kernel larger than the
    image fails at validation, not in a cluster."""
    image = spec.data.image_spec
    if image is None or not image.size or not image.mode:
        return
    sample = [1 if image.mode == "L" else 3, *image.size]
    input_shape(spec.model, math.prod(sample), sample)


def _sequence_sample(
    spec: TrainingJobSpec, everything: list[str], not_numeric: set[str]
) -> list[int]:
    """``[window, features]`` of a bundled series, its columns checked as the runtime
    checks them."""
    sequence, data = spec.data.sequence, spec.data
    assert sequence is not None
    where = f"{_DATA}.sequence"
    cols.require(sequence.orderBy, everything, f"{where}.orderBy")
    if sequence.groupBy is not None:
        cols.require(sequence.groupBy, everything, f"{where}.groupBy")
    if data.label is not None:
        cols.require(data.label, everything, f"{_DATA}.label")
    targets = cols.expand(sequence.targets, everything, f"{where}.targets")
    for index, name in enumerate(targets):
        if name in not_numeric:
            raise SpecError(f"column {name!r} holds no numbers", field=f"{where}.targets[{index}]")
    split_column = data.validation.column
    if split_column is not None:
        cols.require(split_column, everything, f"{_DATA}.validation.column")
    apart = {sequence.orderBy, sequence.groupBy, data.label, split_column}
    if data.features:
        features = cols.expand(data.features, everything, f"{_DATA}.features")
    else:
        features = [c for c in everything if c not in apart and c not in not_numeric]
        features = [c for c in features if c != BUILTIN_LABEL]
    for index, name in enumerate(features):
        if name in apart or name in not_numeric:
            raise SpecError(
                f"{name!r} cannot be a sequence feature (it is the time, series or label "
                "column, or holds no numbers)",
                field=f"{_DATA}.features[{index}]",
            )
    return [sequence.window, len(features)]


def _features(listed: Sequence[str], everything: list[str]) -> list[str]:
    if not listed:
        return everything[:-1]
    features = cols.expand(listed, everything, f"{_DATA}.features")
    if BUILTIN_LABEL in features:
        index = next(i for i, p in enumerate(listed) if fnmatch.fnmatchcase(BUILTIN_LABEL, p))
        raise SpecError(
            f"{BUILTIN_LABEL!r} is the label, not a feature", field=f"{_DATA}.features[{index}]"
        )
    return features


def _check_rule_columns(spec: TrainingJobSpec, everything: list[str]) -> None:
    cleaning, pre = spec.data.cleaning, spec.data.preprocessing
    where = f"{_DATA}.cleaning"
    for kind, rules in (("casts", cleaning.casts), ("filters", cleaning.filters)):
        for i, rule in enumerate(rules):
            cols.require(rule.column, everything, f"{where}.{kind}[{i}].column")
    for i, clip in enumerate(cleaning.clip):
        cols.require(clip.column, everything, f"{where}.clip[{i}].column")
    cols.expand(cleaning.dropNullsIn, everything, f"{where}.dropNullsIn")
    cols.expand(cleaning.duplicateKeys, everything, f"{where}.duplicateKeys")
    for kind, steps in (("impute", pre.impute), ("scale", pre.scale), ("encode", pre.encode)):
        for i, step in enumerate(steps):
            cols.expand(step.columns, everything, f"{_DATA}.preprocessing.{kind}[{i}].columns")
