"""Image decoding per batch: channel modes, resizing and centre-cropping, the drop rules
(undecodable, missing, too small) and the sums behind channel statistics."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from kubetrain_runtime.data import images

pytestmark = pytest.mark.unit


def encoded(array: np.ndarray, mode: str, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


GREY = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8) * 5  # height 6, width 8
RGB = np.stack([GREY, 255 - GREY, np.full_like(GREY, 100)], axis=-1)


def test_keeps_the_image_s_own_channels_and_size_by_default():
    pixels, read = images.decode(encoded(GREY, "L"), images.DecodeSettings())
    assert pixels.shape == (1, 6, 8) and read == (6, 8)
    assert np.array_equal(pixels[0], GREY)
    pixels, _ = images.decode(encoded(RGB, "RGB"), images.DecodeSettings())
    assert pixels.shape == (3, 6, 8)
    assert np.array_equal(pixels.transpose(1, 2, 0), RGB)  # [channels, height, width]


@pytest.mark.parametrize(("mode", "channels"), [("L", 1), ("RGB", 3)])
def test_mode_converts_every_image(mode, channels):
    settings = images.DecodeSettings(mode=mode)
    for data in (encoded(GREY, "L"), encoded(RGB, "RGB"), encoded(RGB, "RGB", "JPEG")):
        pixels, _ = images.decode(data, settings)
        assert pixels.shape[0] == channels


def test_alpha_and_palette_images_become_rgb_and_sixteen_bit_grey_is_rescaled():
    rgba = np.dstack([RGB, np.full_like(GREY, 7)])
    assert images.decode(encoded(rgba, "RGBA"), images.DecodeSettings())[0].shape[0] == 3
    palette = Image.fromarray(RGB, mode="RGB").convert("P")
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    assert images.decode(buffer.getvalue(), images.DecodeSettings())[0].shape[0] == 3
    wide = (GREY.astype(np.uint16) * 200).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format="PNG")
    pixels, _ = images.decode(buffer.getvalue(), images.DecodeSettings())
    assert pixels.shape[0] == 1 and pixels.max() == 255 and pixels.min() == 0


def test_size_covers_then_centre_crops_keeping_the_aspect_ratio():
    wide = np.zeros((10, 30), dtype=np.uint8)
    wide[:, 10:20] = 255  # a bright centre third
    pixels, read = images.decode(encoded(wide, "L"), images.DecodeSettings(size=(10, 10)))
    assert read == (10, 30) and pixels.shape == (1, 10, 10)
    assert pixels.min() > 200  # the centre survived the crop, the dark sides did not


def test_decoded_row_drops_and_tags_what_cannot_be_used():
    settings = images.DecodeSettings(min_size=(7, 7))
    assert images.decoded_row(None, settings)[0] == images.MISSING
    assert images.decoded_row(b"not an image", settings)[0] == images.UNDECODABLE
    truncated = encoded(GREY, "L")[:40]
    assert images.decoded_row(truncated, images.DecodeSettings())[0] == images.UNDECODABLE
    assert images.decoded_row(encoded(GREY, "L"), settings)[0] == images.TOO_SMALL  # 6 < 7
    status, row = images.decoded_row(encoded(RGB, "RGB"), images.DecodeSettings())
    assert status == images.KEPT and row[images.SHAPE] == "3x6x8"
    assert row[images.CHANNEL_SUM] == pytest.approx(RGB.reshape(-1, 3).sum(0) / 255.0)


def test_decode_batch_keeps_other_columns_and_names_the_sources():
    batch = {"bytes": np.array([encoded(GREY, "L"), b"junk"], dtype=object),
             "path": np.array(["/d/a/1.png", "/d/b/2.png"], dtype=object),
             "class": np.array(["a", "b"], dtype=object)}  # fmt: skip
    out = images.decode_batch(
        batch, settings=images.DecodeSettings(), read=lambda v: v, column="bytes",
        sources=lambda b: list(b["path"]), drop=("bytes",),
    )  # fmt: skip
    assert "bytes" not in out and list(out["class"]) == ["a", "b"]
    assert list(out[images.STATUS]) == [images.KEPT, images.UNDECODABLE]
    status = images.status_partial(out, keep_names=5)
    assert status == {"counts": {images.KEPT: 1, images.UNDECODABLE: 1}, "bad": ["/d/b/2.png"]}
    assert images.to_vector({images.PIXELS: out[images.PIXELS][:1]}).shape == (1, 48)


def test_channel_moments_merge_over_batches():
    rows = [images.decoded_row(encoded(RGB, "RGB"), images.DecodeSettings())[1]
            for _ in range(3)]  # fmt: skip
    batch = {key: np.asarray([r[key] for r in rows], dtype=object) for key in
             (images.SHAPE, images.READ_SIZE)}  # fmt: skip
    for key in (images.CHANNEL_SUM, images.CHANNEL_SQUARES):
        batch[key] = np.stack([r[key] for r in rows])
    merged = images.merge([images.partial(batch), images.partial(batch)])
    mean, std = images.channel_moments(merged, 3)
    expected = RGB.reshape(-1, 3) / 255.0
    assert mean == pytest.approx(expected.mean(0))
    flat = [s if s > 1e-6 else 1.0 for s in expected.std(0)]
    assert std == pytest.approx(flat)  # a flat channel gets std 1
    assert merged["sizes"] == {"6x8": 6}


def test_class_of_takes_the_first_folder_below_the_root():
    assert images.class_of("/data/cats/a.png", "/data") == "cats"
    assert images.class_of("bucket/p/dogs/x/y.jpg", "bucket/p") == "dogs"
    assert images.class_of("/data/a.png", "/data") == ""


def test_path_columns_resolve_against_the_table_folder():
    assert images.resolve_image_path("img/1.png", "bucket/tables") == "bucket/tables/img/1.png"
    assert images.resolve_image_path("../1.png", "/data/t") == "/data/1.png"
    assert images.resolve_image_path("/abs/1.png", "/data") == "/abs/1.png"
    assert images.resolve_image_path("s3://b/k.png", "/data") == "b/k.png"
    assert images.resolve_image_path(None, "/data") is None
    assert images.resolve_image_path(" ", "/data") is None


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_that_still_covers_the_size():
    big = np.zeros((480, 640, 3), dtype=np.uint8)
    big[:, 320:] = 250
    pixels, read = images.decode(encoded(big, "RGB", "JPEG"), images.DecodeSettings(size=(60, 80)))
    assert read == (480, 640) and pixels.shape == (3, 60, 80)  # the size read is the file's
    assert pixels[:, :, :30].mean() < 40 and pixels[:, :, 50:].mean() > 200
