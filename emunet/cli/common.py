"""What every verb group shares: the CLI's error, the root check, and the running cluster's state.

Errors are `emunet.errors` classes: `CLIError` is a failure (exit 1) unless given `code=2` for
bad input; `cli.main` prints them all the same way.
"""

from __future__ import annotations

import os

from emunet.errors import EmunetError
from emunet.state import store
from emunet.state.cluster import ClusterState


class CLIError(EmunetError):
    """A verb cannot do what was asked (exit 1; `code=2` when the arguments were wrong)."""


def need_root(why: str = "this command builds network namespaces and needs root") -> None:
    if os.geteuid() != 0:
        raise CLIError(f"{why}: run it with sudo")


def load_state() -> ClusterState:
    """The running cluster's state (exit 1 with "no cluster is up" when there is none)."""
    return store.read()
