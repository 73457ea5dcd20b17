"""The manifest of everything the host layer created: the only list `emunet down` acts on.

emunet never sweeps the machine by name (Mininet's `clean.py` is the counter-example, see
DESIGN.md section 5): it removes exactly what this file says it made. So the manifest is written
*ahead* of each creation (record, then create) and atomically (temp file, rename), and a
build that crashes half-way can still be cleaned up completely.

Entries, in creation order:
  {"kind": "netns", "name": ...}                       a named network namespace
  {"kind": "dir", "path": ..., "if_empty": bool}       a directory (e.g. /etc/netns/<netns>);
                                                       if_empty: remove only when empty (a
                                                       shared parent we happened to create)
  {"kind": "process", "pid": ..., "start_time": ...,   a process started for the cluster; the
   "role": ..., "netns": ...}                          start time (proc(5) field 22) proves a
                                                       pid was not recycled before it is killed
Pure apart from reading /proc and writing the file itself; no root needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emunet.errors import EmunetError

VERSION = 1


class HostError(EmunetError):
    """A host operation failed; the message is for users (what failed, and how to fix it)."""


def process_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (proc(5) /proc/<pid>/stat field 22).

    None if there is no such process, or it is a zombie (it has already exited).
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 2 (comm) is in parentheses and may itself contain spaces or ')': split after the
    # last ')'. What follows starts at field 3 (state); field 22 is at index 22 - 3 = 19.
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _key(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True)


class Manifest:
    """A JSON list of created objects, saved after every change (or once per `deferred`
    block). Thread-safe.

    In memory the entries are a dict keyed by their JSON text (insertion-ordered), so recording
    and discarding are O(1): a 2,000-pod cluster has ~6,000 entries, and a list scan plus a
    whole-file rewrite per entry made `up` and `down` quadratic (a third of `up` at 500 pods).
    """

    def __init__(self, path: Path, entries: list[dict[str, Any]]) -> None:
        self.path = path
        self._entries = {_key(e): e for e in entries}
        self._lock = threading.RLock()
        self._defer = 0  # > 0: inside `deferred`, saves wait for its end
        self._dirty = False

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Manifest:
        """Load the manifest at `path`, or start an empty one (written on the first change)."""
        p = Path(path)
        try:
            text = p.read_text()
        except FileNotFoundError:
            return cls(p, [])
        try:
            data = json.loads(text)
            entries = data["entries"]
            if data.get("version") != VERSION or not isinstance(entries, list):
                raise ValueError(f"unsupported manifest version {data.get('version')!r}")
        except (ValueError, KeyError, TypeError) as e:
            raise HostError(f"the manifest {p} is damaged ({e}); it lists what emunet created, "
                            "so inspect it before removing it") from e
        return cls(p, entries)

    # ---- reading -----------------------------------------------------------------------------

    @property
    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._entries.values()]

    def netns(self) -> list[str]:
        return [e["name"] for e in self.entries if e["kind"] == "netns"]

    def dirs(self) -> list[str]:
        return [e["path"] for e in self.entries if e["kind"] == "dir"]

    def processes(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["kind"] == "process"]

    def has(self, entry: dict[str, Any]) -> bool:
        with self._lock:
            return _key(entry) in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    # ---- recording (each call saves) ---------------------------------------------------------

    def add_netns(self, name: str) -> None:
        self._add({"kind": "netns", "name": name})

    def add_dir(self, path: str | os.PathLike[str], if_empty: bool = False) -> None:
        self._add({"kind": "dir", "path": str(path), "if_empty": if_empty})

    def add_process(self, pid: int, role: str, netns: str | None = None) -> None:
        """Record a process the cluster started (`netns`: the namespace it serves, if any)."""
        start = process_start_time(pid)
        if start is None:
            raise HostError(f"process {pid} ({role}) is not running, so it cannot be recorded")
        self._add({"kind": "process", "pid": pid, "start_time": start, "role": role,
                   "netns": netns})

    def discard(self, entry: dict[str, Any]) -> None:
        """Forget one entry (after its object was removed); unknown entries are ignored."""
        with self._lock:
            if self._entries.pop(_key(entry), None) is not None:
                self._changed()

    def record_ahead(self, entries: list[dict[str, Any]]) -> None:
        """Record many entries with one save, before their objects are made (write-ahead for
        a whole batch: `up` lists every pod's namespace and directory, then builds them).
        Removing an object that was listed but never made is a no-op, so a crash between the
        two still leaves a manifest `down` can act on."""
        with self._lock:
            for e in entries:
                self._entries.setdefault(_key(e), e)
            self._changed()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Changes inside are saved once, at the end. Only for removals (a teardown): an entry
        kept a little longer than its object is harmless (removal is idempotent), while an
        object made before its entry is saved could be leaked by a crash."""
        with self._lock:
            self._defer += 1
        try:
            yield
        finally:
            with self._lock:
                self._defer -= 1
                if not self._defer and self._dirty:
                    self.save()

    def _changed(self) -> None:
        if self._defer:
            self._dirty = True
        else:
            self.save()

    def _add(self, entry: dict[str, Any]) -> None:
        with self._lock:
            k = _key(entry)
            if k not in self._entries:
                self._entries[k] = entry
                self.save()  # write-ahead: never deferred

    def save(self) -> None:
        """Write atomically: a reader (or a crash) sees the old file or the new, never half."""
        with self._lock:
            self._dirty = False
            data = json.dumps({"version": VERSION, "entries": list(self._entries.values())},
                              indent=1)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp",
                                       dir=self.path.parent)
            try:
                # No fsync: what the file lists (namespaces, mounts, processes) does not survive
                # a reboot either; the rename alone makes a process crash see old or new.
                with os.fdopen(fd, "w") as f:
                    f.write(data + "\n")
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise
