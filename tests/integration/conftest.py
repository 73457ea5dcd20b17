"""Integration tests build real namespaces, veths and agents: each is marked `integration`
and `root` (skipped without root, see tests/conftest.py)."""

from __future__ import annotations

import pytest


def pytest_itemcollected(item: pytest.Item) -> None:
    item.add_marker(pytest.mark.integration)
    item.add_marker(pytest.mark.root)
