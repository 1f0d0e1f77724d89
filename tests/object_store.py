"""A real S3 server for the runtime and e2e tiers (``tests/conftest.py`` imports these
fixtures): versitygw from ``e2e/objectstore.py``, one per session, listening on every
address so that pods on the real node reach it too.

``object_store`` is the running server; ``s3`` a client with the root's credentials (an
s3fs filesystem); ``bucket`` a fresh, empty bucket per test; ``s3_env`` the variables a
``kubetrain run`` needs to use it (endpoint and root credentials).
"""

from __future__ import annotations

import importlib.util
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load_objectstore() -> ModuleType:
    """Import e2e/objectstore.py (stdlib only, not a package) as a module."""
    name = "kubetrain_e2e_objectstore"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "e2e" / "objectstore.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


objectstore = _load_objectstore()


def s3_filesystem(endpoint: str, key: str, secret: str) -> Any:
    """An s3fs client of its own (never fsspec's cached instance, which would keep another
    test's credentials)."""
    import s3fs

    return s3fs.S3FileSystem(
        key=key,
        secret=secret,
        client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"},
        skip_instance_cache=True,
    )


def env_for(store: Any, key: str | None = None, secret: str | None = None) -> dict[str, str]:
    """What a process needs to use the store: endpoint, region and credentials."""
    return {
        "AWS_ENDPOINT_URL": store.endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": key or store.access_key,
        "AWS_SECRET_ACCESS_KEY": secret or store.secret_key,
    }


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    store = objectstore.ObjectStore.start(tmp_path_factory.mktemp("s3"), host="0.0.0.0")
    try:
        yield store
    finally:
        store.remove()


@pytest.fixture(scope="session")
def s3(object_store: Any) -> Any:
    return s3_filesystem(object_store.endpoint, object_store.access_key, object_store.secret_key)


@pytest.fixture
def bucket(object_store: Any) -> str:
    name = f"kt-{secrets.token_hex(4)}"
    object_store.create_bucket(name)
    return name


@pytest.fixture
def s3_env(object_store: Any) -> dict[str, str]:
    return env_for(object_store)
