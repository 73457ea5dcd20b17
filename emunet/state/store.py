"""The state file of the running cluster (`<run dir>/state.json`): its path, reading it with the
one "no cluster is up" message, and writing it atomically (temp file + rename, root-only), so a
reader sees the old state or the new one, never half of one; and the stamp of the file a
reader loaded (`read_stamped`, `stamp`), so a long-running reader can tell that a newer state
was published even when its SIGHUP was lost (a signal can be: the supervisor's children start
with SIGHUP ignored, and a signal is not queued), and reload."""

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


# (inode, mtime ns, size) of one published file: every publish renames a new file into place,
# so the inode changes; mtime and size also tell apart a recycled inode number.
Stamp = tuple[int, int, int]


def _stamp(st: os.stat_result) -> Stamp:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def stamp(at: Path) -> Stamp | None:
    """The stamp of the state file now published at `at` (None if there is none)."""
    try:
        return _stamp(os.stat(at))
    except OSError:
        return None


def read_stamped(at: Path) -> tuple[ClusterState, Stamp]:
    """The state at `at` and the stamp of exactly the file it was read from (fstat of the open
    file: a publish between the read and a separate stat cannot be mistaken for this one)."""
    with open(at, "rb") as f:
        st = os.fstat(f.fileno())
        text = f.read().decode()
    return codec.from_json(text), _stamp(st)


def write(state: ClusterState, at: Path | None = None) -> None:
    p = at or path()
    tmp = p.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(codec.to_json(state))
    os.replace(tmp, p)
