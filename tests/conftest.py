"""Shared test helpers: root detection and a unique prefix for everything a test creates."""

from __future__ import annotations

import os

import pytest

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (network namespaces)")


def unique_prefix(tag: str = "emt") -> str:
    """Short, unique per test process: keeps our namespaces apart from a user's cluster."""
    return f"{tag}{os.getpid() % 100000}"
