"""Globs in spec column lists, and the in-memory sources' shapes and names."""

from __future__ import annotations

import pytest

from kubetrain.api import bundled, columns
from kubetrain.api.v1alpha1 import BuiltinDataset, DataSource, GeneratedDataset
from kubetrain.errors import SpecError
from kubetrain_runtime.data import sources

pytestmark = pytest.mark.unit

COLUMNS = ["pixel_0", "pixel_1", "pixel_10", "sepal_length", "target"]


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["pixel_*"], ["pixel_0", "pixel_1", "pixel_10"]),
        (["pixel_1*"], ["pixel_1", "pixel_10"]),
        (["target", "pixel_?"], ["target", "pixel_0", "pixel_1"]),
        (["pixel_0", "pixel_*"], ["pixel_0", "pixel_1", "pixel_10"]),  # no duplicates
    ],
)
def test_expand_keeps_data_order_and_dedupes(patterns, expected):
    assert columns.expand(patterns, COLUMNS, "spec.data.features") == expected


def test_unknown_column_names_the_field_index_and_suggests():
    with pytest.raises(SpecError) as err:
        columns.expand(["pixel_0", "sepal_lenght"], COLUMNS, "spec.data.features")
    message = str(err.value)
    assert message.startswith("spec.data.features[1]: column 'sepal_lenght' not found")
    assert "did you mean 'sepal_length'" in message
    assert "columns are: pixel_0, pixel_1" in message


def test_a_glob_that_matches_nothing_is_an_error():
    with pytest.raises(SpecError, match=r"preprocessing.scale\[0\].columns\[0\]: column 'x_\*'"):
        columns.expand(["x_*"], COLUMNS, "spec.data.preprocessing.scale[0].columns")


def test_long_column_lists_are_abbreviated():
    many = [f"pixel_{i}" for i in range(64)]
    assert columns.listing(many).endswith("... (52 more, last pixel_63)")


def test_digits_are_pixel_0_to_63_plus_target():
    frame = sources.builtin_frame("digits")
    assert list(frame.df.columns) == [f"pixel_{i}" for i in range(64)] + ["target"]
    assert frame.df.shape == (1797, 65)
    assert frame.class_names == [str(i) for i in range(10)]


@pytest.mark.parametrize(
    ("name", "first", "width"), [("iris", "sepal_length_cm", 4), ("wine", "alcohol", 13)]
)
def test_builtin_feature_names_are_column_safe(name, first, width):
    frame = sources.builtin_frame(name)
    assert frame.df.columns[0] == first
    assert frame.df.shape[1] == width + 1
    assert all(c.replace("_", "").isalnum() for c in frame.df.columns)
    assert "od280_od315_of_diluted_wines" in frame.df.columns or name != "wine"


def test_sine_regression_targets_the_next_value():
    spec = GeneratedDataset(samples=50, sequenceLength=8, noise=0.0, seed=3)
    df = sources.sine_frame(spec, "regression").df
    assert list(df.columns) == [f"t_{i}" for i in range(8)] + ["target"]
    assert df["target"].between(-1.0, 1.0).all()
    again = sources.sine_frame(spec, "regression").df
    assert df.equals(again)  # seeded


def test_sine_classification_labels_are_frequency_bands():
    spec = GeneratedDataset(samples=300, sequenceLength=16, classes=4, seed=1)
    frame = sources.sine_frame(spec, "classification")
    assert set(frame.df["target"]) == {0, 1, 2, 3}
    assert frame.class_names is not None and len(frame.class_names) == 4


@pytest.mark.parametrize("name", ["digits", "iris", "wine"])
def test_the_api_knows_the_columns_the_runtime_makes(name: str):
    """``kubetrain.api.bundled`` checks specs against these columns without reading data."""
    source = DataSource(builtin=BuiltinDataset(name=name))
    frame = sources.builtin_frame(name)
    assert list(frame.df.columns) == [*bundled.feature_columns(source), "target"]


def test_the_api_knows_the_generated_columns():
    generated = GeneratedDataset(samples=10, sequenceLength=5)
    frame = sources.sine_frame(generated, "regression")
    assert list(frame.df.columns) == [
        *bundled.feature_columns(DataSource(generated=generated)),
        "target",
    ]
