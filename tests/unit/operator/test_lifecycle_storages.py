"""The kopf settings of ``lifecycle.py``: its lean status storages keep exactly what
kopf's own would, with less written per job."""

from __future__ import annotations

import copy

import kopf
import pytest

from kubetrain_operator.lifecycle import LeanStatusDiffBaseStorage, LeanStatusProgressStorage

pytestmark = pytest.mark.unit


def test_the_lean_diff_base_has_the_same_essence_as_kopfs():
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "uid": "u",
            "labels": {"a": "b"},
            "annotations": {"x": "y", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
        "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": "Running", "kopf": {"progress": {}}},
    }
    plain = kopf.StatusDiffBaseStorage(field="status.kopf.last-handled-configuration")
    lean = LeanStatusDiffBaseStorage(field="status.kopf.last-handled-configuration")
    assert lean.build(body=kopf.Body(body)) == plain.build(body=kopf.Body(body))


def test_the_lean_progress_storage_clears_like_kopfs():
    essence = {"spec": {"a": 1}, "status": {"kopf": {"progress": {"h": {}}}, "x": 1}}
    plain = kopf.StatusProgressStorage(field="status.kopf.progress")
    lean = LeanStatusProgressStorage(field="status.kopf.progress")
    assert lean.clear(essence=copy.deepcopy(essence)) == plain.clear(essence=essence)
