"""Validation against the pool catalogue: a domain error naming the field, never a pod."""

from __future__ import annotations

import pytest

from kubetrain.errors import SpecError
from kubetrain_operator.validation import parse_spec, resolve_placement

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("overrides", "config_updates", "field", "words"),
    [
        ({"cluster__nodePool": "tpu"}, {}, "spec.cluster.nodePool", "unknown node pool 'tpu'"),
        (
            {"cluster__nodePool": "cpu", "training__resourcesPerWorker": {"gpu": 1}},
            {},
            "spec.training.resourcesPerWorker.gpu",
            "node pool 'cpu' has no GPUs",
        ),
        (
            {"training__resourcesPerWorker": {"gpu": 2}},
            {},
            "spec.training.resourcesPerWorker.gpu",
            "no node pool is set",
        ),
        (
            {"cluster__nodePool": "a100", "training__resourcesPerWorker": {"gpu": 9}},
            {},
            "spec.training.resourcesPerWorker.gpu",
            "nodes of pool 'a100' have 8",
        ),
        (
            {"cluster__nodePool": "a100", "cluster__nodeSelector": {"kubetrain.io/pool": "h"}},
            {},
            "spec.cluster.nodeSelector[kubetrain.io/pool]",
            "contradicts node pool 'a100'",
        ),
    ],
)
def test_bad_specs_name_the_field(make_spec, make_config, overrides, config_updates, field, words):
    with pytest.raises(SpecError) as err:
        resolve_placement(make_spec(**overrides), make_config(**config_updates))
    assert err.value.field == field
    assert words in str(err.value)


def test_default_pool_applies_when_the_job_names_none(make_spec, make_config):
    placement = resolve_placement(make_spec(), make_config(defaultNodePool="cpu"))
    assert placement.pool == "cpu"
    assert placement.node_selector == {"kubetrain.io/pool": "cpu"}


def test_stored_spec_that_pydantic_rejects_is_a_spec_error():
    with pytest.raises(SpecError) as err:
        parse_spec({"data": {"source": {}}, "model": {"type": "mlp"}})
    assert err.value.field is not None and err.value.field.startswith("spec.data.source")


@pytest.mark.parametrize("memory", ["1Gi", "2Gi", "3071Mi", "3221225471"])
def test_a_head_below_the_minimum_is_refused_naming_the_field_and_the_minimum(make_spec, memory):
    """A 2 GiB head (the case a user met, with 3 workers) is stopped by its own memory
    monitor before the first step, and every retry meets the same wall: it is refused
    before any pod exists."""
    from kubetrain.api.raynode import HEAD_MEMORY_MINIMUM
    from kubetrain_operator.validation import check_head_size

    with pytest.raises(SpecError) as err:
        check_head_size(make_spec(cluster__head={"resources": {"memory": memory}}))
    assert err.value.field == "spec.cluster.head.resources.memory"
    assert f"at least {HEAD_MEMORY_MINIMUM}" in str(err.value) and memory in str(err.value)


@pytest.mark.parametrize("memory", ["3Gi", "3072Mi", "4Gi", "64Gi"])
def test_a_head_at_or_above_the_minimum_is_accepted(make_spec, memory):
    from kubetrain_operator.validation import check_head_size

    check_head_size(make_spec(cluster__head={"resources": {"memory": memory}}))


def test_the_default_head_is_accepted(make_spec):
    from kubetrain_operator.validation import check_head_size

    check_head_size(make_spec())
