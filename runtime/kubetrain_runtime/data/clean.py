"""Clean with Ray Data, counting what each rule drops.

One pass tags every row with the first rule that drops it (casts, dropNulls, then the
filters, which are Ray Data expressions evaluated with ``with_column``) and applies clip;
the tags give exact per-rule counts. Duplicates are then dropped globally: Ray Data has
no drop_duplicates, so rows are grouped by a hash of their key columns (equal keys meet
in one group) and each group is deduplicated with pandas.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import ray.data
from ray.data.expressions import Expr, col

from kubetrain.api.v1alpha1 import FilterRule, RuleDrop
from kubetrain_runtime.data import rules
from kubetrain_runtime.data.rules import TAG, CleaningPlan
from kubetrain_runtime.data.stage import reduce_blocks

_BUCKET = "__kt_bucket"


@dataclass
class Cleaned:
    ds: ray.data.MaterializedDataset
    rows_read: int
    rows_after: int
    dropped: list[RuleDrop]


def filter_expr(rule: FilterRule) -> Expr:
    """A rule as a Ray Data predicate. A null cell fails every comparison (also != and
    not_in), so only is_null/not_null keep rows with nulls."""
    column = col(rule.column)
    if rule.op == "is_null":
        return column.is_null()
    if rule.op == "not_null":
        return column.is_not_null()
    if rule.op == "in":
        test = column.is_in(list(rule.value))
    elif rule.op == "not_in":
        test = column.not_in(list(rule.value))
    else:
        test = {
            "==": column == rule.value,
            "!=": column != rule.value,
            "<": column < rule.value,
            "<=": column <= rule.value,
            ">": column > rule.value,
            ">=": column >= rule.value,
        }[rule.op]
    return test & column.is_not_null()


def _cast_column(i: int) -> str:
    return f"__kt_cast{i}"


def _filter_column(i: int) -> str:
    return f"__kt_filter{i}"


def _apply_casts(df: pd.DataFrame, plan: CleaningPlan) -> pd.DataFrame:
    for i, cast in enumerate(plan.casts):
        df[cast.column], failed = rules.cast_series(df[cast.column], cast.type)
        df[_cast_column(i)] = failed
    return df


def _tag_and_clip(df: pd.DataFrame, plan: CleaningPlan) -> pd.DataFrame:
    drops = [df.pop(_cast_column(i)).to_numpy(dtype=bool) for i in range(len(plan.casts))]
    if plan.null_columns is not None:
        drops.append(rules.null_mask(df, plan.null_columns))
    for i in range(len(plan.filters)):
        passed = df.pop(_filter_column(i)).fillna(False).to_numpy(dtype=bool)
        drops.append(~passed)
    for clip in plan.clips:
        df[clip.column] = rules.clip_series(df[clip.column], clip.min, clip.max)
    df[TAG] = rules.first_drop(len(df), drops)
    return df


def _tag(ds: ray.data.Dataset, plan: CleaningPlan) -> ray.data.Dataset:
    if plan.casts:
        ds = ds.map_batches(partial(_apply_casts, plan=plan), batch_format="pandas")
    for i, rule in enumerate(plan.filters):
        ds = ds.with_column(_filter_column(i), filter_expr(rule))
    return ds.map_batches(partial(_tag_and_clip, plan=plan), batch_format="pandas")


def _tag_counts(batch: dict[str, np.ndarray], rules_count: int) -> list[int]:
    return rules.count_tags(batch[TAG], rules_count)


def _count_tags(tagged: ray.data.Dataset, rules_count: int) -> list[int]:
    """Rows each rule dropped, counted per block in Ray Data tasks."""
    parts = reduce_blocks(tagged, _tag_counts, columns=[TAG], rules_count=rules_count)
    counts = np.zeros(rules_count, dtype=np.int64)
    for part in parts:
        counts += np.asarray(part, dtype=np.int64)
    return counts.tolist()


def _with_bucket(df: pd.DataFrame, keys: tuple[str, ...], buckets: int) -> pd.DataFrame:
    df[_BUCKET] = rules.bucket_of(df, keys, buckets)
    return df


def _dedupe_group(df: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    return rules.drop_duplicate_rows(df, keys).drop(columns=[_BUCKET])


def drop_duplicates(ds: ray.data.Dataset, keys: tuple[str, ...], blocks: int) -> ray.data.Dataset:
    """Global deduplication: one block is its own group; more are grouped by key hash."""
    if blocks <= 1:
        dedupe = partial(rules.drop_duplicate_rows, keys=keys)
        return ds.map_batches(dedupe, batch_format="pandas", batch_size=None)
    buckets = max(2, blocks)
    bucketed = ds.map_batches(
        partial(_with_bucket, keys=keys, buckets=buckets), batch_format="pandas"
    )
    return bucketed.groupby(_BUCKET).map_groups(
        partial(_dedupe_group, keys=keys), batch_format="pandas"
    )


def clean(ds: ray.data.Dataset, plan: CleaningPlan) -> Cleaned:
    if not plan.tags_rows and plan.dedupe_keys is None:
        done = ds.materialize()
        rows = done.count()
        return Cleaned(done, rows, rows, [])
    dropped: list[RuleDrop] = []
    if plan.tags_rows:
        tagged = _tag(ds, plan).materialize()
        rows_read = tagged.count()
        row_rules = plan.row_rules
        counts = _count_tags(tagged, len(row_rules)) if row_rules else []
        dropped = [RuleDrop(rule=r, dropped=n) for r, n in zip(row_rules, counts, strict=True)]
        kept: ray.data.Dataset = tagged.filter(expr=col(TAG) == rules.KEPT).drop_columns([TAG])
        blocks = tagged.num_blocks()
        survivors = rows_read - sum(counts)
    else:
        kept = ds.materialize()
        rows_read = survivors = kept.count()
        blocks = kept.num_blocks()
    if plan.dedupe_keys is not None:
        kept = drop_duplicates(kept, plan.dedupe_keys, blocks)
    done = kept.materialize()
    rows_after = done.count()
    if plan.dedupe_keys is not None:
        dropped.append(RuleDrop(rule="dropDuplicates", dropped=survivors - rows_after))
    return Cleaned(done, rows_read, rows_after, dropped)
