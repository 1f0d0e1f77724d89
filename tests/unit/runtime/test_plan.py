"""Pure planning: quantities, worker sizing, fingerprints, resume and stopping rules."""

from __future__ import annotations

import itertools
import math

import pytest

from kubetrain.api.quantity import parse_quantity
from kubetrain.api.v1alpha1 import TrainingJobSpec, TrainingSpec
from kubetrain_runtime.plan import (
    Available,
    TrainPlan,
    decide_resume,
    fingerprint,
    size_workers,
    trains_in_process,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", 0.5),
        ("1", 1.0),
        (2, 2.0),
        ("1.5", 1.5),
        ("2Gi", 2 * 2**30),
        ("512Mi", 512 * 2**20),
        ("1G", 1e9),
        ("1e3", 1000.0),
    ],
)
def test_parse_quantity(text, value):
    assert parse_quantity(text) == pytest.approx(value)


def training(**overrides):
    return TrainingSpec.model_validate(overrides)


def test_two_workers_share_two_cores_with_room_for_the_driver():
    sizing = size_workers(
        training(workers=2), Available(cpus=2, memory=16 * 2**30), workers=None, local=True
    )
    assert (sizing.workers, sizing.cpu, sizing.threads) == (2, 0.9, 1)
    assert any("0.9 CPU instead of 1" in note for note in sizing.notes)
    assert sizing.resources_per_worker() == {"CPU": 0.9, "memory": 2 * 2**30}


def test_local_clamps_are_explained():
    spec = training(workers=4, resourcesPerWorker={"cpu": "2", "gpu": 1, "memory": "64Gi"})
    sizing = size_workers(spec, Available(cpus=2, memory=8 * 2**30), workers=None, local=True)
    assert sizing.workers == 2
    assert sizing.gpu == 0 and not sizing.use_gpu
    assert sizing.memory is None
    text = " ".join(sizing.notes)
    assert "4 workers asked" in text and "no GPU here" in text and "not reserving memory" in text


def test_cli_override_of_workers_wins():
    assert size_workers(training(workers=2), Available(cpus=2), workers=1, local=True).workers == 1


def test_a_cluster_takes_the_spec_as_written():
    spec = training(workers=3, resourcesPerWorker={"cpu": "2", "gpu": 1, "memory": "8Gi"})
    sizing = size_workers(spec, Available(cpus=1), workers=None, local=False)
    assert (sizing.workers, sizing.cpu, sizing.gpu, sizing.threads, sizing.notes) == (
        3,
        2.0,
        1.0,
        2,
        (),
    )
    assert sizing.use_gpu


SPEC = {
    "data": {"source": {"builtin": {"name": "digits"}}, "label": "target"},
    "model": {"type": "mlp"},
    "training": {"epochs": 3},
}


def test_fingerprint_ignores_epochs_and_workers_but_not_the_model():
    base = TrainingJobSpec.model_validate(SPEC)
    longer = TrainingJobSpec.model_validate({**SPEC, "training": {"epochs": 30, "workers": 4}})
    other = TrainingJobSpec.model_validate(
        {**SPEC, "model": {"type": "mlp", "mlp": {"hiddenUnits": [8]}}}
    )
    assert fingerprint(base) == fingerprint(longer) != fingerprint(other)


def plan(epochs=5, fp="abc"):
    return TrainPlan(
        name="j",
        model_type="mlp",
        task="classification",
        section={},
        input_shape=[4],
        num_features=4,
        num_outputs=3,
        epochs=epochs,
        batch_size=8,
        optimizer={},
        seed=0,
        fingerprint=fp,
    )


@pytest.mark.parametrize(
    ("saved", "resume", "epoch", "message"),
    [
        (None, False, 0, ""),
        ({"epoch": 2, "fingerprint": "abc"}, True, 2, "resuming after epoch 2"),
        ({"epoch": 2, "fingerprint": "other"}, False, 0, "spec changed"),
        ({"epoch": 5, "fingerprint": "abc"}, False, 0, "finished all 5 epochs"),
        ({"epoch": 3, "fingerprint": "abc", "stopped_early": True}, False, 0, "stopped early"),
    ],
)
def test_resume_is_deliberate(saved, resume, epoch, message):
    decision = decide_resume(saved, plan())
    assert (decision.resume, decision.epoch) == (resume, epoch)
    assert message in decision.message


@pytest.mark.parametrize(
    ("workers", "private", "function", "expected"),
    [
        (None, True, None, True),  # the default local run
        (2, True, None, False),  # --workers: real Ray Train workers
        (1, True, None, False),
        (None, False, None, False),  # a joined Ray (RAY_ADDRESS) keeps its workers
        (None, True, "pkg.mod:fn", False),  # a custom loop's own checkpoints need workers
    ],
)
def test_when_a_local_run_trains_in_process(workers, private, function, expected):
    spec = training(workers=2, trainFunction=function)
    assert trains_in_process(spec, workers=workers, private_ray=private) is expected


def test_in_process_sizing_uses_every_core_and_says_what_the_spec_sizes():
    sizing = size_workers(
        training(workers=2), Available(cpus=2, memory=8 * 2**30), workers=None, local=True,
        in_process=True,
    )  # fmt: skip
    assert (sizing.in_process, sizing.workers, sizing.threads, sizing.gpu) == (True, 1, 2, 0)
    (note,) = sizing.notes
    assert "local mode" in note and "spec.training.workers (2) sizes the cluster" in note
    assert "--workers 2 runs 2 Ray Train workers with DDP" in note


def test_in_process_takes_one_gpu_only_when_asked_and_present():
    spec = training(resourcesPerWorker={"gpu": 1})
    with_gpu = size_workers(spec, Available(cpus=4, gpus=1), workers=None, local=True,
                            in_process=True)  # fmt: skip
    without = size_workers(spec, Available(cpus=4), workers=None, local=True, in_process=True)
    assert with_gpu.use_gpu and not without.use_gpu


def test_cosine_schedule_decays_from_the_rate_to_zero_and_constant_stays():
    from kubetrain_runtime.plan import learning_rate

    cosine = {"learningRate": 0.01, "schedule": "cosine"}
    rates = [learning_rate(cosine, epoch, 10) for epoch in range(1, 11)]
    assert rates[0] == pytest.approx(0.01)
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert rates[-1] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 0.9)))
    assert learning_rate({"learningRate": 0.01}, 7, 10) == 0.01
    assert learning_rate(cosine, 1, 1) == 0.01
