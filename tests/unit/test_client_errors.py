"""Which API answers a submit waits out: only the one a just-installed CRD gives."""

from __future__ import annotations

import json

import pytest

from kubetrain.client import schema_not_ready

SETTLING = (
    "Resource kind kubetrain.io/v1alpha1, Kind=TrainingJob not found. There can be a delay "
    "between when CustomResourceDefinitions are created and when they are available."
)


def status(message: str, reason: str = "NotFound") -> str:
    return json.dumps({"kind": "Status", "status": "Failure", "reason": reason,
                       "message": message})  # fmt: skip


def test_the_api_server_s_answer_for_a_crd_installed_moments_ago_is_waited_out():
    assert schema_not_ready(status(SETTLING))
    assert schema_not_ready(
        status("Resource kind kubetrain.io/v1alpha1, Kind=TrainingJob not found")
    )


@pytest.mark.parametrize(
    "body",
    [
        status('trainingjobs.kubetrain.io "digits" not found'),
        status("the server could not find the requested resource"),
        status('trainingjobs.kubetrain.io "x" is forbidden', reason="Forbidden"),
        status('TrainingJob.kubetrain.io "x" is invalid: spec.training.epochs', "Invalid"),
        "not json",
        "",
        None,
        "[1, 2]",
    ],
)
def test_every_other_answer_fails_at_once(body):
    assert not schema_not_ready(body)
