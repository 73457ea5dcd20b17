"""The state's one error: a request the cluster cannot satisfy (exit 2)."""

from __future__ import annotations

from emunet.errors import InputError


class StateError(InputError):
    """A request the cluster cannot satisfy (address space exhausted, name taken, ...): exit 2."""
