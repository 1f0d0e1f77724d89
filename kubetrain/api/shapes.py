"""The shape one sample takes in each model family, from the number of feature values. Pure,
so that the runtime (with the data's real count) and the API (with a bundled dataset's known
columns) apply the same rule, and a CNN on 13 wine features fails at validation."""

from __future__ import annotations

import math

from kubetrain.api.v1alpha1 import CnnSpec, ModelSpec
from kubetrain.errors import SpecError


def _cnn_shape(spec: CnnSpec, num_features: int) -> list[int]:
    field = "spec.model.cnn.imageShape"
    if spec.imageShape:
        shape = [1, *spec.imageShape] if len(spec.imageShape) == 2 else list(spec.imageShape)
        if len(shape) != 3 or min(shape) < 1:
            raise SpecError(
                "imageShape is [channels, height, width] (or [height, width])", field=field
            )
        if math.prod(shape) != num_features:
            raise SpecError(
                f"imageShape {shape} holds {math.prod(shape)} values but the data has "
                f"{num_features} features",
                field=field,
            )
        return shape
    side = math.isqrt(num_features)
    if side * side != num_features:
        raise SpecError(
            f"the data's {num_features} features are not a square image; set imageShape "
            "[channels, height, width], or use model type mlp",
            field=field,
        )
    return [1, side, side]


def input_shape(model: ModelSpec, num_features: int) -> list[int]:
    """The shape one sample takes in the model, or a SpecError naming the field to fix."""
    if num_features < 1:
        raise SpecError("no feature columns are left", field="spec.data.features")
    section = model.section()
    if model.type == "cnn":
        assert isinstance(section, CnnSpec)
        shape = _cnn_shape(section, num_features)
        height, width = shape[1:]
        for index, kernel in enumerate(section.kernelSizes):
            if kernel > min(height, width):
                raise SpecError(
                    f"kernel {kernel} is larger than the {height}x{width} feature map of "
                    f"block {index}",
                    field=f"spec.model.cnn.kernelSizes[{index}]",
                )
            if height >= 2 and width >= 2:
                height, width = height // 2, width // 2
        return shape
    if model.type == "rnn":
        if num_features < 2:
            raise SpecError(
                "an rnn reads each row as a sequence: it needs at least 2 feature columns",
                field="spec.data.features",
            )
        return [num_features, 1]
    return [num_features]
