"""Unit tests need nothing: no root, no namespaces. Each is marked `unit`.

Shared builders are plain helper modules of this package (pipeline_pair, netpol_cluster,
observed_pair, dns_cluster, dns_loopback), imported by their full name.
"""

from __future__ import annotations

import pytest


def pytest_itemcollected(item: pytest.Item) -> None:
    item.add_marker(pytest.mark.unit)
