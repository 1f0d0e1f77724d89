"""The training device's input transforms: pixel scaling, normalization and augmentation
(training split only, drawn anew each epoch), and sequence scaling that round-trips to the
data's units."""

from __future__ import annotations

import pytest
import torch

from kubetrain_runtime import transforms

pytestmark = pytest.mark.unit
CPU = torch.device("cpu")


def image(settings: dict) -> transforms.InputTransform:
    return transforms.build({"kind": "image", "shape": [1, 4, 4]} | settings, CPU)


def pixels(count: int = 3) -> torch.Tensor:
    return torch.arange(count * 16, dtype=torch.uint8).reshape(count, 16)


def test_images_are_scaled_and_normalized_per_channel():
    x, _ = image({"mean": [0.5], "std": [0.25]}).batch(
        pixels(), None, train=False, generator=torch.Generator()
    )
    expected = (pixels().float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected)


def test_validation_is_never_augmented_and_training_is_reproducible():
    augmenting = image({"augment": {"horizontalFlip": True, "cropPadding": 1}})
    plain, _ = augmenting.batch(pixels(), None, train=False, generator=torch.Generator())
    assert torch.allclose(plain, pixels().float() / 255)
    first, _ = augmenting.batch(pixels(64), None, train=True,
                                generator=torch.Generator().manual_seed(1))  # fmt: skip
    again, _ = augmenting.batch(pixels(64), None, train=True,
                                generator=torch.Generator().manual_seed(1))  # fmt: skip
    other, _ = augmenting.batch(pixels(64), None, train=True,
                                generator=torch.Generator().manual_seed(2))  # fmt: skip
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_flips_mirror_some_images_and_keep_the_rest():
    batch = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4).repeat(200, 1, 1, 1)
    flipped = transforms._flip_some(batch, dim=3, generator=torch.Generator().manual_seed(0))
    mirrored = (flipped == batch.flip(3)).flatten(1).all(1)
    kept = (flipped == batch).flatten(1).all(1)
    assert (mirrored | kept).all() and 60 < int(mirrored.sum()) < 140


def test_random_crop_shifts_each_image_within_the_padding():
    batch = torch.arange(1, 26, dtype=torch.float32).view(1, 1, 5, 5).repeat(50, 1, 1, 1)
    cropped = transforms.random_crop(batch, 2, torch.Generator().manual_seed(0))
    assert cropped.shape == batch.shape
    padded = torch.nn.functional.pad(batch[0], (2, 2, 2, 2))
    windows = {(dy, dx): padded[:, dy : dy + 5, dx : dx + 5] for dy in range(5) for dx in range(5)}
    for one in cropped:
        assert any(torch.equal(one, window) for window in windows.values())
    assert len({tuple(one.flatten().tolist()) for one in cropped}) > 5


def sequence_transform(kind: str) -> transforms.InputTransform:
    return transforms.build(
        {"kind": kind, "mean": [10.0, 0.0], "std": [2.0, 1.0], "targetMean": [10.0],
         "targetStd": [4.0], "targetFeatures": [0]},
        CPU,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["standardize", "lastValue"])
def test_sequence_scaling_round_trips_to_the_data_units(kind):
    transform = sequence_transform(kind)
    x = torch.tensor([[1.0, 5.0, 2.0, 6.0, 3.0, 7.0]])  # 3 steps of (a, b)
    y = torch.tensor([[4.0, 6.0]])  # horizon 2 of target a
    scaled_x, scaled_y = transform.batch(x, y, train=True, generator=torch.Generator())
    assert scaled_y is not None
    back = transform.predictions_in_data_units(scaled_y, x)
    assert torch.allclose(back, y)
    error = torch.tensor([[0.5, -1.0]])
    assert torch.allclose(transform.errors_in_data_units(error), error * 4.0)
    if kind == "lastValue":
        steps = scaled_x.view(1, 3, 2)
        assert torch.allclose(steps[:, -1], torch.zeros(1, 2))  # relative to the last step
        assert torch.allclose(scaled_y, (y - 3.0) / 4.0)
    else:
        assert torch.allclose(scaled_y, (y - 10.0) / 4.0)


def test_tables_pass_through():
    identity = transforms.build(None, CPU)
    x = torch.randn(2, 3)
    assert identity.batch(x, None, train=True, generator=torch.Generator())[0] is x
