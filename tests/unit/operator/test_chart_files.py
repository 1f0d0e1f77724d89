"""The chart's files that restate names the operator's code owns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kubetrain.api.v1alpha1 import GROUP, PLURAL
from kubetrain_operator.lifecycle import FINALIZER

pytestmark = pytest.mark.unit
FILES = Path(__file__).resolve().parents[3] / "charts" / "kubetrain" / "files"


def test_the_finalizer_policy_adds_the_operators_finalizer_to_new_jobs_only():
    text = (FILES / "finalizer-policy.yaml").read_text()
    spec = yaml.safe_load(text)
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert (rule["apiGroups"], rule["resources"], rule["operations"]) == (
        [GROUP],
        [PLURAL],
        ["CREATE"],
    )
    quoted_names = set(re.findall(r"""['"]([a-z0-9.-]+\.[a-z]+/[a-z0-9.-]+)['"]""", text))
    assert quoted_names == {FINALIZER}  # in the match condition and in both patches
    assert spec["failurePolicy"] == "Ignore"  # never refuses a job: the operator adds it anyway
