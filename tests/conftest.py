"""What every test may ask for: the `root` marker, which skips a test when pytest does not run
as root.

Each directory's conftest.py marks its tests with what they need (tests/unit: `unit`;
tests/integration: `integration` and `root`; tests/e2e: `e2e` and `root`); a test elsewhere
that needs root says so with `@pytest.mark.root`. `pytest -m unit` runs the fast root-free
tests, `scripts/test` (root) runs them all.
"""

from __future__ import annotations

import os

import pytest

# Helper modules assert too (pipeline_pair.open_connection, Cluster.down_clean, ...): have
# pytest rewrite them as it does test modules, so a failing helper shows its values. Runs
# before any of them is imported.
pytest.register_assert_rewrite("tests.unit", "tests.integration", "tests.e2e",
                               "tests.badconfigs", "tests.waiting")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces): run pytest with sudo")
    for item in items:
        if item.get_closest_marker("root") is not None:
            item.add_marker(skip)


# Still imported by the e2e modules until they take a cluster from one factory (next change).
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (network namespaces)")


def unique_prefix(tag: str = "emt") -> str:
    """Short, unique per test process: keeps our namespaces apart from a user's cluster."""
    return f"{tag}{os.getpid() % 100000}"
