"""The model factory: shapes from the data, misfits as SpecErrors, forward passes."""

from __future__ import annotations

import pytest
import torch

from kubetrain.api.shapes import input_shape
from kubetrain.api.v1alpha1 import ModelSpec
from kubetrain.errors import SpecError
from kubetrain_runtime import models
from kubetrain_runtime.plan import TrainPlan

pytestmark = pytest.mark.unit


def model(kind, **section):
    return ModelSpec.model_validate({"type": kind, **({kind: section} if section else {})})


@pytest.mark.parametrize(
    ("spec", "features", "shape"),
    [
        (model("cnn"), 64, [1, 8, 8]),
        (model("cnn", imageShape=[3, 4, 4], channels=[4], kernelSizes=[3]), 48, [3, 4, 4]),
        (model("cnn", imageShape=[8, 8]), 64, [1, 8, 8]),
        (model("rnn"), 32, [32, 1]),
        (model("vae"), 64, [64]),
        (model("mlp"), 7, [7]),
    ],
)
def test_input_shape_comes_from_the_data(spec, features, shape):
    assert input_shape(spec, features) == shape


@pytest.mark.parametrize(
    ("spec", "features", "field", "text"),
    [
        (model("cnn"), 13, "spec.model.cnn.imageShape", "13 features are not a square image"),
        (model("cnn", imageShape=[1, 4, 4]), 13, "spec.model.cnn.imageShape", "holds 16 values"),
        (
            model("cnn", channels=[8, 8], kernelSizes=[3, 5]),
            64,
            "spec.model.cnn.kernelSizes[1]",
            "larger than the 4x4",
        ),
        (model("rnn"), 1, "spec.data.features", "at least 2"),
    ],
)
def test_misfits_name_the_field(spec, features, field, text):
    with pytest.raises(SpecError) as err:
        input_shape(spec, features)
    assert err.value.field == field
    assert text in str(err.value)


def plan_for(spec: ModelSpec, features: int, outputs: int, task: str) -> TrainPlan:
    return TrainPlan(
        name="t",
        model_type=spec.type,
        task=task,
        section=spec.section().model_dump(),
        input_shape=input_shape(spec, features),
        num_features=features,
        num_outputs=outputs,
        epochs=1,
        batch_size=4,
        optimizer={},
        seed=0,
        fingerprint="f",
    )


@pytest.mark.parametrize(
    ("spec", "features", "outputs", "task"),
    [
        (model("cnn"), 64, 10, "classification"),
        (model("rnn", cell="gru", bidirectional=True, layers=2), 16, 1, "regression"),
        (model("rnn"), 16, 3, "classification"),
        (model("mlp", activation="gelu"), 7, 3, "classification"),
    ],
)
def test_forward_shapes(spec, features, outputs, task):
    net = models.build_model(plan_for(spec, features, outputs, task))
    assert net(torch.zeros(5, features)).shape == (5, outputs)


def test_vae_returns_reconstruction_and_posterior():
    net = models.build_model(
        plan_for(model("vae", latentDim=3, hiddenUnits=[16, 8]), 64, 64, "generation")
    )
    out, mu, logvar = net(torch.zeros(2, 64))
    assert out.shape == (2, 64) and mu.shape == logvar.shape == (2, 3)
    assert net.decode(torch.zeros(4, 3)).shape == (4, 64)
