"""What the API server itself enforces beyond the examples: fields that must not change once
set, a status that is neither pruned nor writable through the main resource, and field
descriptions that make `kubectl explain` teach the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.cluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits-cnn.yaml"
GROUP, VERSION, PLURAL = "kubetrain.io", "v1alpha1", "trainingjobs"


@pytest.fixture
def created(trainingjob_crd: dict[str, Any], kube_api: k8s.ApiClient, namespace: str) -> dict:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["namespace"] = namespace
    return k8s.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
    )


def _patch(api: k8s.ApiClient, namespace: str, patch: dict, **kwargs: Any) -> dict:
    return k8s.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "digits-cnn", patch, **kwargs
    )


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"spec": {"model": {"cnn": {"dropout": 0.5}}}}, "spec.model is immutable"),
        ({"spec": {"data": {"label": "other"}}}, "spec.data is immutable"),
        ({"spec": {"training": {"epochs": 99}}}, "spec.training is immutable"),
        ({"spec": {"output": {"uri": "s3://b/x"}}}, "spec.output is immutable"),
    ],
)
def test_fields_that_define_the_run_cannot_change(created, kube_api, namespace, patch, message):
    with pytest.raises(ApiException) as err:
        _patch(kube_api, namespace, patch)
    assert err.value.status == 422
    assert message in err.value.body


def test_lifecycle_fields_stay_mutable(created, kube_api, namespace):
    """Suspend and placement can change, so that a queue (Kueue) can suspend a job and
    resume it elsewhere."""
    patched = _patch(
        kube_api,
        namespace,
        {"spec": {"runPolicy": {"suspend": True}, "cluster": {"nodePool": "h100"}}},
    )
    assert patched["spec"]["runPolicy"]["suspend"] is True
    assert patched["spec"]["cluster"]["nodePool"] == "h100"


def test_defaults_are_applied_by_the_server(created):
    spec = created["spec"]
    assert spec["runPolicy"]["cleanupPolicy"] == "DeleteCluster"
    assert spec["training"]["optimizer"]["weightDecay"] == 0
    assert spec["output"]["plots"] is True


def test_status_is_kept_and_only_written_through_its_subresource(created, kube_api, namespace):
    status = {
        "phase": "Running",
        "progress": {"stage": "training", "epoch": 3, "totalEpochs": 8, "percent": 40},
        "metrics": {"val_accuracy": 0.91, "train_loss": 0.3},
        "keyMetric": "val_accuracy=0.910",
        "dataStats": {"rowsRead": 1797, "droppedByRule": [{"rule": "dropNulls", "dropped": 0}]},
        "conditions": [{"type": "Running", "status": "True", "reason": "Training", "message": ""}],
        "kopf": {"progress": {"some-handler": {"retries": 1}}},
    }
    api = k8s.CustomObjectsApi(kube_api)
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "digits-cnn", {"status": status}
    )
    # A status sent through the main resource is ignored, not merged.
    _patch(kube_api, namespace, {"status": {"phase": "Failed"}})
    stored = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "digits-cnn")
    assert stored["status"] == status


def test_kubectl_explain_teaches_the_api(trainingjob_crd, kubectl):
    out = kubectl("explain", "trainingjob.spec.runPolicy.cleanupPolicy").stdout
    assert "KeepHead" in out and "debugging" in out
    out = kubectl("explain", "tj.spec.data.source").stdout
    assert "builtin" in out and "uri" in out
