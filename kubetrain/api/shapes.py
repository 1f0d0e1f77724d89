"""The shape one sample takes in each model family, from the number of feature values. Pure,
so that the runtime (with the data's real count) and the API (with a bundled dataset's known
columns) apply the same rule, and a CNN on 13 wine features fails at validation."""

from __future__ import annotations

import math

from kubetrain.api.v1alpha1 import CnnSpec, ModelSpec
from kubetrain.errors import SpecError


def _given_cnn_shape(spec: CnnSpec) -> list[int] | None:
    if not spec.imageShape:
        return None
    shape = [1, *spec.imageShape] if len(spec.imageShape) == 2 else list(spec.imageShape)
    if len(shape) != 3 or min(shape) < 1:
        raise SpecError(
            "imageShape is [channels, height, width] (or [height, width])",
            field="spec.model.cnn.imageShape",
        )
    return shape


def _cnn_shape(spec: CnnSpec, num_features: int, sample: list[int] | None) -> list[int]:
    field = "spec.model.cnn.imageShape"
    given = _given_cnn_shape(spec)
    if sample is not None:  # images: the data says [channels, height, width]
        if given is not None and given != sample:
            raise SpecError(
                f"imageShape {given} does not match the images, which are {sample} "
                "(channels, height, width); leave imageShape empty to take the images' shape",
                field=field,
            )
        return list(sample)
    if given is not None:
        if math.prod(given) != num_features:
            raise SpecError(
                f"imageShape {given} holds {math.prod(given)} values but the data has "
                f"{num_features} features",
                field=field,
            )
        return given
    side = math.isqrt(num_features)
    if side * side != num_features:
        raise SpecError(
            f"the data's {num_features} features are not a square image; set imageShape "
            "[channels, height, width], or use model type mlp",
            field=field,
        )
    return [1, side, side]


def _check_kernels(spec: CnnSpec, shape: list[int]) -> None:
    height, width = shape[1:]
    for index, kernel in enumerate(spec.kernelSizes):
        if kernel > min(height, width):
            raise SpecError(
                f"kernel {kernel} is larger than the {height}x{width} feature map of block {index}",
                field=f"spec.model.cnn.kernelSizes[{index}]",
            )
        if height >= 2 and width >= 2:
            height, width = height // 2, width // 2


def input_shape(model: ModelSpec, num_features: int, sample: list[int] | None = None) -> list[int]:
    """The shape one sample takes in the model, or a SpecError naming the field to fix.

    ``sample`` is the shape the data gives each sample, where it has one: images
    ``[channels, height, width]``, sequence windows ``[time, features]``. Without it a
    sample is a row of ``num_features`` values."""
    if num_features < 1:
        raise SpecError("no feature columns are left", field="spec.data.features")
    section = model.section()
    if model.type == "cnn":
        assert isinstance(section, CnnSpec)
        shape = _cnn_shape(section, num_features, sample if sample and len(sample) == 3 else None)
        _check_kernels(section, shape)
        return shape
    if model.type == "rnn":
        if sample is not None and len(sample) == 2:
            return list(sample)
        if num_features < 2:
            raise SpecError(
                "an rnn reads each row as a sequence: it needs at least 2 feature columns",
                field="spec.data.features",
            )
        return [num_features, 1]
    return [num_features]
