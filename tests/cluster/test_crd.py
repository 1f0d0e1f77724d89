"""The TrainingJob CRD against a real API server: install, create examples, printer columns,
and server-side rejection (OpenAPI schema + CEL) of every invalid example."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.cluster

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
INVALID_DIR = EXAMPLES_DIR / "invalid"
INVALID_EXAMPLES = sorted(INVALID_DIR.glob("*.yaml"))
HEADER_LINES = 5  # `# expect-error:` / `# client-only` live in the first comment lines


def served_version(crd: dict[str, Any]) -> dict[str, Any]:
    """The storage version entry of the CRD (the one the examples use)."""
    return next(v for v in crd["spec"]["versions"] if v.get("storage"))


def trainingjobs(path: Path) -> list[dict[str, Any]]:
    docs = yaml.safe_load_all(path.read_text())
    return [d for d in docs if isinstance(d, dict) and d.get("kind") == "TrainingJob"]


def create_tj(api: k8s.ApiClient, crd: dict[str, Any], namespace: str, body: dict[str, Any]) -> Any:
    """Create like `kubectl create` does: strict field validation, so unknown fields fail."""
    body = {**body, "metadata": {**body.get("metadata", {}), "namespace": namespace}}
    return k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        crd["spec"]["group"],
        served_version(crd)["name"],
        namespace,
        crd["spec"]["names"]["plural"],
        body,
        field_validation="Strict",
    )


def test_crd_is_established_with_expected_names(
    trainingjob_crd: dict[str, Any], kube_api: k8s.ApiClient
) -> None:
    crd = k8s.ApiextensionsV1Api(kube_api).read_custom_resource_definition(
        trainingjob_crd["metadata"]["name"]
    )
    assert crd.spec.group == "kubetrain.io"
    assert crd.spec.names.kind == "TrainingJob"
    assert "tj" in (crd.spec.names.short_names or [])
    assert any(v.name == "v1alpha1" and v.served for v in crd.spec.versions)
    conds = {c.type: c.status for c in crd.status.conditions}
    assert conds.get("Established") == "True"
    assert conds.get("NamesAccepted") == "True"


def test_valid_examples_create_and_show_printer_columns(
    trainingjob_crd: dict[str, Any],
    kube_api: k8s.ApiClient,
    namespace: str,
    kubectl: Any,
    raw_get: Any,
) -> None:
    examples = sorted(EXAMPLES_DIR.glob("*.yaml"))
    assert examples, f"no examples in {EXAMPLES_DIR}"
    names = []
    for path in examples:
        docs = trainingjobs(path)
        assert docs, f"{path} has no TrainingJob"
        for doc in docs:
            try:
                created = create_tj(kube_api, trainingjob_crd, namespace, doc)
            except ApiException as e:
                pytest.fail(f"valid example {path.name} was rejected: {e.status} {e.body}")
            names.append(created["metadata"]["name"])

    version = served_version(trainingjob_crd)
    columns = [c["name"] for c in version.get("additionalPrinterColumns", [])]
    assert columns, "the CRD defines no additionalPrinterColumns"

    plural, group = trainingjob_crd["spec"]["names"]["plural"], trainingjob_crd["spec"]["group"]
    table = raw_get(
        kube_api, f"/apis/{group}/{version['name']}/namespaces/{namespace}/{plural}", table=True
    )
    assert table["kind"] == "Table"
    header = [c["name"] for c in table["columnDefinitions"]]
    assert header[0] == "Name"
    for col in columns:
        assert col in header, f"printer column {col!r} missing from the server's Table {header}"
    assert sorted(row["object"]["metadata"]["name"] for row in table["rows"]) == sorted(names)

    # The same through kubectl and the short name, as a user would see it (-o wide: kubectl
    # hides columns with priority > 0 otherwise).
    out = kubectl("get", "tj", "-n", namespace, "-o", "wide").stdout
    head = re.split(r"\s{2,}", out.splitlines()[0].strip())
    assert head == ["NAME", *[c.upper() for c in columns]], out
    assert len(out.splitlines()) == 1 + len(names), out


def expectation(path: Path) -> tuple[str | None, bool]:
    """(`# expect-error:` field path, `# client-only` flag) from the file's first lines."""
    expected, client_only = None, False
    for line in path.read_text().splitlines()[:HEADER_LINES]:
        if m := re.match(r"#\s*expect-error:\s*(\S+)", line):
            expected = m.group(1)
        if re.match(r"#\s*client-only\b", line):
            client_only = True
    return expected, client_only


def test_invalid_examples_exist() -> None:
    assert INVALID_EXAMPLES, f"no invalid examples in {INVALID_DIR}"
    for path in INVALID_EXAMPLES:
        assert expectation(path)[0], (
            f"{path.name} lacks a '# expect-error: <field path>' first line"
        )


@pytest.mark.parametrize("path", INVALID_EXAMPLES, ids=[p.stem for p in INVALID_EXAMPLES])
def test_invalid_example_rejected_by_api_server(
    path: Path, trainingjob_crd: dict[str, Any], kube_api: k8s.ApiClient, namespace: str
) -> None:
    expected, client_only = expectation(path)
    if client_only:
        pytest.skip("client-side-only check")
    assert expected, f"{path.name} lacks '# expect-error:'"
    docs = trainingjobs(path)
    assert len(docs) == 1, f"{path.name} should hold exactly one TrainingJob"
    with pytest.raises(ApiException) as err:
        create_tj(kube_api, trainingjob_crd, namespace, docs[0])
    e = err.value
    message = str(yaml.safe_load(e.body).get("message", e.body)) if e.body else str(e)
    # 422 Invalid (schema, CEL); 400 only for strict decoding of unknown fields.
    assert e.status == 422 or (e.status == 400 and "unknown field" in message), (e.status, message)
    assert expected in message, f"expected the server to name {expected!r}, got: {message}"
