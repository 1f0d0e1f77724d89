"""Read the spec's source into a Ray Dataset.

Bundled and generated data are built in memory (``sources.py``) and handed to Ray Data;
files are read by Ray Data itself, locally or through fsspec. A path that does not exist
is a DataError naming it: in a cluster that line becomes the job's ``status.message``.
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray.data
from fsspec.implementations.local import LocalFileSystem

from kubetrain.api.v1alpha1 import DataSpec, UriSource
from kubetrain.errors import DataError
from kubetrain_runtime.data import sources
from kubetrain_runtime.storage import bucket_problem, explain_storage_error, open_location

#: Rows per block for in-memory sources, so that later steps have blocks to spread.
ROWS_PER_BLOCK = 200_000
#: A CSV directory is read for these endings only (Ray reads every file otherwise, and a
#: _SUCCESS marker or a README would fail the job).
CSV_ENDINGS = ["csv", "csv.gz", "csv.bz2", "csv.zst", "csv.lz4", "csv.br"]
_FIELD = "spec.data.source.uri.path"


@dataclass
class Source:
    ds: ray.data.Dataset
    description: str
    class_names: list[str] | None = None
    #: The label of bundled and generated data, also excluded from a VAE's features.
    default_label: str | None = None


def _from_frame(df: pd.DataFrame) -> ray.data.Dataset:
    chunks = max(1, -(-len(df) // ROWS_PER_BLOCK))
    if chunks == 1:
        return ray.data.from_pandas(df)
    return ray.data.from_pandas([df.iloc[i::chunks].reset_index(drop=True) for i in range(chunks)])


def resolve_path(path: str, manifest_dir: Path) -> str:
    """Relative local paths are relative to the manifest's folder (the job's working
    directory in a cluster); URIs are kept."""
    if "://" in path and not path.startswith("file://"):
        return path
    local = Path(path.removeprefix("file://")).expanduser()
    return str(local if local.is_absolute() else (manifest_dir / local).resolve())


def _open_fs(uri: str) -> tuple[Any, str]:
    try:
        return open_location(uri)
    except (ImportError, ValueError) as exc:
        raise DataError(f"cannot open this location: {exc}", field=uri) from None


def _check_exists(fs: Any, path: str, shown: str) -> None:
    problem = None if isinstance(fs, LocalFileSystem) else bucket_problem(fs, path)
    if problem:
        raise DataError(f"cannot read it ({_FIELD}): {problem}", field=shown)
    try:
        found = fs.exists(path)
    except Exception as exc:  # credentials, network: the user's to fix, in one line
        reason = explain_storage_error(fs, path, exc)
        raise DataError(f"cannot read it ({_FIELD}): {reason}", field=shown) from None
    if not found:
        raise DataError(f"no such file or directory ({_FIELD})", field=shown)


def _npz_frame(fs: Any, path: str, shown: str) -> pd.DataFrame:
    with fs.open(path, "rb") as handle:
        arrays = np.load(io.BytesIO(handle.read()))
    if "x" not in arrays:
        raise DataError(
            f"an .npz source needs an array named x (found {sorted(arrays)})", field=shown
        )
    x = arrays["x"].reshape(len(arrays["x"]), -1)
    df = pd.DataFrame(x, columns=[f"x_{i}" for i in range(x.shape[1])])
    if "y" in arrays:
        df["y"] = arrays["y"].reshape(len(df), -1)[:, 0]
    return df


def _expand_numpy(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    data = batch["data"]
    data = data.reshape(len(data), -1)
    return {f"x_{i}": data[:, i] for i in range(data.shape[1])}


def check_uri(uri: UriSource, manifest_dir: Path) -> tuple[Any, str, str]:
    """The source's filesystem, path and user-facing location; a DataError naming the
    location when it does not exist."""
    location = resolve_path(uri.path, manifest_dir)
    fs, path = _open_fs(location)
    _check_exists(fs, path, location)
    return fs, path, location


def arrow_filesystem(fs: Any) -> Any:
    """What Ray Data's readers take for an fsspec filesystem (None: its own local one)."""
    if isinstance(fs, LocalFileSystem):
        return None
    import pyarrow.fs

    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def read_uri(uri: UriSource, manifest_dir: Path) -> Source:
    fs, path, location = check_uri(uri, manifest_dir)
    local = isinstance(fs, LocalFileSystem)
    filesystem = arrow_filesystem(fs)
    target = path if not local else location
    try:
        if uri.format == "csv":
            import pyarrow.csv

            ds = ray.data.read_csv(
                target,
                filesystem=filesystem,
                file_extensions=CSV_ENDINGS if fs.isdir(path) else None,
                # Empty cells are null in every column, text ones included.
                convert_options=pyarrow.csv.ConvertOptions(strings_can_be_null=True),
            )
        elif uri.format == "parquet":
            ds = ray.data.read_parquet(target, filesystem=filesystem)
        elif uri.format == "jsonl":
            ds = ray.data.read_json(target, filesystem=filesystem, lines=True)
        elif posixpath.splitext(path)[1] == ".npz":
            ds = _from_frame(_npz_frame(fs, path, location))
        else:
            ds = ray.data.read_numpy(target, filesystem=filesystem).map_batches(
                _expand_numpy, batch_format="numpy"
            )
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read as {uri.format}: {exc}", field=location) from None
    return Source(ds, location)


def read_source(spec: DataSpec, task: str, manifest_dir: Path) -> Source:
    source = spec.source
    if source.builtin is not None:
        frame = sources.builtin_frame(source.builtin.name)
        return Source(
            _from_frame(frame.df),
            f"builtin {source.builtin.name}",
            frame.class_names,
            sources.TARGET,
        )
    if source.generated is not None:
        frame = sources.sine_frame(source.generated, task)
        return Source(_from_frame(frame.df), "generated sine", frame.class_names, sources.TARGET)
    assert source.uri is not None
    return read_uri(source.uri, manifest_dir)
