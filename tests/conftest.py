"""Tier markers follow the folder, so ``pytest -m unit`` is always the fast subset even
when a test module forgets its ``pytestmark``."""

from __future__ import annotations

from pathlib import Path

import pytest

TIERS = ("unit", "runtime", "cluster", "e2e")
TESTS_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            tier = Path(item.path).relative_to(TESTS_DIR).parts[0]
        except ValueError:
            continue
        if tier in TIERS and item.get_closest_marker(tier) is None:
            item.add_marker(getattr(pytest.mark, tier))


# One control plane per session for the cluster and e2e tiers: defined once, here, so that
# both tiers get the same session fixtures (a fixture defined in two conftests runs twice).
from kube_session import *  # noqa: E402, F403
from kube_session import pytest_collection_finish  # noqa: E402, F401
from object_store import bucket, object_store, s3, s3_env  # noqa: E402, F401
