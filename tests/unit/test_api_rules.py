"""The client refuses what the API server refuses, naming the same field: strict wire types,
Kubernetes quantities, bounded list items, cross-field rules and pod-level fields.

The same cases run against the real API server in ``tests/cluster/test_differential.py``;
here they pin the client's messages."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetrain.api.manifests import validate_document

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _base(name: str = "iris-csv-mlp.yaml") -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


def _with(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return doc


def _errors(doc: dict[str, Any]) -> dict[str, str]:
    _job, errors = validate_document(doc)
    return {e.path: e.message for e in errors}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.training.epochs", "10"),
        ("spec.training.epochs", True),
        ("spec.training.mixedPrecision", "true"),
        ("spec.training.resourcesPerWorker.gpu", True),
        ("spec.data.cleaning.dropNulls", "yes"),
        ("spec.training.optimizer.learningRate", "3e-4"),
        ("spec.data.label", True),
        ("spec.training.resourcesPerWorker.cpu", 1.5),
        ("spec.training.resourcesPerWorker.cpu", True),
    ],
)
def test_wire_types_are_strict(path: str, value: Any):
    assert path in _errors(_with(_base(), path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [("spec.training.optimizer.learningRate", 1), ("spec.training.epochs", 10)],
)
def test_an_integer_is_a_number(path: str, value: Any):
    assert _errors(_with(_base(), path, value)) == {}


@pytest.mark.parametrize("text", ["500mm", "8iG", "1.5.0", "1Gi1", "-1", ".", "1e", "Mi", " 1"])
def test_quantities_follow_apimachinery(text: str):
    errors = _errors(_with(_base(), "spec.training.resourcesPerWorker.memory", text))
    assert "not a Kubernetes quantity" in errors["spec.training.resourcesPerWorker.memory"]


@pytest.mark.parametrize("text", ["500m", "1.5", "2Gi", "1e3", "+1", ".5", "1E3", "0.5Ki"])
def test_good_quantities_pass(text: str):
    assert _errors(_with(_base(), "spec.cluster.head.resources.cpu", text)) == {}


@pytest.mark.parametrize("value", [0, "0", "0m"])
def test_a_resource_is_more_than_zero(value: Any):
    errors = _errors(_with(_base(), "spec.training.resourcesPerWorker.cpu", value))
    assert "spec.training.resourcesPerWorker.cpu" in errors


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ({"type": "mlp", "mlp": {"hiddenUnits": [128, 0, 32]}}, "spec.model.mlp.hiddenUnits[1]"),
        (
            {"type": "cnn", "cnn": {"channels": [-1], "kernelSizes": [3]}},
            "spec.model.cnn.channels[0]",
        ),
        (
            {"type": "cnn", "cnn": {"channels": [8], "kernelSizes": [0]}},
            "spec.model.cnn.kernelSizes[0]",
        ),
        ({"type": "cnn", "cnn": {"imageShape": [1, 0, 8]}}, "spec.model.cnn.imageShape[1]"),
        ({"type": "cnn", "cnn": {"imageShape": [64]}}, "spec.model.cnn.imageShape"),
        ({"type": "vae", "vae": {"hiddenUnits": [0]}}, "spec.model.vae.hiddenUnits[0]"),
    ],
)
def test_list_items_have_bounds(model: dict[str, Any], path: str):
    doc = _with(_base("digits-cnn.yaml"), "spec.model", model)
    assert path in _errors(doc)


@pytest.mark.parametrize(
    ("path", "value", "field", "words"),
    [
        (
            "spec.data.cleaning",
            {"dropNullsIn": ["a"]},
            "spec.data.cleaning.dropNullsIn",
            "needs dropNulls",
        ),
        (
            "spec.data.cleaning",
            {"duplicateKeys": ["a"]},
            "spec.data.cleaning.duplicateKeys",
            "needs dropDuplicates",
        ),
        (
            "spec.data.preprocessing",
            {"impute": [{"columns": ["a"], "strategy": "constant"}]},
            "spec.data.preprocessing.impute[0].fillValue",
            "needs a fillValue",
        ),
        (
            "spec.data.preprocessing",
            {"impute": [{"columns": ["a"], "fillValue": 0}]},
            "spec.data.preprocessing.impute[0].fillValue",
            "only with strategy constant",
        ),
        (
            "spec.training.earlyStopping",
            {"metric": "val_mse"},
            "spec.training.earlyStopping.metric",
            "not reported for classification",
        ),
        ("spec.data.features", ["sepal_length", "species"], "spec.data.features", "label"),
        (
            "spec.data.cleaning",
            {"filters": [{"column": "a", "op": "in", "value": 3}]},
            "spec.data.cleaning.filters[0].value",
            "list",
        ),
    ],
)
def test_cross_field_rules_name_their_field(path: str, value: Any, field: str, words: str):
    errors = _errors(_with(_base(), path, value))
    assert words in errors[field]


def test_a_bundled_dataset_has_one_label():
    errors = _errors(_with(_base("digits-cnn.yaml"), "spec.data.label", "digit"))
    assert "'target'" in errors["spec.data.label"]


def test_a_custom_loop_may_stop_on_its_own_metric():
    doc = _with(_base(), "spec.training.earlyStopping", {"metric": "my_score"})
    doc = _with(doc, "spec.training.trainFunction", "mypkg.loops:train")
    assert _errors(doc) == {}


@pytest.mark.parametrize(
    ("toleration", "field", "words"),
    [
        ({"key": "gpu", "operator": "Exists", "value": "a"}, ".value", "must be empty"),
        ({"key": "gpu", "value": "a", "tolerationSeconds": 30}, ".tolerationSeconds", "NoExecute"),
        ({"value": "a", "effect": "NoSchedule"}, ".operator", "Exists when key is empty"),
        ({"key": "-bad", "operator": "Exists"}, ".key", "label key"),
    ],
)
def test_tolerations_follow_pod_validation(toleration: dict[str, Any], field: str, words: str):
    errors = _errors(_with(_base(), "spec.cluster.tolerations", [toleration]))
    assert words in errors[f"spec.cluster.tolerations[0]{field}"]


def test_a_toleration_of_everything_is_allowed():
    assert _errors(_with(_base(), "spec.cluster.tolerations", [{"operator": "Exists"}])) == {}


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("spec.cluster.nodeSelector", {"a/b/c": "x"}, "spec.cluster.nodeSelector"),
        ("spec.cluster.nodeSelector", {"pool": "-x"}, "spec.cluster.nodeSelector.pool"),
        ("spec.cluster.serviceAccountName", "My_SA", "spec.cluster.serviceAccountName"),
        ("spec.cluster.priorityClassName", "high priority", "spec.cluster.priorityClassName"),
        ("spec.cluster.image", "UPPER/case", "spec.cluster.image"),
        ("spec.cluster.image", "img:tag:extra", "spec.cluster.image"),
        ("spec.cluster.image", ":latest", "spec.cluster.image"),
        ("metadata.name", "1iris", "metadata.name"),
    ],
)
def test_pod_level_fields_follow_their_grammar(path: str, value: Any, field: str):
    assert field in _errors(_with(_base(), path, value))


def test_a_bad_map_key_is_named_in_the_message():
    errors = _errors(_with(_base(), "spec.cluster.nodeSelector", {"a/b/c": "x"}))
    assert errors["spec.cluster.nodeSelector"].startswith("key 'a/b/c': ")


def test_a_column_list_names_each_column_once():
    errors = _errors(
        _with(_base(), "spec.data.features", ["sepal_length", "sepal_width", "sepal_length"])
    )
    assert errors == {"spec.data.features[2]": "duplicate value 'sepal_length'"}


@pytest.mark.parametrize(
    ("uri", "valid"),
    [
        ({"path": "/data/iris.parquet"}, False),
        ({"path": "s3://b/iris.CSV", "format": "parquet"}, False),
        ({"path": "s3://b/iris/", "format": "parquet"}, True),
        ({"path": "/data/x.npz", "format": "numpy"}, True),
    ],
)
def test_the_format_fits_the_files_ending(uri: dict[str, str], valid: bool):
    errors = _errors(_with(_base(), "spec.data.source.uri", uri))
    assert ("spec.data.source.uri.format" not in errors) is valid


def test_the_stopping_mode_follows_the_metric_unless_set():
    doc = _with(_base(), "spec.training.earlyStopping", {"metric": "val_accuracy"})
    job, _ = validate_document(doc)
    assert job is not None and job.spec.training.earlyStopping.mode == "max"
    doc = _with(doc, "spec.training.earlyStopping", {"metric": "val_accuracy", "mode": "min"})
    assert "higher is better" in _errors(doc)["spec.training.earlyStopping.mode"]


@pytest.mark.parametrize(
    ("source", "model", "field", "words"),
    [
        (
            {"builtin": {"name": "wine"}},
            {"type": "cnn"},
            "spec.model.cnn.imageShape",
            "not a square",
        ),
        (
            {"builtin": {"name": "digits"}},
            {"type": "cnn", "cnn": {"imageShape": [1, 7, 7]}},
            "spec.model.cnn.imageShape",
            "49 values",
        ),
        (
            {"builtin": {"name": "iris"}},
            {"type": "cnn"},
            "spec.model.cnn.kernelSizes[0]",
            "larger than the 2x2",
        ),
        (
            {"generated": {"sequenceLength": 2}},
            {"type": "cnn"},
            "spec.model.cnn.imageShape",
            "square",
        ),
    ],
)
def test_a_model_that_cannot_take_bundled_data_is_refused(source, model, field, words):
    doc = _with(_base("digits-cnn.yaml"), "spec.data", {"source": source})
    doc = _with(doc, "spec.model", model)
    assert words in _errors(doc)[field]


def test_columns_of_bundled_data_are_known():
    doc = _with(_base("digits-cnn.yaml"), "spec.data.features", ["pixel_1*", "pixl_3"])
    assert "did you mean 'pixel_3'" in _errors(doc)["spec.data.features[1]"]
    doc = _with(_base("digits-cnn.yaml"), "spec.data.features", ["*"])
    assert "label, not a feature" in _errors(doc)["spec.data.features[0]"]
    doc = _with(
        _base("digits-cnn.yaml"), "spec.data.cleaning", {"casts": [{"column": "x", "type": "int"}]}
    )
    assert "not found" in _errors(doc)["spec.data.cleaning.casts[0].column"]
