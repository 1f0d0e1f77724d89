"""The chart's values schema and the operator's config models say the same: the generated
definitions are current (else: ``python -m kubetrain_operator.values_schema --write``),
the file is a draft-07 schema the chart's own values pass, and on tolerations and pools the
schema refuses exactly (tolerations) or at most (pools) what the models refuse."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from kubetrain.api.v1alpha1 import Toleration
from kubetrain_operator import values_schema
from kubetrain_operator.config import NodePool

pytestmark = pytest.mark.unit
SCHEMA_FILE = values_schema.SCHEMA_FILE
VALUES_FILE = SCHEMA_FILE.parent / "values.yaml"


def test_the_committed_schema_is_what_the_models_generate():
    committed = SCHEMA_FILE.read_text()
    assert values_schema.regenerated(committed) == committed, (
        "charts/kubetrain/values.schema.json is stale: "
        "run python -m kubetrain_operator.values_schema --write"
    )


def test_regenerating_keeps_the_hand_written_part(tmp_path):
    """Only the generated definitions are replaced; an edit elsewhere survives."""
    schema = json.loads(SCHEMA_FILE.read_text())
    schema["properties"]["livenessPort"]["maximum"] = 1234
    del schema["definitions"]["toleration"]
    copy = tmp_path / "values.schema.json"
    copy.write_text(json.dumps(schema, indent=2))
    assert values_schema.main(["--file", str(copy)]) == 1  # stale
    assert values_schema.main(["--file", str(copy), "--write"]) == 0
    rewritten = json.loads(copy.read_text())
    assert rewritten["properties"]["livenessPort"]["maximum"] == 1234
    assert rewritten["definitions"] == json.loads(SCHEMA_FILE.read_text())["definitions"]
    assert values_schema.main(["--file", str(copy)]) == 0


def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def validator(definition: str | None = None) -> jsonschema.Draft7Validator:
    """The whole values schema, or one of its definitions."""
    whole = schema()
    if definition is None:
        return jsonschema.Draft7Validator(whole)
    ref = {"$ref": f"#/definitions/{definition}", "definitions": whole["definitions"]}
    return jsonschema.Draft7Validator(ref)


def test_the_file_is_a_draft_07_schema_that_the_charts_values_pass():
    jsonschema.Draft7Validator.check_schema(schema())
    validator().validate(yaml.safe_load(VALUES_FILE.read_text()))


def test_generated_patterns_keep_to_ecmascript_and_re2():
    text = json.dumps(schema()["definitions"])
    for construct in ("(?=", "(?!", "(?<", "(?P", "\\\\A", "\\\\Z", "\\\\w", "\\\\d"):
        assert construct not in text


# ---------------------------------------------------------------- tolerations

KEYS = ["nvidia.com/gpu", "dedicated", "", "a/b/c"]
VALUES = ["", "true", "-bad"]
EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute", "Sometimes"]


def optional(values: list[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from([*values, ABSENT])


ABSENT = object()
TOLERATIONS = st.fixed_dictionaries(
    {
        "key": optional(KEYS),
        "operator": optional(["Exists", "Equal", "In"]),
        "value": optional(VALUES),
        "effect": optional(EFFECTS),
        "tolerationSeconds": optional([0, 300, "soon"]),
    }
).map(lambda raw: {field: value for field, value in raw.items() if value is not ABSENT})


def model_accepts(model: type, raw: dict[str, Any]) -> bool:
    try:
        model.model_validate(raw)
    except ValidationError:
        return False
    return True


@given(TOLERATIONS)
def test_the_schema_refuses_a_toleration_exactly_when_the_model_does(raw: dict[str, Any]):
    """Fields are left out rather than null: Helm reads a null value as "delete the key".
    A rule added to ``Toleration`` that this finds missing belongs in
    ``values_schema.TOLERATION_RULES``."""
    schema_accepts = validator("toleration").is_valid(raw)
    assert schema_accepts == model_accepts(Toleration, raw), raw


@pytest.mark.parametrize(
    "raw",
    [
        {"key": "nvidia.com/gpu", "operator": "Exists", "value": "x"},
        {"operator": "Equal", "value": "x"},
        {"value": "x"},
        {"key": "k", "value": "v", "effect": "NoSchedule", "tolerationSeconds": 30},
        {"key": "k", "value": "v", "tolerationSeconds": 30},
    ],
)
def test_the_kubelets_rules_on_tolerations_are_said_in_draft_07(raw: dict[str, Any]):
    assert not validator("toleration").is_valid(raw)
    assert not model_accepts(Toleration, raw)


# ---------------------------------------------------------------------- pools

POOLS = st.fixed_dictionaries(
    {
        "nodeSelector": optional(
            [
                {"kubetrain.io/pool": "a100"},
                {"Bad Key": "x"},
                {"zone": "-b"},
                {"x" * 254 + "/a": ""},
            ]
        ),
        "gpuResource": optional(["nvidia.com/gpu", "gpu", "kubernetes.io/gpu", "A.com/gpu"]),
        "gpusPerNode": optional([1, 8, 0]),
        "gangScheduler": optional(["none", "volcano", "slurm"]),
        "tolerations": optional([[{"key": "k", "operator": "Exists"}], [{"value": "v"}]]),
    }
).map(lambda raw: {field: value for field, value in raw.items() if value is not ABSENT})


@given(POOLS)
def test_the_schema_never_refuses_a_pool_that_the_operator_loads(raw: dict[str, Any]):
    """The schema may be looser (it cannot say a label key's prefix limit, nor keep
    ``kubernetes.io`` out of resource names); it is never stricter."""
    if model_accepts(NodePool, raw):
        assert validator("nodePool").is_valid(raw), raw


@pytest.mark.parametrize(
    "raw",
    [
        {"nodeSelector": {"Bad Key": "x"}},
        {"nodeSelector": {"zone": "-b"}},
        {"gpuResource": "gpu"},
        {"gpusPerNode": 0},
        {"colour": "red"},
        {"tolerations": [{"value": "v"}]},
    ],
)
def test_what_draft_07_can_say_about_pools_helm_refuses(raw: dict[str, Any]):
    assert not validator("nodePool").is_valid(raw)
    assert not model_accepts(NodePool, raw)


@pytest.mark.parametrize(
    ("values", "valid"),
    [
        ({"defaultNodePool": ""}, True),
        ({"defaultNodePool": "a100"}, True),
        ({"defaultNodePool": "A100"}, False),
        ({"runtime": {"defaultImage": "registry.local:5000/kt/runtime:1.0"}}, True),
        ({"runtime": {"defaultImage": "img:tag:extra"}}, False),
        ({"runtime": {"outputVolume": "team-runs"}}, True),
        ({"runtime": {"outputVolume": "Team_Runs"}}, False),
        ({"runtime": {"imagePullSecrets": ["regcred"]}}, True),
        ({"runtime": {"imagePullSecrets": ["Reg Cred"]}}, False),
        ({"nodePools": {"Big_Pool": {}}}, False),
    ],
)
def test_the_other_admin_fields_use_the_same_grammars(values: dict[str, Any], valid: bool):
    assert validator().is_valid(values) is valid
