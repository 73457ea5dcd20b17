"""End-to-end tests run the real CLI on real namespaces: each is marked `e2e` and `root`
(skipped without root, see tests/conftest.py), and takes its clusters from one factory.

`module_clusters` (one set per test module, as most modules share one cluster) and `clusters`
(per test) are `ClusterFactory`s (tests/e2e/cluster.py): `module_clusters(CONFIG, "tag")`
brings a cluster up under a prefix unique to this run, and teardown runs
`Cluster.down_clean()` on each: `emunet down`, then no namespace, /etc/netns entry or run dir
of it may be left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.e2e.cluster import ClusterFactory


def pytest_itemcollected(item: pytest.Item) -> None:
    item.add_marker(pytest.mark.e2e)
    item.add_marker(pytest.mark.root)


@pytest.fixture(scope="module")
def module_clusters(unique_prefix: Callable[[str], str]) -> Iterator[ClusterFactory]:
    """Clusters shared by the tests of one module, down and checked clean after the last."""
    make = ClusterFactory(unique_prefix)
    yield make
    make.teardown()


@pytest.fixture
def clusters(unique_prefix: Callable[[str], str]) -> Iterator[ClusterFactory]:
    """Clusters of one test (lifecycle faults, one per lab), down and checked clean after it."""
    make = ClusterFactory(unique_prefix)
    yield make
    make.teardown()
