"""The state file of the running cluster (`<run dir>/state.json`): its path, reading it with the
one "no cluster is up" message, and writing it atomically (temp file + rename, root-only), so a
reader sees the old state or the new one, never half of one; and the stamp of the file a
reader loaded (`read_stamped`, `stamp`), so a long-running reader can tell that a newer state
was published even when its SIGHUP was lost (a signal can be: the supervisor's children start
with SIGHUP ignored, and a signal is not queued), and reload."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from emunet import naming
from emunet.errors import EmunetError
from emunet.model import ClusterSpec
from emunet.state import codec, delta
from emunet.state.cluster import ClusterState

FILE_NAME = "state.json"
DELTA_NAME = "delta.json"  # the last publish's change (Publisher, emunet.state.follow)
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


def read_cluster(at: Path | None = None) -> ClusterSpec:
    """Only the Cluster document of the published state (what `apply` validates a file
    against): the JSON is parsed, but no pod or Service decoded (0.05 s at 2,000 pods)."""
    p = at or path()
    try:
        return codec.cluster_from_json(p.read_text())
    except FileNotFoundError:
        raise NotUpError(NOT_UP) from None
    except PermissionError:
        raise EmunetError(f"cannot read {p}: run with sudo") from None


# (inode, mtime ns, size) of one published file: every publish renames a new file into place,
# so the inode changes; mtime and size also tell apart a recycled inode number.
Stamp = tuple[int, int, int]


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


_stamp = stamp_of


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


def delta_path(state_at: Path) -> Path:
    """Where the delta published with the state file `state_at` lives (emunet.state.follow)."""
    return state_at.with_name(DELTA_NAME)


def _replace(p: Path, text: str) -> None:
    tmp = p.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, p)


def write(state: ClusterState, at: Path | None = None) -> None:
    """Write the whole state with no delta: any delta published before is removed first, so
    no reader applies it to this state (they read this file whole: emunet.state.follow)."""
    p = at or path()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(delta_path(p))
    _replace(p, codec.to_json(state))


class Publisher:
    """The supervisor's publishes: the whole state, then the delta from the state it published
    before (emunet.state.delta), so a reader at the previous generation decodes only what
    changed. The first publish (nothing published by this process yet) writes a delta with
    no base: every reader reads that state whole."""

    def __init__(self, at: Path | None = None) -> None:
        self.at = at or path()
        self.last: dict | None = None  # to_dict of the state published last
        self.memo: codec.PodMemo = {}  # pod specs' dicts, shared from publish to publish

    def publish(self, state: ClusterState) -> dict:
        """Write `state` and its delta; returns the delta."""
        d = codec.to_dict(state, self.memo)
        _replace(self.at, codec.dumps(d))
        out = {"base": None, "generation": d["generation"], "sections": {}}
        if self.last is not None:
            try:
                out = {**out, "base": self.last["generation"], **delta.diff(self.last, d)}
            except delta.DeltaError:
                pass  # a section delta.py does not know (a test fails for it): read whole
        _replace(delta_path(self.at), json.dumps(out, separators=(",", ":")))
        self.last = d
        return out
