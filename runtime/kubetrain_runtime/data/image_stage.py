"""The data stage for images: read → clean → decode → describe → split → normalize, ending
in two materialized datasets of ``x`` (one ``uint8`` vector per image) and ``y``.

Sources: a folder in the class-folder layout (``root/<class>/<file>``; the label is the
folder), or a table whose ``images.column`` holds paths or encoded bytes. Files are listed
on the driver (names only) and read and decoded in Ray Data tasks. A file that does not
decode, a path that names no file and an image below ``minSize`` are dropped and counted
like rows a cleaning rule drops; the first few names go to the report and to status.

Normalization is fitted on the training split (per-channel mean and std, from per-image
sums taken while decoding), as the tabular scalers are; it and the augmentation are
applied on the training device (``kubetrain_runtime.transforms``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray.data
from ray.data.datasource import FileShuffleConfig
from ray.data.expressions import col

from kubetrain.api.v1alpha1 import (
    CLASS_FOLDER_LABEL,
    IMAGE_ENDINGS,
    MAX_BAD_FILES,
    MAX_STATUS_CLASSES,
    MAX_STATUS_SIZES,
    DataStats,
    ImageSpec,
    ImageStats,
    RuleDrop,
    SizeCount,
    TrainingJobSpec,
)
from kubetrain.errors import DataError, SpecError
from kubetrain_runtime.data import images, preprocess, rules
from kubetrain_runtime.data import split as splitting
from kubetrain_runtime.data import stats as column_stats
from kubetrain_runtime.data.clean import clean
from kubetrain_runtime.data.preprocess import FEATURES, LABEL, FeaturePlan
from kubetrain_runtime.data.read import (
    Source,
    arrow_filesystem,
    check_uri,
    read_uri,
)
from kubetrain_runtime.data.stage import (
    PreparedData,
    StepTimer,
    arrow_schema,
    column_statistics,
    reading,
    reduce_blocks,
)
from kubetrain_runtime.storage import explain_storage_error
from kubetrain_runtime.transforms import IMAGE

_IMAGES = "spec.data.images"


@dataclass
class ImageSource:
    """A source whose rows each hold one image (``column``: bytes, or a path to read)."""

    source: Source
    column: str
    label: str | None
    read: Callable[[Any], bytes | None]
    #: Names the report shows for a dropped image (paths, or row numbers for bytes).
    sources: Callable[[dict[str, np.ndarray]], list[str]]
    #: Columns the decode step drops once used (the encoded bytes).
    drop: tuple[str, ...]


def _bytes_of(value: Any) -> bytes | None:
    return bytes(value) if value is not None else None


def _paths_in(batch: dict[str, np.ndarray], column: str) -> list[str]:
    return [str(p) for p in batch[column]]


def _row_names(batch: dict[str, np.ndarray], column: str) -> list[str]:
    return [f"row with {len(b or b'')} bytes in {column}" for b in batch[column]]


class PathReader:
    """Opens a path column's files in Ray Data tasks (the filesystem travels pickled)."""

    def __init__(self, fs: Any, base: str) -> None:
        self.fs, self.base = fs, base

    def __call__(self, value: Any) -> bytes | None:
        path = images.resolve_image_path(value, self.base)
        if path is None:
            return None
        try:
            with self.fs.open(path, "rb") as handle:
                return handle.read()
        except (FileNotFoundError, IsADirectoryError):
            return None  # counted as missing
        except PermissionError as exc:  # the data is there but refused: the user's to fix
            reason = explain_storage_error(self.fs, path, exc)
            raise DataError(f"cannot read this image: {reason}", field=str(value)) from None


def _class_folders(fs: Any, path: str, location: str) -> list[str]:
    """The class folders under a folder source; a DataError for a file, an empty folder or
    one without subfolders."""
    if not fs.isdir(path):
        raise DataError("format images reads a folder of class folders, not a file",
                        field=location)  # fmt: skip
    entries = [e for e in fs.ls(path, detail=True) if not _hidden(e["name"])]
    if not entries:
        raise DataError(
            "the folder is empty; format images reads one subfolder per class "
            "(root/<class>/<image>)",
            field=location,
        )
    folders = sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries
                     if e["type"] == "directory")  # fmt: skip
    if not folders:
        example = posixpath.basename(entries[0]["name"])
        raise DataError(
            f"has no class subfolders (only files, such as {example!r}); format images "
            "reads root/<class>/<image>, the folder's name being the label",
            field=location,
        )
    return folders


def _hidden(name: str) -> bool:
    return posixpath.basename(name.rstrip("/")).startswith((".", "_"))


def read_folder(spec: TrainingJobSpec, manifest_dir: Path) -> ImageSource:
    uri = spec.data.source.uri
    assert uri is not None
    fs, path, location = check_uri(uri, manifest_dir)
    _class_folders(fs, path, location)
    filesystem = arrow_filesystem(fs)
    target = location if filesystem is None else path
    try:
        ds = ray.data.read_binary_files(
            target,
            filesystem=filesystem,
            include_paths=True,
            file_extensions=[e.lstrip(".") for e in IMAGE_ENDINGS],
            # Classes come folder by folder; a seeded file order mixes them, so the split
            # (taken from the end) and every block hold all of them.
            shuffle=FileShuffleConfig(seed=spec.data.validation.seed),
        )
    except (ValueError, OSError) as exc:
        if "No input files found" in str(exc) or "No files found" in str(exc):
            endings = ", ".join(IMAGE_ENDINGS)
            raise DataError(f"no image files ({endings}) in its class folders",
                            field=location) from None  # fmt: skip
        raise DataError(f"cannot list the images: {exc}", field=location) from None
    root = path if filesystem is not None else location
    ds = ds.map_batches(
        partial(images.with_class, root=root.rstrip("/"), label=CLASS_FOLDER_LABEL),
        batch_format="numpy",
    )
    label = None if spec.model.type == "vae" else CLASS_FOLDER_LABEL
    return ImageSource(
        Source(ds, location), "bytes", label, _bytes_of,
        partial(_paths_in, column="path"), ("bytes",),
    )  # fmt: skip


def read_table(spec: TrainingJobSpec, manifest_dir: Path, image: ImageSpec) -> ImageSource:
    uri = spec.data.source.uri
    assert uri is not None and image.column is not None
    source = read_uri(uri, manifest_dir)
    with reading(source.description):
        schema = arrow_schema(source.ds)
    column = image.column
    if column not in schema.names:
        from kubetrain.api import columns as cols

        raise cols.missing_column(column, schema.names, f"{_IMAGES}.column")
    kind = schema.field(column).type
    fs, path, _ = check_uri(uri, manifest_dir)
    base = path if fs.isdir(path) else posixpath.dirname(path)  # relative paths start here
    import pyarrow as pa

    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        read, names = _bytes_of, partial(_row_names, column=column)
        drop: tuple[str, ...] = (column,)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        read, names, drop = PathReader(fs, base), partial(_paths_in, column=column), ()
    else:
        raise SpecError(
            f"column {column!r} holds {kind}; it must hold paths (text) or image bytes",
            field=f"{_IMAGES}.column",
        )
    # Tables are often sorted by class: one shuffle of the (small) rows before decoding.
    ds = source.ds.random_shuffle(seed=spec.data.validation.seed)
    label = None if spec.model.type == "vae" else spec.data.label
    return ImageSource(Source(ds, source.description), column, label, read, names, drop)


# ------------------------------------------------------------------ decoding


def _settings(image: ImageSpec) -> images.DecodeSettings:
    return images.DecodeSettings(
        size=tuple(image.size) if image.size else None,  # type: ignore[arg-type]
        mode=image.mode,
        min_size=tuple(image.minSize) if image.minSize else None,  # type: ignore[arg-type]
    )


@dataclass
class Decoded:
    kept: ray.data.Dataset
    rows_read: int
    rows_after: int
    dropped: list[RuleDrop]
    counts: dict[int, int]
    bad_files: list[str]


def _clean_table(
    spec: TrainingJobSpec, source: ImageSource
) -> tuple[ray.data.Dataset, int | None, list[RuleDrop], dict[str, rules.Kind]]:
    """The spec's cleaning rules on the table's own columns, before any image is read."""
    with reading(source.source.description):
        kinds = rules.kinds_of(arrow_schema(source.source.ds))
    plan = rules.plan_cleaning(spec.data.cleaning, kinds)
    if source.label is not None:
        from kubetrain.api import columns as cols

        cols.require(source.label, list(kinds), "spec.data.label")
    if plan.empty:
        return source.source.ds, None, [], plan.kinds
    with reading(source.source.description):
        cleaned = clean(source.source.ds, plan)
    return cleaned.ds, cleaned.rows_read, cleaned.dropped, plan.kinds


def decode_images(
    spec: TrainingJobSpec, source: ImageSource, image: ImageSpec
) -> tuple[Decoded, dict[str, rules.Kind]]:
    table, rows_read, dropped, kinds = _clean_table(spec, source)
    decode = partial(
        images.decode_batch, settings=_settings(image), read=source.read, column=source.column,
        sources=source.sources, drop=source.drop,
    )  # fmt: skip
    with reading(source.source.description):
        tagged = table.map_batches(decode, batch_format="numpy").materialize()
        parts = reduce_blocks(
            tagged, images.status_partial, columns=[images.STATUS, images.SOURCE],
            keep_names=MAX_BAD_FILES,
        )  # fmt: skip
    counts, bad = images.merge_status(parts, MAX_BAD_FILES)
    total = sum(counts.values())
    kept_rows = counts.get(images.KEPT, 0)
    dropped = dropped + [RuleDrop(rule=images.RULES[tag], dropped=counts.get(tag, 0))
                         for tag in _rules_that_apply(source, image)]  # fmt: skip
    if kept_rows == 0:
        raise DataError(_nothing_decoded(counts, bad), field=source.source.description)
    kept = tagged.filter(expr=col(images.STATUS) == images.KEPT)
    decoded = Decoded(kept, rows_read if rows_read is not None else total, kept_rows, dropped,
                      counts, bad)  # fmt: skip
    return decoded, kinds


def _rules_that_apply(source: ImageSource, image: ImageSpec) -> list[int]:
    """The decode step's rules this source can meet: a missing file only through a path
    column, a small image only with minSize set."""
    tags = [images.MISSING] if isinstance(source.read, PathReader) else []
    tags.append(images.UNDECODABLE)
    if image.minSize:
        tags.append(images.TOO_SMALL)
    return tags


def _nothing_decoded(counts: dict[int, int], bad: list[str]) -> str:
    parts = [f"{counts[tag]} {name.split('.')[-1]}" for tag, name in images.RULES.items()
             if counts.get(tag)]  # fmt: skip
    first = f"; first: {', '.join(bad[:3])}" if bad else ""
    return f"no image is left to train on ({', '.join(parts) or 'no rows'}){first}"


# ------------------------------------------------------------------ statistics


@dataclass
class Described:
    shape: list[int]
    merged: images.Partial
    label_stats: dict[str, Any]
    classes: preprocess.Classes | None


def _agreeing_shape(merged: images.Partial, image: ImageSpec) -> list[int]:
    """The one shape every image has after conversion and resizing; a SpecError naming the
    setting that would make them agree."""
    counts = {tuple(images.parse_shape(s)): n for s, n in merged["shapes"].items()}
    channels = sorted({s[0] for s in counts})
    if len(channels) > 1:
        raise SpecError(
            f"the images have {' and '.join(map(str, channels))} channels; set mode L "
            "(grey) or RGB to convert them all",
            field=f"{_IMAGES}.mode",
        )
    if len(counts) > 1:
        common = sorted(counts.items(), key=lambda kv: -kv[1])
        listed = ", ".join(f"{images.shape_text(s[1:])} ({n})" for s, n in common[:4])
        more = ", ..." if len(common) > 4 else ""
        raise SpecError(
            f"the images come in {len(counts)} sizes, height x width: {listed}{more}; set "
            "size [height, width] to resize them all (or minSize to drop small ones)",
            field=f"{_IMAGES}.size",
        )
    return list(next(iter(counts)))


def describe_images(
    decoded: Decoded, image: ImageSpec, label: str | None, kinds: dict[str, rules.Kind]
) -> Described:
    parts = reduce_blocks(
        decoded.kept, images.partial, columns=[images.SHAPE, images.READ_SIZE,
                                               images.CHANNEL_SUM, images.CHANNEL_SQUARES],
    )  # fmt: skip
    merged = images.merge(parts)
    shape = _agreeing_shape(merged, image)
    label_stats: dict[str, Any] = {}
    classes = None
    if label is not None:
        label_stats = column_statistics(decoded.kept, (label,), columns=[label])
        preprocess.check_nulls(FeaturePlan([], label), label_stats)
        classes = preprocess.plan_classes(label, kinds, label_stats, None)
    return Described(shape, merged, label_stats, classes)


def class_indices(classes: preprocess.Classes) -> dict[str, int]:
    """Each label value (as ``stats.value_key`` writes it) to its class index: labels that
    are 0..K-1 already keep their number, others take their place in the sorted names."""
    if not classes.needs_encoding:
        return {str(index): index for index in range(len(classes.names))}
    return {name: index for index, name in enumerate(classes.names)}


def to_xy(
    batch: dict[str, np.ndarray], label: str | None, indices: dict[str, int] | None
) -> dict[str, np.ndarray]:
    """Only what training reads: the pixels as one ``uint8`` row each, and the class."""
    out = {FEATURES: images.to_vector(batch)}
    if label is not None and indices is not None:
        out[LABEL] = np.asarray(
            [indices[column_stats.value_key(v)] for v in batch[label]], dtype=np.int64
        )
    return out


def _normalization(
    spec: TrainingJobSpec, image: ImageSpec, train: ray.data.Dataset, channels: int
) -> tuple[list[float], list[float], str]:
    method = image.normalize.method or ("none" if spec.model.type == "vae" else "fit")
    if method == "given":
        mean, std = list(image.normalize.mean), list(image.normalize.std)
        if len(mean) != channels:
            raise SpecError(
                f"mean and std have {len(mean)} values; the images have {channels} channels",
                field=f"{_IMAGES}.normalize.mean",
            )
        return mean, std, method
    if method == "none":
        return [0.0] * channels, [1.0] * channels, method
    parts = reduce_blocks(
        train, images.partial, columns=[images.SHAPE, images.READ_SIZE, images.CHANNEL_SUM,
                                        images.CHANNEL_SQUARES],
    )  # fmt: skip
    mean, std = images.channel_moments(images.merge(parts), channels)
    return mean, std, method


# ------------------------------------------------------------------ the stage


def prepare_images(
    spec: TrainingJobSpec, manifest_dir: Path, on_step: Callable[[str], None]
) -> PreparedData:
    image = spec.data.image_spec
    assert image is not None
    timer = StepTimer()
    with timer.step("read_and_clean"):
        folder = spec.data.source.uri is not None and spec.data.source.uri.format == "images"
        source = (
            read_folder(spec, manifest_dir) if folder else read_table(spec, manifest_dir, image)
        )
        decoded, kinds = decode_images(spec, source, image)
    on_step("statistics")
    with timer.step("stats"):
        described = describe_images(decoded, image, source.label, kinds)
    on_step("splitting and preprocessing")
    with timer.step("preprocess"):
        prepared = _split(spec, image, source, decoded, described)
    prepared.timings = timer.seconds
    prepared.report["timingsSeconds"] = {k: round(v, 3) for k, v in timer.seconds.items()}
    return prepared


def _split(
    spec: TrainingJobSpec, image: ImageSpec, source: ImageSource, decoded: Decoded,
    described: Described,
) -> PreparedData:  # fmt: skip
    split = spec.data.validation
    if split.column is not None:
        splitting.require_column(split, decoded.kept.columns())
        train, validation = splitting.by_column(decoded.kept, split)
    else:
        # The rows are in a seeded random order already (shuffled files, or a shuffled
        # table): validation is their last fraction, exactly, with no second shuffle.
        train, validation = decoded.kept.train_test_split(test_size=split.fraction, shuffle=False)
    train_rows, val_rows = train.count(), validation.count()
    if train_rows == 0 or val_rows == 0:
        raise SpecError(
            f"{decoded.rows_after} images cannot be split {splitting.describe(split)}: "
            f"{train_rows} would train and {val_rows} validate",
            field=splitting.FIELD if split.column else "spec.data.validation.fraction",
        )
    channels = described.shape[0]
    mean, std, method = _normalization(spec, image, train, channels)
    label, classes = source.label, described.classes
    indices = class_indices(classes) if classes and label else None
    xy = partial(to_xy, label=label, indices=indices)
    train_xy = train.map_batches(xy, batch_format="numpy").materialize()
    val_xy = validation.map_batches(xy, batch_format="numpy").materialize()
    transform = {
        "kind": IMAGE,
        "shape": described.shape,
        "mean": mean,
        "std": std,
        "normalization": method,
        "augment": image.augment.model_dump(mode="json"),
    }
    stats = _stats(decoded, described, train_rows, val_rows)
    class_names = classes.names if classes else None
    report = {
        "source": source.source.description,
        **stats.model_dump(mode="json", exclude_none=True),
        "numFeatures": int(np.prod(described.shape)),
        "label": label,
        "classes": class_names,
    }
    report["images"] = {
        **report.get("images", {}),
        "sizesSeen": dict(_largest(dict(described.merged["sizes"]), 1000)),
        "normalization": {"method": method, "mean": mean, "std": std},
        "augment": image.augment.model_dump(mode="json"),
    }
    return PreparedData(
        train=train_xy,
        validation=val_xy,
        stats=stats,
        report=report,
        features=FeaturePlan([], label),
        num_features=int(np.prod(described.shape)),
        class_names=class_names,
        label_dtype="int64" if label else None,
        likelihood="bernoulli" if method == "none" else "gaussian",
        preprocessor=None,
        label_encoder=indices,
        size_bytes=int(train_xy.size_bytes() + val_xy.size_bytes()),
        sample_shape=described.shape,
        input_transform=transform,
    )


def _largest(counts: dict[str, int], keep: int) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]


def _stats(decoded: Decoded, described: Described, train_rows: int, val_rows: int) -> DataStats:
    merged = described.merged
    channels = described.shape[0]
    means, _ = images.channel_moments(merged, channels)
    classes: dict[str, int] = {}
    if described.label_stats:
        values = next(iter(described.label_stats.values())).get("values", {})
        classes = dict(_largest(values, MAX_STATUS_CLASSES))
    return DataStats(
        rowsRead=decoded.rows_read,
        rowsAfterCleaning=decoded.rows_after,
        droppedByRule=decoded.dropped,
        trainRows=train_rows,
        validationRows=val_rows,
        classCounts=classes or None,
        images=ImageStats(
            shape=described.shape,
            sizesSeen=[SizeCount(size=s, count=n)
                       for s, n in _largest(dict(merged["sizes"]), MAX_STATUS_SIZES)],
            distinctSizes=len(merged["sizes"]),
            channelMeans=[round(m, 4) for m in means],
            undecodable=decoded.counts.get(images.UNDECODABLE, 0),
            missing=decoded.counts.get(images.MISSING, 0),
            badFiles=decoded.bad_files,
        ),
    )  # fmt: skip
