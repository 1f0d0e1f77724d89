"""The pydantic API accepts every example and rejects every invalid one at the expected
field path; the committed CRD matches a fresh generation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubetrain.api import v1alpha1 as api
from kubetrain.api.crd import CRD_FILE_NAME, build_crd, render_crd
from kubetrain.api.manifests import check_file, field_path

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
VALID = sorted((ROOT / "examples").glob("*.yaml"))
INVALID = sorted((ROOT / "examples" / "invalid").glob("*.yaml"))


def expected_error(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect-error: "), f"{path} lacks its '# expect-error:' header"
    return first.removeprefix("# expect-error: ").strip()


def test_there_is_an_example_per_model_type():
    types = {yaml.safe_load(p.read_text())["spec"]["model"]["type"] for p in VALID}
    assert types == {"cnn", "rnn", "vae", "mlp"}


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_examples_are_accepted(path: Path):
    (checked,) = check_file(path)
    assert checked.errors == []
    assert checked.job is not None and checked.job.metadata.name == path.stem


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_examples_fail_at_the_expected_field(path: Path):
    (checked,) = check_file(path)
    assert checked.job is None
    assert expected_error(path) in [e.path for e in checked.errors], checked.errors


def test_defaults_are_filled_in():
    job = api.TrainingJob.model_validate(
        {
            "apiVersion": "kubetrain.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "d"},
            "spec": {"data": {"source": {"builtin": {"name": "digits"}}}, "model": {"type": "vae"}},
        }
    )
    assert job.spec.model.task == "generation"
    assert job.spec.model.section() == api.VaeSpec()
    assert job.spec.training.checkpoint.keep == 2
    assert job.spec.runPolicy.cleanupPolicy == "DeleteCluster"
    assert job.spec.training.resourcesPerWorker.cpu == "1"


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("spec", "training", "epochs"), "spec.training.epochs"),
        (("spec", "data", "cleaning", "filters", 0, "op"), "spec.data.cleaning.filters[0].op"),
        (
            ("spec", "training", "resourcesPerWorker", "cpu", "str"),
            "spec.training.resourcesPerWorker.cpu",
        ),
        (("spec", "x", "function-after[_check(), union[str,int]]"), "spec.x"),
    ],
)
def test_field_path_matches_the_api_servers_format(loc, path):
    assert field_path(loc) == path


def test_committed_crd_matches_the_models():
    committed = (ROOT / "crds" / CRD_FILE_NAME).read_text()
    assert committed == render_crd(), (
        "crds/ is stale: run `kubetrain crd -o crds/kubetrain.io_trainingjobs.yaml`"
    )


def _walk(schema: dict, path: str):
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def _root_schema() -> dict:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_every_spec_and_status_field_is_described_for_kubectl_explain():
    root = _root_schema()
    missing = [
        path
        for top in ("spec", "status")
        for path, node in _walk(root["properties"][top], top)
        if not path.endswith("[]") and not path.endswith("{}") and not node.get("description")
    ]
    assert missing == []


def test_crd_schema_is_structural():
    """No nulls, no refs, bounded strings and lists: what the API server needs to accept
    the schema and to bound the cost of its CEL rules."""
    root = _root_schema()
    nodes = [pair for top in ("spec", "status") for pair in _walk(root["properties"][top], top)]
    for path, node in nodes:
        assert ("$ref" not in node and "anyOf" not in node) or node.get(
            "x-kubernetes-int-or-string"
        ), path
        assert node.get("type") != "null", path
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, path
        if node.get("type") == "array":
            assert "maxItems" in node, path


def test_crd_keeps_status_and_has_printer_columns():
    version = build_crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names[:4] == ["Phase", "Model", "Progress", "Metric"] and names[-1] == "Age"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert {"phase", "conditions", "progress", "metrics", "dataStats", "artifacts"} <= set(
        status["properties"]
    )
    assert status["properties"]["kopf"]["x-kubernetes-preserve-unknown-fields"] is True
