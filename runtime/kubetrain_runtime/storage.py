"""Outputs and checkpoints live under one root URI: a local or PVC path, or any fsspec URI
(s3://, gs://, ...). Everything the runtime writes goes through ``Store`` so that a
bucket works wherever a folder does."""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from kubetrain.api.v1alpha1 import is_object_store


def normalize_uri(uri: str, base: Path | None = None) -> str:
    """Local paths become absolute (relative ones against ``base``, default the current
    directory); URIs with a scheme are kept as they are."""
    if is_object_store(uri):
        return uri.rstrip("/")
    path = Path(uri.removeprefix("file://")).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return str(path.resolve())


class Store:
    def __init__(self, uri: str) -> None:
        self.uri = normalize_uri(uri)
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def uri_of(self, *parts: str) -> str:
        return posixpath.join(self.uri, *parts)

    def write_bytes(self, rel: str, data: bytes) -> str:
        target = self.path(rel)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        with self.fs.open(target, "wb") as handle:
            handle.write(data)
        return self.uri_of(rel)

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode())

    def write_json(self, rel: str, value: Any) -> str:
        return self.write_text(
            rel, json.dumps(value, indent=2, sort_keys=False, default=str) + "\n"
        )

    def read_text(self, rel: str) -> str:
        with self.fs.open(self.path(rel), "rb") as handle:
            return handle.read().decode()

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.path(rel)))

    def remove(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.rm(self.path(rel), recursive=True)

    def children(self, rel: str) -> list[str]:
        """Names directly under ``rel`` (empty when it does not exist)."""
        if not self.exists(rel):
            return []
        return sorted(
            posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.path(rel), detail=False)
        )

    def ray_storage(self, rel: str) -> tuple[str, Any]:
        """``(storage_path, storage_filesystem)`` for Ray Train's RunConfig."""
        if self.is_local:
            return self.path(rel), None
        import pyarrow.fs

        handler = pyarrow.fs.FSSpecHandler(self.fs)
        return self.path(rel), pyarrow.fs.PyFileSystem(handler)
