"""The cleaning plan: the spec's rules checked against the data's schema, plus the pure
batch functions that apply them.

Rules run in the order the API documents: casts, dropNulls, filters, clip, dropDuplicates.
Every row gets the index of the first rule that drops it (or -1), so one pass over the
data yields both the cleaned rows and exact per-rule counts, as if each rule had run on
what the previous ones left. Nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from kubetrain.api import columns as cols
from kubetrain.api.v1alpha1 import CastRule, Cleaning, ClipRule, FilterRule
from kubetrain.errors import SpecError

Kind = Literal["number", "string", "bool", "null", "other"]

#: Column that carries each row's dropping rule through the pass (-1: kept).
TAG = "__kt_drop"
KEPT = -1
_FIELD = "spec.data.cleaning"
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_CAST_KIND: dict[str, Kind] = {
    "int": "number",
    "float": "number",
    "string": "string",
    "bool": "bool",
}
_ORDERED_OPS = frozenset({"<", "<=", ">", ">="})


def kind_of(arrow_type: pa.DataType) -> Kind:
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        return "number"
    if pa.types.is_decimal(arrow_type):
        return "number"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_null(arrow_type):
        return "null"
    return "other"


def kinds_of(schema: pa.Schema) -> dict[str, Kind]:
    return {f.name: kind_of(f.type) for f in schema}


@dataclass(frozen=True)
class CleaningPlan:
    """The rules, resolved against real columns, and the kind of each column after casts."""

    casts: tuple[CastRule, ...] = ()
    null_columns: tuple[str, ...] | None = None  # None: dropNulls is off
    filters: tuple[FilterRule, ...] = ()
    clips: tuple[ClipRule, ...] = ()
    dedupe_keys: tuple[str, ...] | None = None  # None: dropDuplicates is off
    kinds: dict[str, Kind] = field(default_factory=dict)

    @property
    def row_rules(self) -> list[str]:
        """Rules that drop rows one at a time, in order (their index is the row's tag)."""
        names = [f"casts[{i}]" for i in range(len(self.casts))]
        if self.null_columns is not None:
            names.append("dropNulls")
        names += [f"filters[{i}]" for i in range(len(self.filters))]
        return names

    @property
    def rule_names(self) -> list[str]:
        """Every rule that can drop rows, in the order they apply."""
        return self.row_rules + (["dropDuplicates"] if self.dedupe_keys is not None else [])

    @property
    def tags_rows(self) -> bool:
        return bool(self.row_rules) or bool(self.clips)

    @property
    def empty(self) -> bool:
        return not self.tags_rows and self.dedupe_keys is None


def _value_kind(value: Any) -> Kind:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def _check_filter(index: int, rule: FilterRule, kind: Kind) -> None:
    where = f"{_FIELD}.filters[{index}]"
    if rule.op in ("is_null", "not_null"):
        return
    if kind in ("null", "other"):
        raise SpecError(
            f"column {rule.column!r} holds {kind} values; only is_null/not_null apply",
            field=f"{where}.column",
        )
    if rule.op in _ORDERED_OPS and kind == "bool":
        raise SpecError(f"op {rule.op} does not apply to a bool column", field=f"{where}.op")
    values = rule.value if isinstance(rule.value, list) else [rule.value]
    for value in values:
        if _value_kind(value) != kind:
            raise SpecError(
                f"column {rule.column!r} holds {kind} values; {value!r} is not one "
                "(add a cast to compare it as another type)",
                field=f"{where}.value",
            )


def plan_cleaning(cleaning: Cleaning, kinds: dict[str, Kind]) -> CleaningPlan:
    """Check every rule against the columns; raise SpecError naming the rule's field."""
    names = list(kinds)
    after = dict(kinds)
    for i, cast in enumerate(cleaning.casts):
        cols.require(cast.column, names, f"{_FIELD}.casts[{i}].column")
        after[cast.column] = _CAST_KIND[cast.type]
    null_columns = None
    if cleaning.dropNulls:
        chosen = cleaning.dropNullsIn or ["*"]
        null_columns = tuple(cols.expand(chosen, names, f"{_FIELD}.dropNullsIn"))
    for i, rule in enumerate(cleaning.filters):
        cols.require(rule.column, names, f"{_FIELD}.filters[{i}].column")
        _check_filter(i, rule, after[rule.column])
    for i, clip in enumerate(cleaning.clip):
        cols.require(clip.column, names, f"{_FIELD}.clip[{i}].column")
        if after[clip.column] != "number":
            raise SpecError(
                f"column {clip.column!r} holds {after[clip.column]} values; clip needs numbers",
                field=f"{_FIELD}.clip[{i}].column",
            )
    dedupe_keys = None
    if cleaning.dropDuplicates:
        dedupe_keys = tuple(
            cols.expand(cleaning.duplicateKeys or ["*"], names, f"{_FIELD}.duplicateKeys")
        )
    return CleaningPlan(
        casts=tuple(cleaning.casts),
        null_columns=null_columns,
        filters=tuple(cleaning.filters),
        clips=tuple(cleaning.clip),
        dedupe_keys=dedupe_keys,
        kinds=after,
    )


# ----------------------------------------------------------------- batch functions


def _text(series: pd.Series) -> pd.Series:
    return series.astype("string").str.strip().str.lower()


def cast_series(series: pd.Series, to: str) -> tuple[pd.Series, np.ndarray]:
    """Convert one column; return it and a mask of the cells that could not be converted
    (nulls stay null and are not failures: dropNulls is the rule for those)."""
    present = series.notna().to_numpy()
    if to == "string":
        return series.astype("string"), np.zeros(len(series), dtype=bool)
    if to == "bool":
        if pd.api.types.is_bool_dtype(series):
            return series.astype("boolean"), np.zeros(len(series), dtype=bool)
        text = _text(series)
        out = pd.Series(pd.NA, index=series.index, dtype="boolean")
        out[text.isin(list(_TRUE)).fillna(False)] = True
        out[text.isin(list(_FALSE)).fillna(False)] = False
        return out, present & out.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        numeric = series.astype("float64")
    else:
        numeric = pd.to_numeric(_text(series), errors="coerce").astype("float64")
    failed = present & numeric.isna().to_numpy()
    if to == "int":
        values = numeric.to_numpy()
        with np.errstate(invalid="ignore"):
            fractional = np.isfinite(values) & (np.floor(values) != values)
        failed |= fractional | (present & ~np.isfinite(np.nan_to_num(values, nan=0.0)))
        whole = numeric.where(~pd.Series(failed, index=series.index))
        return whole.round().astype("Int64"), failed
    return numeric, failed


def null_mask(df: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    return df[list(columns)].isna().any(axis=1).to_numpy()


def first_drop(n: int, drops: Sequence[np.ndarray]) -> np.ndarray:
    """Each row's first dropping rule (an index into ``drops``), or KEPT."""
    tag = np.full(n, KEPT, dtype=np.int16)
    for index, drop in enumerate(drops):
        tag[(tag == KEPT) & drop] = index
    return tag


def clip_series(series: pd.Series, low: float | None, high: float | None) -> pd.Series:
    return series.clip(lower=low, upper=high)


def count_tags(tags: np.ndarray, rules: int) -> list[int]:
    """Rows dropped by each row rule, from the tag column."""
    dropped = tags[tags != KEPT].astype(np.int64)
    return np.bincount(dropped, minlength=rules).tolist()[:rules] if rules else []


def bucket_of(df: pd.DataFrame, keys: Sequence[str], buckets: int) -> np.ndarray:
    """A stable hash of the key columns, so that equal keys meet in the same group."""
    hashed = pd.util.hash_pandas_object(df[list(keys)], index=False).to_numpy()
    return (hashed % np.uint64(max(buckets, 1))).astype(np.int64)


def drop_duplicate_rows(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    return df.drop_duplicates(subset=list(keys), keep="first")
