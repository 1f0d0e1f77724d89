"""What happens to a batch on the training device before the model sees it.

Images arrive as ``uint8`` pixels (a quarter of float32's memory in Ray's object store and
in each worker's cache): here they are scaled to [0, 1], normalized per channel and, for
the training split only, flipped and shifted at random, anew every epoch, so no augmented
copy is ever stored. Sequence windows are standardized per feature (``standard``), or
taken relative to each window's last step (``lastValue``, for series with a trend: a
forecast is then a change from the last value seen), and a forecast's targets with them;
the objective reports its errors in the data's own units.

The settings travel in ``TrainPlan.input_transform`` (plain JSON, also kept in
``model/plan.json`` for whoever uses the model later); ``None`` means the features arrive
ready, as tables' do.
"""

from __future__ import annotations

from typing import Any

import torch

IMAGE = "image"
STANDARDIZE = "standardize"
LAST_VALUE = "lastValue"


class InputTransform:
    """Identity: tables are preprocessed by Ray Data before training."""

    def batch(
        self, x: torch.Tensor, y: torch.Tensor | None, *, train: bool, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The inputs (and a regression's targets) as the model learns them."""
        return x, y

    def errors_in_data_units(self, error: torch.Tensor) -> torch.Tensor:
        """A difference of learnt targets, in the data's own units."""
        return error

    def predictions_in_data_units(self, predicted: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Predictions of learnt targets back in the data's units (``x``: the raw inputs)."""
        return predicted


class ImageTransform(InputTransform):
    def __init__(self, settings: dict[str, Any], device: torch.device) -> None:
        self.shape = tuple(int(v) for v in settings["shape"])
        channels = self.shape[0]
        mean = settings.get("mean") or [0.0] * channels
        std = settings.get("std") or [1.0] * channels
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        augment = settings.get("augment") or {}
        self.horizontal = bool(augment.get("horizontalFlip"))
        self.vertical = bool(augment.get("verticalFlip"))
        self.padding = int(augment.get("cropPadding", 0))

    def batch(
        self, x: torch.Tensor, y: torch.Tensor | None, *, train: bool, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        images = x.reshape(x.shape[0], *self.shape).float() / 255.0
        if train:
            images = self.augment(images, generator)
        images = (images - self.mean) / self.std
        return images.reshape(x.shape[0], -1), y

    def augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.horizontal:
            images = _flip_some(images, dim=3, generator=generator)
        if self.vertical:
            images = _flip_some(images, dim=2, generator=generator)
        if self.padding:
            images = random_crop(images, self.padding, generator)
        return images


def _flip_some(images: torch.Tensor, *, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored along ``dim`` with probability one half."""
    chosen = torch.rand(images.shape[0], generator=generator) < 0.5
    chosen = chosen.to(images.device).view(-1, 1, 1, 1)
    return torch.where(chosen, images.flip(dim), images)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad every side with zeros, then cut each image's own random window of the original
    size: a shift of up to ``padding`` pixels in each direction (one gather, no loop)."""
    count, channels, height, width = images.shape
    device = images.device
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (count,), generator=generator).to(device)
    left = torch.randint(0, 2 * padding + 1, (count,), generator=generator).to(device)
    rows = (top.view(-1, 1) + torch.arange(height, device=device)).view(count, 1, -1, 1)
    cols = (left.view(-1, 1) + torch.arange(width, device=device)).view(count, 1, 1, -1)
    index = torch.arange(count, device=device).view(-1, 1, 1, 1)
    channel = torch.arange(channels, device=device).view(1, -1, 1, 1)
    return padded[index, channel, rows, cols]


class SequenceTransform(InputTransform):
    """Windows ``[time, features]`` and forecasts ``[horizon, targets]``, scaled with what
    the training split held: ``standard`` subtracts each column's mean, ``lastValue`` each
    window's last step (of the target's own feature column, for a forecast); both then
    divide by the matching standard deviation."""

    def __init__(self, settings: dict[str, Any], device: torch.device) -> None:
        def tensor(key: str) -> torch.Tensor | None:
            values = settings.get(key)
            return torch.tensor(values, dtype=torch.float32, device=device) if values else None

        self.relative = settings["kind"] == LAST_VALUE
        self.mean, self.std = tensor("mean"), tensor("std")
        assert self.std is not None
        self.features = self.std.shape[0]
        self.target_mean, self.target_std = tensor("targetMean"), tensor("targetStd")
        #: lastValue: the feature column of each target, whose last step a forecast is from.
        self.target_columns = [int(i) for i in settings.get("targetFeatures", [])]

    def _steps(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1, self.features)

    def _per_target(self, y: torch.Tensor) -> torch.Tensor:
        assert self.target_std is not None
        return y.reshape(y.shape[0], -1, self.target_std.shape[0])

    def _target_origin(self, x: torch.Tensor) -> torch.Tensor:
        """What a forecast is measured from, per sample and target."""
        if self.relative:
            return self._steps(x)[:, -1:, self.target_columns]
        assert self.target_mean is not None
        return self.target_mean

    def batch(
        self, x: torch.Tensor, y: torch.Tensor | None, *, train: bool, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        steps = self._steps(x)
        origin = steps[:, -1:, :] if self.relative else self.mean
        scaled = ((steps - origin) / self.std).reshape(x.shape[0], -1)
        if y is None or self.target_std is None:
            return scaled, y
        ahead = (self._per_target(y) - self._target_origin(x)) / self.target_std
        return scaled, ahead.reshape(y.shape)

    def errors_in_data_units(self, error: torch.Tensor) -> torch.Tensor:
        if self.target_std is None:
            return error
        return (self._per_target(error) * self.target_std).reshape(error.shape)

    def predictions_in_data_units(self, predicted: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.target_std is None:
            return predicted
        ahead = self._per_target(predicted) * self.target_std + self._target_origin(x)
        return ahead.reshape(predicted.shape)


def build(settings: dict[str, Any] | None, device: torch.device) -> InputTransform:
    if not settings:
        return InputTransform()
    if settings["kind"] == IMAGE:
        return ImageTransform(settings, device)
    if settings["kind"] in (STANDARDIZE, LAST_VALUE):
        return SequenceTransform(settings, device)
    raise ValueError(f"unknown input transform {settings['kind']!r}")
