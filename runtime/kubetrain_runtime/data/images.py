"""Image files into model inputs, one Ray Data batch at a time: decode, convert the channel
mode, drop what does not decode or is too small, resize and centre-crop, and take the small
per-image sums that statistics and normalization need. Pure PIL and numpy (no Ray), so every
rule is unit-tested on a handful of bytes.

A decoded image travels as raw ``uint8`` bytes in ``[channels, height, width]`` order with
its shape beside it: images of different sizes may meet in one batch until the statistics
have checked that they agree, and a fixed-shape tensor column could not hold them. The
pipeline turns the bytes into one flat ``uint8`` vector per sample at the end (a quarter of
float32's memory); scaling to [0, 1], normalization and augmentation happen on the training
device (``kubetrain_runtime.transforms``).
"""

from __future__ import annotations

import io
import posixpath
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Columns the decode step adds (internal; dropped before training).
PIXELS = "__kt_pixels"
SHAPE = "__kt_shape"  # "CxHxW" after conversion and resizing
READ_SIZE = "__kt_read_size"  # "HxW" as the file holds it
SOURCE = "__kt_source"  # the file's path (or the row's number for bytes in a table)
STATUS = "__kt_image_status"
CHANNEL_SUM = "__kt_channel_sum"  # per channel, pixels scaled to [0, 1]; 3 slots
CHANNEL_SQUARES = "__kt_channel_squares"
INTERNAL = (PIXELS, SHAPE, READ_SIZE, SOURCE, STATUS, CHANNEL_SUM, CHANNEL_SQUARES)

#: What became of each image, in the order the rules apply.
KEPT, MISSING, UNDECODABLE, TOO_SMALL = 0, 1, 2, 3
#: The rule names that status.dataStats.droppedByRule shows for each drop.
RULES = {
    MISSING: "images.missing",
    UNDECODABLE: "images.undecodable",
    TOO_SMALL: "images.minSize",
}
MAX_CHANNELS = 3
#: PIL modes that hold one channel of grey (with or without alpha); the rest become RGB.
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La"})
#: Grey modes wider than 8 bits: scaled to 0..255 by their own range first.
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


@dataclass(frozen=True)
class DecodeSettings:
    """``spec.data.images`` as the decode step needs it."""

    size: tuple[int, int] | None = None  # (height, width)
    mode: str | None = None  # "L" or "RGB"; None keeps each image's own
    min_size: tuple[int, int] | None = None  # (height, width)


class TooSmall(Exception):
    """The image decoded but is smaller than ``minSize``."""


def target_mode(image_mode: str, wanted: str | None) -> str:
    """The mode an image is converted to: the one asked for, else grey or RGB by its own."""
    if wanted:
        return wanted
    return "L" if image_mode in _GREY_MODES else "RGB"


def decode(data: bytes, settings: DecodeSettings) -> tuple[np.ndarray, tuple[int, int]]:
    """One encoded image as ``uint8 [channels, height, width]``, and its size as read.
    Raises ``TooSmall``, or PIL's and numpy's errors for a file that does not decode."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as image:
        read_size = (image.height, image.width)
        if settings.min_size and (
            read_size[0] < settings.min_size[0] or read_size[1] < settings.min_size[1]
        ):
            raise TooSmall(f"{read_size[0]}x{read_size[1]}")
        mode = target_mode(image.mode, settings.mode)
        if settings.size and image.format == "JPEG":
            # A JPEG decodes at 1/2, 1/4 or 1/8 scale for free, still covering the size.
            height, width = settings.size
            image.draft(mode, (width, height))
        image.load()  # a truncated file fails here, not later
        source = _to_eight_bits(image) if image.mode in _WIDE_MODES else image
        converted = source.convert(mode)
        if settings.size and (converted.height, converted.width) != settings.size:
            height, width = settings.size
            converted = ImageOps.fit(converted, (width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(converted, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[None, :, :]
    else:
        pixels = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    return pixels, read_size


def _to_eight_bits(image: Any) -> Any:
    """16-bit and float grey images scaled to 0..255 by their own range (PIL's convert
    would clip them)."""
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
    return Image.fromarray(scaled.round().astype(np.uint8), mode="L")


def shape_text(shape: Iterable[int]) -> str:
    return "x".join(str(int(v)) for v in shape)


def parse_shape(text: str) -> list[int]:
    return [int(v) for v in text.split("x")]


def _empty_row() -> dict[str, Any]:
    return {
        PIXELS: b"",
        SHAPE: "",
        READ_SIZE: "",
        CHANNEL_SUM: np.zeros(MAX_CHANNELS),
        CHANNEL_SQUARES: np.zeros(MAX_CHANNELS),
    }


def decoded_row(data: bytes | None, settings: DecodeSettings) -> tuple[int, dict[str, Any]]:
    """One image's status and the columns the decode step adds."""
    row = _empty_row()
    if data is None:
        return MISSING, row
    try:
        pixels, read_size = decode(data, settings)
    except TooSmall:
        return TOO_SMALL, row
    except Exception:  # any reason a file does not decode: counted, never fatal
        return UNDECODABLE, row
    scaled = pixels.reshape(pixels.shape[0], -1).astype(np.float64) / 255.0
    sums, squares = np.zeros(MAX_CHANNELS), np.zeros(MAX_CHANNELS)
    sums[: pixels.shape[0]] = scaled.sum(axis=1)
    squares[: pixels.shape[0]] = (scaled * scaled).sum(axis=1)
    row.update(
        {
            PIXELS: pixels.tobytes(),
            SHAPE: shape_text(pixels.shape),
            READ_SIZE: shape_text(read_size),
            CHANNEL_SUM: sums,
            CHANNEL_SQUARES: squares,
        }
    )
    return KEPT, row


def decode_batch(
    batch: dict[str, np.ndarray],
    *,
    settings: DecodeSettings,
    read: Callable[[Any], bytes | None],
    column: str,
    sources: Callable[[dict[str, np.ndarray]], list[str]],
    drop: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Decode ``batch[column]`` (through ``read``: bytes from a path, or the bytes
    themselves) and add the image columns; every other column is kept, but ``drop``."""
    statuses: list[int] = []
    rows: list[dict[str, Any]] = []
    for value in batch[column]:
        status, row = decoded_row(read(value), settings)
        statuses.append(status)
        rows.append(row)
    out = {k: v for k, v in batch.items() if k not in drop}
    out[SOURCE] = np.asarray(sources(batch), dtype=object)
    out[STATUS] = np.asarray(statuses, dtype=np.int8)
    for name in (PIXELS, SHAPE, READ_SIZE):
        out[name] = np.asarray([r[name] for r in rows], dtype=object)
    for name in (CHANNEL_SUM, CHANNEL_SQUARES):
        out[name] = np.stack([r[name] for r in rows]) if rows else np.zeros((0, MAX_CHANNELS))
    return out


# --------------------------------------------------------------------- sources


def class_of(path: str, root: str) -> str:
    """An image's class in the class-folder layout: the first folder below the root."""
    relative = path[len(root) :].lstrip("/") if path.startswith(root) else path
    parts = relative.split("/")
    return parts[0] if len(parts) > 1 else ""


def with_class(batch: dict[str, np.ndarray], *, root: str, label: str) -> dict[str, np.ndarray]:
    """The label column from each file's folder (``read_binary_files`` gives the paths)."""
    batch[label] = np.asarray([class_of(str(p), root) for p in batch["path"]], dtype=object)
    return batch


def has_image_ending(name: str, endings: Iterable[str]) -> bool:
    return name.lower().endswith(tuple(endings))


def resolve_image_path(value: Any, base: str) -> str | None:
    """A path column's value as a path the table's filesystem opens: absolute paths and
    URIs as they are, relative ones against the table's folder. None for an empty cell."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    if not text:
        return None
    if "://" in text:
        return text.split("://", 1)[1]
    if text.startswith("/"):
        return text
    return posixpath.normpath(posixpath.join(base, text))


# ------------------------------------------------------------------ statistics

Partial = dict[str, Any]


def partial(batch: dict[str, np.ndarray]) -> Partial:
    """One batch of kept images: how many of each shape and read size, and the channel
    sums (pixels in [0, 1]) and pixel counts for the channel means."""
    shapes = Counter(str(s) for s in batch[SHAPE])
    sizes = Counter(str(s) for s in batch[READ_SIZE])
    pixels = sum(int(np.prod(parse_shape(s)[1:])) * n for s, n in shapes.items())
    return {
        "images": len(batch[SHAPE]),
        "shapes": dict(shapes),
        "sizes": dict(sizes),
        "sum": np.asarray(batch[CHANNEL_SUM]).sum(axis=0).tolist() if len(batch[SHAPE]) else
        [0.0] * MAX_CHANNELS,
        "squares": np.asarray(batch[CHANNEL_SQUARES]).sum(axis=0).tolist()
        if len(batch[SHAPE]) else [0.0] * MAX_CHANNELS,
        "pixels": pixels,
    }  # fmt: skip


def merge(parts: Iterable[Partial]) -> Partial:
    total: Partial = {
        "images": 0,
        "shapes": Counter(),
        "sizes": Counter(),
        "sum": np.zeros(MAX_CHANNELS),
        "squares": np.zeros(MAX_CHANNELS),
        "pixels": 0,
    }
    for part in parts:
        total["images"] += part["images"]
        total["shapes"].update(part["shapes"])
        total["sizes"].update(part["sizes"])
        total["sum"] += np.asarray(part["sum"])
        total["squares"] += np.asarray(part["squares"])
        total["pixels"] += part["pixels"]
    return total


def channel_moments(merged: Partial, channels: int) -> tuple[list[float], list[float]]:
    """Each channel's mean and standard deviation over every pixel (in [0, 1]); a flat
    channel gets std 1, so that normalizing never divides by zero."""
    count = max(merged["pixels"], 1)
    mean = merged["sum"][:channels] / count
    variance = np.maximum(merged["squares"][:channels] / count - mean * mean, 0.0)
    std = np.sqrt(variance)
    std[std < 1e-6] = 1.0
    return [float(v) for v in mean], [float(v) for v in std]


def status_partial(batch: dict[str, np.ndarray], *, keep_names: int) -> Partial:
    """How many images each rule dropped in one batch, and the first few names dropped."""
    statuses = np.asarray(batch[STATUS])
    counts = {int(k): int(v) for k, v in zip(*np.unique(statuses, return_counts=True), strict=True)}
    bad = [str(s) for s, t in zip(batch[SOURCE], statuses, strict=True) if t != KEPT]
    return {"counts": counts, "bad": bad[:keep_names]}


def merge_status(parts: Iterable[Partial], keep_names: int) -> tuple[dict[int, int], list[str]]:
    counts: Counter[int] = Counter()
    bad: list[str] = []
    for part in parts:
        counts.update({int(k): v for k, v in part["counts"].items()})
        bad.extend(part["bad"][: max(0, keep_names - len(bad))])
    return dict(counts), bad


def to_vector(batch: dict[str, np.ndarray]) -> np.ndarray:
    """The batch's images as one ``uint8`` row each (all of one shape by now)."""
    pixels = batch[PIXELS]
    if len(pixels) == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    return np.stack([np.frombuffer(p, dtype=np.uint8) for p in pixels])
