"""End-to-end tests run the real CLI on real namespaces: each is marked `e2e` and `root`
(skipped without root, see tests/conftest.py)."""

from __future__ import annotations

import pytest


def pytest_itemcollected(item: pytest.Item) -> None:
    item.add_marker(pytest.mark.e2e)
    item.add_marker(pytest.mark.root)
