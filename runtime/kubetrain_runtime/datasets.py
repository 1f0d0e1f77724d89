"""``kubetrain datasets write``: the bundled datasets as files, so that the file readers (and
a bucket or a claim) can be tried on real data without a download.

``digits-png`` writes scikit-learn's handwritten digits as PNG files in the class-folder
layout that ``format: images`` reads (``DIR/<digit>/<index>.png``); the other names write a
bundled table as one CSV or Parquet file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kubetrain.errors import UserError

IMAGE_SETS = ("digits-png",)
TABLES = ("digits", "iris", "wine", "co2", "gunpoint")


def write_digits_png(folder: Path, *, scale: int = 1, limit: int | None = None) -> int:
    """The 1797 digits (or the first ``limit``) as 8-bit grey PNGs (0..16 stretched to
    0..255), ``scale`` times their 8x8 size; returns how many were written."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    pairs = list(zip(pixels, digits.target, strict=True))[:limit]
    for index, (image, label) in enumerate(pairs):
        target = folder / str(int(label))
        target.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(image, mode="L")
        if scale > 1:
            picture = picture.resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
        picture.save(target / f"{index:04d}.png")
    return len(pairs)


def write_table(name: str, folder: Path, file_format: str) -> Path:
    from kubetrain_runtime.data.sources import builtin_frame

    frame = builtin_frame(name).df
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{file_format}"
    if file_format == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def write(name: str, folder: Path, *, file_format: str = "parquet", scale: int = 1) -> str:
    """Write one dataset; returns what was written, for the CLI to print."""
    if name == "digits-png":
        count = write_digits_png(folder, scale=scale)
        return f"{count} PNG files in {folder}/<class>/"
    if name in TABLES:
        return str(write_table(name, folder, file_format))
    known = ", ".join((*IMAGE_SETS, *TABLES))
    raise UserError(f"no dataset {name!r}; known: {known}")
