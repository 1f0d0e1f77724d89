"""Differential test: for every manifest of the corpus (``tests/cluster/corpus/``) and for
generated ones, ``kubetrain validate`` and the real API server reach the same verdict, and
both name the field at fault.

The server judges what a user's ``kubectl create -f`` would send: the real kubectl turns the
YAML text into JSON (so YAML 1.1's ``yes``/``on``/``y``, exponent floats and sexagesimal
numbers are read as kubectl reads them), and the API server dry-runs a create of it with
strict field validation. Every disagreement of a run is collected and reported in one table.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from differential_mutations import BASES, base_cases, full_base, mutated_cases, mutation_options
from differential_support import (
    Case,
    Kubectl,
    Outcome,
    Server,
    client_only_problems,
    disagreements,
    judge,
    load_cases,
    table,
)
from hypothesis import HealthCheck, Phase, given, settings
from kubernetes import client as k8s

pytestmark = pytest.mark.cluster

VALID = load_cases("valid.yaml", valid=True)
INVALID = load_cases("invalid.yaml", valid=False)
#: Files the client rejects although the server cannot see the problem, with the reason.
CLIENT_ONLY = load_cases("client_only.yaml", valid=False)
GENERATED_EXAMPLES = 150
#: Every part of the spec the invalid corpus must reach.
SPEC_PARTS = (
    "metadata.name",
    "spec.data.source",
    "spec.data.cleaning",
    "spec.data.preprocessing",
    "spec.data.features",
    "spec.data.label",
    "spec.data.validation",
    "spec.model.type",
    "spec.model.task",
    "spec.model.cnn",
    "spec.model.rnn",
    "spec.model.vae",
    "spec.model.mlp",
    "spec.training.optimizer",
    "spec.training.earlyStopping",
    "spec.training.checkpoint",
    "spec.training.resourcesPerWorker",
    "spec.cluster.tolerations",
    "spec.cluster.nodeSelector",
    "spec.cluster.head",
    "spec.cluster.image",
    "spec.cluster.priorityClassName",
    "spec.cluster.serviceAccountName",
    "spec.output",
    "spec.runPolicy",
)


@pytest.fixture
def server(kube_api: k8s.ApiClient, namespace: str, trainingjob_crd: dict[str, Any]) -> Server:
    return Server(kube_api, namespace)


def _report(
    title: str, outcomes: list[Outcome], rows: list[tuple[Outcome, list[str]]], summary: str
) -> str:
    counts = Counter("valid" if o.case.valid else "invalid" for o in outcomes)
    return (
        f"{title}: {len(rows)} of {len(outcomes)} cases disagree "
        f"({counts['invalid']} invalid, {counts['valid']} valid); {summary}\n{table(rows)}"
    )


def test_corpus_is_large_and_covers_the_spec() -> None:
    names = [c.name for c in (*VALID, *INVALID, *CLIENT_ONLY)]
    assert len(INVALID) >= 150 and len(VALID) >= 30, (len(INVALID), len(VALID))
    assert [n for n, k in Counter(names).items() if k > 1] == []
    assert all(c.fields for c in (*INVALID, *CLIENT_ONLY)), "an invalid case names no field"
    assert all(c.reason for c in CLIENT_ONLY), "a client-only case gives no reason"
    reached = {f for c in INVALID for f in c.fields}
    missing = [p for p in SPEC_PARTS if not any(f.startswith(p) for f in reached)]
    assert missing == [], f"no invalid case for {missing}"


def test_client_and_server_agree_on_the_corpus(kubectl: Kubectl, server: Server) -> None:
    outcomes, timings = judge([*VALID, *INVALID], kubectl, server)
    rows = list(disagreements(outcomes))
    summary = timings.summary(len(outcomes))
    print(summary)
    assert not rows, _report("corpus", outcomes, rows, summary)


def test_client_only_cases_fail_on_the_client_alone(kubectl: Kubectl, server: Server) -> None:
    outcomes, timings = judge(CLIENT_ONLY, kubectl, server)
    rows = list(disagreements(outcomes, client_only_problems))
    assert not rows, _report("client-only", outcomes, rows, timings.summary(len(outcomes)))


def _generated_cases() -> list[Case]:
    """Hypothesis picks the base, the field and the change, with an equal share of the
    examples for each kind of change; bounded and derandomised, so every run judges the
    same cases in seconds."""
    bases = {name: full_base(name) for name in BASES}
    options = mutation_options(bases)
    cases: dict[str, Case] = {c.name: c for c in base_cases(bases)}
    for kind in sorted(options):

        @settings(
            max_examples=math.ceil(GENERATED_EXAMPLES / len(options)),
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(mutated_cases(bases, {kind: options[kind]}))
        def collect(case: Case) -> None:
            cases.setdefault(case.name, case)

        collect()
    return list(cases.values())


def test_client_and_server_agree_on_generated_mutations(kubectl: Kubectl, server: Server) -> None:
    cases = _generated_cases()
    assert len(cases) >= GENERATED_EXAMPLES // 2, "hypothesis generated too few distinct cases"
    outcomes, timings = judge(cases, kubectl, server)
    rows = list(disagreements(outcomes))
    summary = timings.summary(len(outcomes))
    print(summary)
    assert not rows, _report("generated", outcomes, rows, summary)
