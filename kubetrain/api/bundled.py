"""The columns of the datasets kubetrain bundles or generates, known without reading them.

With them a spec that names a column these datasets lack, or a model that cannot take their
shape (a CNN on 13 wine features), is refused when it is validated, by ``kubetrain validate``
and by the operator, instead of minutes later in a Ray cluster. The runtime's readers make
the same columns; a runtime-tier test holds the two to each other.
"""

from __future__ import annotations

import fnmatch
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
}
_DATA = "spec.data"


def feature_columns(source: DataSource) -> list[str] | None:
    """The columns besides the label, in order; None for files (known only once read)."""
    if source.builtin is not None:
        return list(_BUILTIN_COLUMNS[source.builtin.name])
    if source.generated is not None:
        return [f"t_{i}" for i in range(source.generated.sequenceLength)]
    return None


def check(spec: TrainingJobSpec) -> None:
    """A SpecError naming the field, where the spec cannot work on its bundled data."""
    columns = feature_columns(spec.data.source)
    if columns is None:
        return
    everything = [*columns, BUILTIN_LABEL]
    _check_rule_columns(spec, everything)
    features = _features(spec.data.features, everything)
    if not spec.data.preprocessing.encode and not spec.training.trainFunction:
        input_shape(spec.model, len(features))  # one-hot widths would come from the data


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
