"""The state file of the running cluster (`<run dir>/state.json`): its path, reading it with the
one "no cluster is up" message, and writing it atomically (temp file + rename, root-only), so a
reader sees the old state or the new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path

from emunet import naming
from emunet.errors import EmunetError
from emunet.state import codec
from emunet.state.cluster import ClusterState

FILE_NAME = "state.json"
NOT_UP = "no cluster is up: start one with `sudo emunet up FILE`"


class NotUpError(EmunetError):
    """No state file: no cluster is up (exit 1, as `kubectl` with no server)."""


def path() -> Path:
    return naming.run_dir() / FILE_NAME


def read(at: Path | None = None) -> ClusterState:
    """The state as the supervisor last published it (raises NotUpError without one)."""
    p = at or path()
    try:
        return codec.from_json(p.read_text())
    except FileNotFoundError:
        raise NotUpError(NOT_UP) from None
    except PermissionError:
        raise EmunetError(f"cannot read {p}: run with sudo") from None


def write(state: ClusterState, at: Path | None = None) -> None:
    p = at or path()
    tmp = p.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(codec.to_json(state))
    os.replace(tmp, p)
