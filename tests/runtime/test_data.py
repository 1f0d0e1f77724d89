"""Ray Data cleaning is exact: per-rule counts match a pandas reference of the same rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kubetrain.errors import DataError, SpecError
from kubetrain_runtime.data.pipeline import prepare

pytestmark = pytest.mark.runtime


def reference(
    df: pd.DataFrame,
    *,
    cast_int: str | None,
    null_cols: list[str],
    filters: list,
    clip: tuple | None,
    keys: list[str] | None,
):
    """The documented order, in plain pandas: casts, dropNulls, filters, clip, dropDuplicates."""
    counts: dict[str, int] = {}
    if cast_int:
        numbers = pd.to_numeric(df[cast_int].astype("string").str.strip(), errors="coerce")
        bad = df[cast_int].notna() & (numbers.isna() | (numbers % 1 != 0))
        counts["casts[0]"] = int(bad.sum())
        df = df[~bad].copy()
        df[cast_int] = numbers[~bad]
    mask = df[null_cols].isna().any(axis=1)
    counts["dropNulls"] = int(mask.sum())
    df = df[~mask]
    for i, keep in enumerate(filters):
        kept = keep(df)
        counts[f"filters[{i}]"] = int((~kept).sum())
        df = df[kept]
    if clip:
        df = df.assign(**{clip[0]: df[clip[0]].clip(clip[1], clip[2])})
    before = len(df)
    df = df.drop_duplicates(subset=keys)
    counts["dropDuplicates"] = before - len(df)
    return counts, df


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> Path:
    """Three CSV files (three blocks, so deduplication must work across blocks) with empty
    cells, junk in an int column, out-of-range values and duplicates split across files."""
    rng = np.random.default_rng(7)
    n = 600
    df = pd.DataFrame(
        {
            "id": rng.integers(0, 400, n),
            "value": rng.normal(5, 4, n).round(2),
            "category": rng.choice(["a", "b", "bad", "c"], n),
            "count": rng.integers(0, 9, n).astype(str).astype(object),
        }
    )
    df.loc[rng.choice(n, 40, replace=False), "value"] = np.nan
    df.loc[rng.choice(n, 30, replace=False), "category"] = None
    df.loc[rng.choice(n, 25, replace=False), "count"] = "n/a-ish"
    df.loc[rng.choice(n, 10, replace=False), "count"] = "2.5"
    df = pd.concat([df, df.sample(80, random_state=1)], ignore_index=True).sample(
        frac=1, random_state=2
    )
    folder = tmp_path_factory.mktemp("crafted")
    for i, part in enumerate(np.array_split(np.arange(len(df)), 3)):
        df.iloc[part].to_csv(folder / f"part-{i}.csv", index=False)
    return folder


def test_cleaning_counts_match_pandas_across_blocks(ray_local, crafted, example, examples_dir):
    job = example(
        "iris-csv-mlp",
        data={
            "source": {"uri": {"path": str(crafted), "format": "csv"}},
            "cleaning": {
                "casts": [{"column": "count", "type": "int"}],
                "dropNulls": True,
                "dropNullsIn": ["value", "category"],
                "filters": [
                    {"column": "value", "op": ">", "value": 0},
                    {"column": "category", "op": "not_in", "value": ["bad"]},
                ],
                "clip": [{"column": "value", "max": 10}],
                "dropDuplicates": True,
                "duplicateKeys": ["id", "value", "category"],
            },
            "preprocessing": {
                "impute": [],
                "scale": [],
                "encode": [{"columns": ["category"], "method": "ordinal"}],
            },
            "features": ["value", "category"],
            "label": "count",
        },
        model={"type": "mlp", "task": "regression"},
    )
    prepared = prepare(job.spec, examples_dir)
    raw = pd.concat(
        [
            pd.read_csv(p, keep_default_na=False, na_values=[""])
            for p in sorted(crafted.glob("*.csv"))
        ]
    )
    counts, clean = reference(
        raw,
        cast_int="count",
        null_cols=["value", "category"],
        filters=[
            lambda d: d["value"] > 0,
            lambda d: d["category"].notna() & ~d["category"].isin(["bad"]),
        ],
        clip=("value", None, 10),
        keys=["id", "value", "category"],
    )
    stats = prepared.stats
    assert stats.rowsRead == len(raw)
    assert {d.rule: d.dropped for d in stats.droppedByRule} == counts
    assert stats.rowsAfterCleaning == len(clean)
    assert stats.trainRows + stats.validationRows == len(clean)
    assert all(v > 0 for v in counts.values()), counts  # every rule had work to do
    described = prepared.report["columns"]["value"]
    assert described["max"] == pytest.approx(clean["value"].max())
    assert described["mean"] == pytest.approx(clean["value"].mean(), rel=1e-5)


def test_iris_example_cleaning_and_preprocessing(ray_local, example, examples_dir):
    job = example("iris-csv-mlp")
    prepared = prepare(job.spec, examples_dir)
    raw = pd.read_csv(
        examples_dir / "data" / "iris-dirty.csv", keep_default_na=False, na_values=[""]
    )
    counts, clean = reference(
        raw,
        cast_int=None,
        null_cols=["species"],
        filters=[
            lambda d: d["sepal_length"] > 0,
            lambda d: d["site"].notna() & ~d["site"].isin(["test-bench"]),
        ],
        clip=("petal_length", 0, 8),
        keys=None,
    )
    assert {d.rule: d.dropped for d in prepared.stats.droppedByRule} == {"casts[0]": 0, **counts}
    assert prepared.stats.rowsAfterCleaning == len(clean)
    assert prepared.class_names == ["setosa", "versicolor", "virginica"]
    assert prepared.num_features == 4 + clean["site"].nunique()  # one-hot site
    batch = prepared.train.take_batch(500, batch_format="numpy")
    assert not np.isnan(batch["x"]).any()  # sepal_width imputed
    assert abs(batch["x"][:, 0].mean()) < 1e-5  # standardized on the training split
    assert set(batch["y"].tolist()) <= {0, 1, 2}


def test_missing_file_names_its_path(ray_local, example, examples_dir):
    job = example("iris-csv-mlp", data={"source": {"uri": {"path": "data/nope.csv"}}})
    with pytest.raises(DataError) as err:
        prepare(job.spec, examples_dir)
    assert str(examples_dir / "data" / "nope.csv") in str(err.value)


def test_unknown_feature_names_the_field(ray_local, example, examples_dir):
    job = example(
        "iris-csv-mlp", data={"features": ["sepal_length", "sepal_width", "sepal_lenght"]}
    )
    with pytest.raises(SpecError) as err:
        prepare(job.spec, examples_dir)
    assert str(err.value).startswith("spec.data.features[2]: column 'sepal_lenght' not found")


def test_a_cnn_on_13_file_features_is_a_spec_error(ray_local, example, examples_dir, tmp_path):
    """A file's width is known only once it is read: the runtime names the field then (a
    bundled dataset's width is refused already by the API, see test_api_rules)."""
    from kubetrain_runtime.data.sources import builtin_frame

    path = tmp_path / "wine.csv"
    builtin_frame("wine").df.to_csv(path, index=False)
    job = example(
        "digits-cnn",
        data={
            "source": {"builtin": None, "uri": {"path": str(path)}},
            "preprocessing": {"scale": []},
        },
    )
    with pytest.raises(SpecError) as err:
        prepare(job.spec, examples_dir)
    assert err.value.field == "spec.model.cnn.imageShape"
    assert "13 features are not a square image" in str(err.value)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "npz", "npy"])
def test_every_file_format_reads_the_same_digits(ray_local, example, examples_dir, tmp_path, fmt):
    from kubetrain_runtime.data.sources import builtin_frame

    df = builtin_frame("digits").df
    label, path, form = "target", tmp_path / f"digits.{fmt}", fmt
    if fmt == "parquet":
        df.to_parquet(path)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    elif fmt == "npz":
        np.savez(
            path,
            x=df.drop(columns=["target"]).to_numpy().reshape(-1, 8, 8),
            y=df["target"].to_numpy(),
        )
        label, form = "y", "numpy"
    else:  # one 2-D array: the label is its last column
        np.save(path, df.to_numpy(dtype=np.float32))
        label, form = "x_64", "numpy"
    job = example(
        "digits-cnn",
        data={
            "source": {"builtin": None, "uri": {"path": str(path), "format": form}},
            "label": label,
            "preprocessing": {"scale": []},
        },
        model={"type": "mlp", "task": "classification", "cnn": None},
    )
    prepared = prepare(job.spec, examples_dir)
    assert prepared.stats.rowsRead == 1797
    assert prepared.num_features == 64
    assert len(prepared.class_names) == 10
