"""Per-block partial statistics merge to pandas' describe()."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from kubetrain_runtime.data import stats

pytestmark = pytest.mark.unit


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "x": rng.normal(3, 2, 500),
            "site": rng.choice(["a", "b", "c"], 500),
            "k": rng.integers(0, 4, 500),
        }
    )
    df.loc[::17, "x"] = np.nan
    df.loc[::23, "site"] = None
    return df


def merged(df, blocks=4, count_values=()):
    bounds = np.linspace(0, len(df), blocks + 1).astype(int)
    parts = [df.iloc[a:b] for a, b in itertools.pairwise(bounds)]
    return stats.merge(stats.partials(part, count_values) for part in parts)


def test_numbers_match_pandas_describe_across_blocks(frame):
    table = stats.describe(merged(frame))
    reference = frame["x"].describe()
    row = table["x"]
    assert row["count"] == reference["count"]
    assert row["nulls"] == frame["x"].isna().sum()
    for key in ("mean", "std", "min", "25%", "50%", "75%", "max"):
        assert row[key] == pytest.approx(reference[key], rel=1e-5), key


def test_text_columns_count_values(frame):
    row = stats.describe(merged(frame))["site"]
    counts = frame["site"].value_counts()
    assert row["unique"] == 3
    assert row["top"] == counts.index[0]
    assert row["freq"] == counts.iloc[0]
    assert row["nulls"] == frame["site"].isna().sum()


def test_label_values_are_counted_when_asked(frame):
    assert stats.distinct_values(merged(frame, count_values=["k"]), "k") == ["0", "1", "2", "3"]
    assert stats.distinct_values(merged(frame), "k") is None


def test_big_blocks_give_close_quantiles():
    values = pd.DataFrame({"v": np.random.default_rng(1).uniform(0, 1, 20_000)})
    row = stats.describe(merged(values, blocks=3))["v"]
    assert row["50%"] == pytest.approx(values["v"].median(), abs=0.01)
    assert row["std"] == pytest.approx(values["v"].std(), rel=1e-5)


def test_an_all_null_block_does_not_break_the_merge():
    parts = [
        stats.partials(pd.DataFrame({"x": [None, None]}, dtype=float)),
        stats.partials(pd.DataFrame({"x": [1.0, 3.0]})),
    ]
    row = stats.describe(stats.merge(parts))["x"]
    assert (row["count"], row["nulls"], row["mean"]) == (2, 2, 2.0)
