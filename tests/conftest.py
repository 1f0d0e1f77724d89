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
