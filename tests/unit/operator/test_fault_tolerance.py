"""Pure parts of the operator's fault tolerance: Event names that make a look repeated
after a restart post nothing twice, and kopf's retries that never give up but spread out."""

from __future__ import annotations

import itertools

import pytest

from kubetrain_operator import builders
from kubetrain_operator.actions import Event
from kubetrain_operator.lifecycle import KopfBackoffs
from kubetrain_operator.naming import JobRef

pytestmark = pytest.mark.unit

JOB = JobRef("digits", "ns", "0d2c6b1e-aaaa-bbbb-cccc-123456789abc")
WHEN = "2026-01-01T00:00:00Z"


def event_body(event: Event, decided_from: str | None) -> dict:
    return builders.event_object(
        JOB, event, component="kubetrain-operator", instance="op-0", when=WHEN,
        decided_from=decided_from,
    )  # fmt: skip


def test_the_same_decision_gets_the_same_event_name_and_another_decision_another():
    ready = Event("Normal", "ClusterReady", "head and all workers are ready")
    first = event_body(ready, "41")["metadata"]
    again = event_body(Event("Normal", "ClusterReady", "another message"), "41")["metadata"]
    assert first == again  # a restarted operator deciding from version 41 again: a 409
    assert first["annotations"] == {builders.ANNOTATION_DECIDED_FROM: "41"}
    others = {
        event_body(ready, "42")["metadata"]["name"],
        event_body(Event("Normal", "Suspended", "suspended"), "41")["metadata"]["name"],
        builders.event_object(
            JobRef(JOB.name, JOB.namespace, "another-uid"), ready,
            component="c", instance="i", when=WHEN, decided_from="41",
        )["metadata"]["name"],
    }  # fmt: skip
    assert first["name"] not in others and len(others) == 3
    assert first["name"].startswith(f"{JOB.name}.") and len(first["name"]) <= 253


def test_a_decision_is_named_by_the_stored_state_not_by_the_resource_version():
    """kopf's own writes after a restart (annotations, finalizers, status.kopf) bump the
    resourceVersion: the look they trigger repeats the lost one and must name it the same."""
    body = {"metadata": {"generation": 1, "resourceVersion": "41"}, "status": {"phase": "Pending"}}
    after_kopf = {
        "metadata": {
            "generation": 1,
            "resourceVersion": "44",
            "finalizers": ["kopf.zalando.org/x"],
        },
        "status": {"phase": "Pending", "kopf": {"progress": {}}},
    }
    assert builders.decision_basis(body) == builders.decision_basis(after_kopf)
    stored = {**body, "status": {"phase": "Failed"}}
    edited = {**body, "metadata": {"generation": 2, "resourceVersion": "41"}}
    bases = {builders.decision_basis(b) for b in (body, stored, edited, {"metadata": {}})}
    assert len(bases) == 4


def test_kopfs_retries_never_end_and_each_request_starts_from_the_first_step():
    backoffs = KopfBackoffs()
    first = list(itertools.islice(backoffs, 40))
    second = list(itertools.islice(backoffs, 3))
    assert len(first) == 40  # never exhausted: kopf escalates only after the last one
    steps = [*KopfBackoffs.STEPS, *[KopfBackoffs.CAP] * 32]
    assert all(step <= got <= 2 * step for step, got in zip(steps, first, strict=True))
    firsts = zip(KopfBackoffs.STEPS, second, strict=False)
    assert all(step <= got <= 2 * step for step, got in firsts)
    assert len(set(first[-20:])) > 1, "jittered, not in lockstep"
