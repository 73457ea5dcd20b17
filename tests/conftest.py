"""What every test may ask for: a unique prefix for the kernel objects it makes, and the
`root` marker, which skips a test when pytest does not run as root.

Each directory's conftest.py marks its tests with what they need (tests/unit: `unit`;
tests/integration: `integration` and `root`; tests/e2e: `e2e` and `root`); a test elsewhere
that needs root says so with `@pytest.mark.root`. `pytest -m unit` runs the fast root-free
tests, `scripts/test` (root) runs them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable

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


@pytest.fixture(scope="session")
def unique_prefix() -> Callable[[str], str]:
    """`unique_prefix(tag)`: a short name prefix, unique per test process, for everything a
    test creates (namespaces, /etc/netns entries, links), so a user's cluster is never
    touched and two test runs never meet."""
    return lambda tag="emt": f"{tag}{os.getpid() % 100000}"
