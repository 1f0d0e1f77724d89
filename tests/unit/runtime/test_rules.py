"""The cleaning plan: rule checks against the schema, casts, and first-rule tagging."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from kubetrain.api.v1alpha1 import Cleaning
from kubetrain.errors import SpecError
from kubetrain_runtime.data import rules

pytestmark = pytest.mark.unit

KINDS = rules.kinds_of(
    pa.schema([("x", pa.float64()), ("n", pa.string()), ("site", pa.string()), ("ok", pa.bool_())])
)


def plan(**cleaning):
    return rules.plan_cleaning(Cleaning.model_validate(cleaning), KINDS)


def test_rule_names_follow_the_documented_order():
    p = plan(
        casts=[{"column": "n", "type": "int"}],
        dropNulls=True,
        filters=[
            {"column": "x", "op": ">", "value": 0},
            {"column": "site", "op": "==", "value": "a"},
        ],
        clip=[{"column": "x", "max": 1}],
        dropDuplicates=True,
    )
    assert p.rule_names == ["casts[0]", "dropNulls", "filters[0]", "filters[1]", "dropDuplicates"]
    assert p.null_columns == ("x", "n", "site", "ok")
    assert p.kinds["n"] == "number"


@pytest.mark.parametrize(
    ("cleaning", "field", "text"),
    [
        (
            {"casts": [{"column": "nope", "type": "int"}]},
            "spec.data.cleaning.casts[0].column",
            "not found",
        ),
        (
            {"filters": [{"column": "site", "op": ">", "value": 3}]},
            "spec.data.cleaning.filters[0].value",
            "holds string",
        ),
        (
            {"filters": [{"column": "x", "op": "in", "value": [1, "a"]}]},
            "spec.data.cleaning.filters[0].value",
            "'a'",
        ),
        (
            {"filters": [{"column": "ok", "op": "<", "value": True}]},
            "spec.data.cleaning.filters[0].op",
            "bool",
        ),
        (
            {"clip": [{"column": "site", "min": 0}]},
            "spec.data.cleaning.clip[0].column",
            "needs numbers",
        ),
        (
            {"dropNulls": True, "dropNullsIn": ["zz*"]},
            "spec.data.cleaning.dropNullsIn[0]",
            "not found",
        ),
        (
            {"dropDuplicates": True, "duplicateKeys": ["y"]},
            "spec.data.cleaning.duplicateKeys[0]",
            "not found",
        ),
    ],
)
def test_bad_rules_name_their_field(cleaning, field, text):
    with pytest.raises(SpecError) as err:
        plan(**cleaning)
    assert err.value.field == field
    assert text in str(err.value)


def test_a_cast_changes_what_a_filter_may_compare():
    p = plan(
        casts=[{"column": "n", "type": "float"}],
        filters=[{"column": "n", "op": ">=", "value": 2.5}],
    )
    assert p.kinds["n"] == "number"


@pytest.mark.parametrize(
    ("values", "to", "expected", "failed"),
    [
        (
            ["1", " 2 ", "x", None, "3.5"],
            "int",
            [1, 2, None, None, None],
            [False, False, True, False, True],
        ),
        (["1.5", "-2", "abc", None], "float", [1.5, -2.0, None, None], [False, False, True, False]),
        (
            ["yes", "FALSE", "0", "maybe", None],
            "bool",
            [True, False, False, None, None],
            [False, False, False, True, False],
        ),
        ([1.0, 2.5, None], "string", ["1.0", "2.5", None], [False, False, False]),
    ],
)
def test_cast_series_converts_or_flags(values, to, expected, failed):
    out, bad = rules.cast_series(pd.Series(values, dtype=object), to)
    assert bad.tolist() == failed
    assert [None if pd.isna(v) else v for v in out.tolist()] == expected


def test_each_row_is_tagged_with_its_first_dropping_rule():
    drops = [
        np.array([True, False, False, False]),
        np.array([True, True, False, False]),
        np.array([False, True, True, False]),
    ]
    tags = rules.first_drop(4, drops)
    assert tags.tolist() == [0, 1, 2, rules.KEPT]
    assert rules.count_tags(tags, 3) == [1, 1, 1]


def test_duplicates_share_a_bucket_whatever_block_they_are_in():
    a = pd.DataFrame({"k": [1, 2, 3], "v": ["a", "b", "c"]})
    b = pd.DataFrame({"k": [3, 1], "v": ["c", "z"]})
    ba, bb = rules.bucket_of(a, ["k", "v"], 7), rules.bucket_of(b, ["k", "v"], 7)
    assert ba[2] == bb[0]
    assert len(rules.drop_duplicate_rows(pd.concat([a, b]), ["k"])) == 3
