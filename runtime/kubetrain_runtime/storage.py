"""Outputs and checkpoints live under one root URI: a local or PVC path, or any fsspec URI
(s3://, gs://, ...). Everything the runtime writes goes through ``Store`` so that a
bucket works wherever a folder does."""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from kubetrain.api.v1alpha1 import StorageSpec, is_object_store


def normalize_uri(uri: str, base: Path | None = None) -> str:
    """Local paths become absolute (relative ones against ``base``, default the current
    directory); URIs with a scheme are kept as they are."""
    if is_object_store(uri):
        return uri.rstrip("/")
    path = Path(uri.removeprefix("file://")).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return str(path.resolve())


#: What an object store's errors mean, by a fragment of their text (S3's error codes and
#: messages, as botocore and s3fs pass them on), in the order they are tried.
_CAUSES = (
    (("NoSuchBucket", "bucket does not exist"), "the bucket does not exist"),
    (("SignatureDoesNotMatch", "signature we calculated does not match"),
     "the credentials are wrong: the secret key does not match the access key"),
    (("InvalidAccessKeyId", "access key id you provided does not exist"),
     "the access key is unknown to the object store"),
    (("AccessDenied", "access denied"),
     "access denied: these credentials may not use this bucket"),
    (("NoCredentialsError", "unable to locate credentials"),
     "no credentials: set spec.storage.secretName (in a cluster), or AWS_ACCESS_KEY_ID and "
     "AWS_SECRET_ACCESS_KEY"),
    (("EndpointConnectionError", "Cannot connect to host", "Could not connect"),
     "cannot connect to the object store (spec.storage.endpoint)"),
)  # fmt: skip


def storage_cause(exc: BaseException) -> str | None:
    """The plain meaning of an object store's error, or None when it is not one we know."""
    text = f"{type(exc).__name__}: {exc}".lower()
    for fragments, meaning in _CAUSES:
        if any(f.lower() in text for f in fragments):
            return meaning
    return None


def explain_storage_error(fs: Any, path: str, exc: BaseException) -> str:
    """One line on why ``path`` cannot be reached. A refused HEAD request says only
    "Forbidden": listing the bucket gets the store's own reason."""
    cause = storage_cause(exc)
    if cause is None and isinstance(exc, PermissionError):
        cause = bucket_problem(fs, path)
    return cause or f"{type(exc).__name__}: {exc}"


#: Variables every AWS SDK (and s3fs) reads; a local run hands them to its Ray workers.
STORAGE_ENV_PREFIXES = ("AWS_",)


def use_storage_settings(storage: StorageSpec) -> None:
    """The spec's endpoint and region, for this process's filesystems (in a cluster the
    operator has put them in the pod's environment already; a variable set wins)."""
    if storage.endpoint:
        os.environ.setdefault("AWS_ENDPOINT_URL", storage.endpoint)
    if storage.region:
        os.environ.setdefault("AWS_REGION", storage.region)
        os.environ.setdefault("AWS_DEFAULT_REGION", storage.region)


def storage_env() -> dict[str, str]:
    """This process's object-store settings and credentials, for Ray's ``runtime_env``: a
    kept local Ray's workers started before this run and do not have them otherwise."""
    return {k: v for k, v in os.environ.items() if k.startswith(STORAGE_ENV_PREFIXES)}


def bucket_problem(fs: Any, path: str) -> str | None:
    """Why the bucket of ``path`` cannot be used, or None when it can: one listing of at
    most one key, whose error (unlike a HEAD request's bare 403) names the cause. A store
    that is not S3 is asked whether the bucket exists."""
    bucket = path.split("/", 1)[0]
    try:
        if hasattr(fs, "_call_s3"):
            from fsspec.asyn import sync

            sync(fs.loop, fs._call_s3, "list_objects_v2", Bucket=bucket, MaxKeys=1)
        elif not fs.exists(bucket):
            return "the bucket does not exist"
    except Exception as exc:
        return storage_cause(exc) or f"{type(exc).__name__}: {exc}"
    return None


def check_writable(store: Store, field: str) -> None:
    """Write and remove a small marker, so that a bucket that is missing or read-only ends
    the job before any work, naming the location and the cause."""
    marker = ".kubetrain-write-check"
    from kubetrain.errors import DataError

    problem = None if store.is_local else bucket_problem(store.fs, store.root)
    if problem:
        raise DataError(f"cannot write the outputs here ({field}): {problem}", field=store.uri)
    try:
        store.write_bytes(marker, b"")
        store.fs.rm(store.path(marker))
    except Exception as exc:
        reason = explain_storage_error(store.fs, store.root, exc)
        raise DataError(f"cannot write the outputs here ({field}): {reason}",
                        field=store.uri) from None  # fmt: skip


def open_location(uri: str) -> tuple[Any, str]:
    """The filesystem and path of a local path or fsspec URI. An object store's listings
    are never cached: Ray Train, other workers and other attempts write checkpoints beside
    this process, and a cached listing would hide them (s3fs keeps one per folder)."""
    if is_object_store(uri):
        return fsspec.core.url_to_fs(uri, use_listings_cache=False)
    return fsspec.core.url_to_fs(uri)


class Store:
    def __init__(self, uri: str) -> None:
        self.uri = normalize_uri(uri)
        self.fs, self.root = open_location(self.uri)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def uri_of(self, *parts: str) -> str:
        return posixpath.join(self.uri, *parts)

    def write_bytes(self, rel: str, data: bytes) -> str:
        target = self.path(rel)
        if self.is_local:  # an object store has no folders (and s3fs would make a bucket)
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
