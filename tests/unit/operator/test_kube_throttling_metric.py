"""429 answers are counted apart from other retried errors: API Priority and Fairness
throttling is what an operator's admin tunes (FlowSchemas), not a server failure."""

from __future__ import annotations

import pytest
from test_kube_io import POD, serve

from kubetrain_operator.metrics import THROTTLED

pytestmark = pytest.mark.unit


def throttled(method: str) -> float:
    return THROTTLED.labels(method=method)._value.get()


def test_each_429_is_counted_as_throttled_and_other_retries_are_not():
    before = throttled("POST")
    answers = [(429, {"Retry-After": "1"}), (503, {}), (429, {}), (201, {})]
    result, seen, _ = serve(answers, lambda api: api.create(POD))
    assert result == "created" and len(seen) == 4
    assert throttled("POST") - before == 2
