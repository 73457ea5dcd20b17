"""Ending the processes a manifest records: by pid, start time and process group, never by name.

A recorded process is ours only while its start time (proc(5) stat field 22) matches, so a
recycled pid is never signalled; its process group holds what it forked (a container's shell
and its children), which goes too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

TERM_GRACE = 1.0  # seconds between SIGTERM and SIGKILL


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (process group, start time) of every live process (proc(5) stat fields 5, 22)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            raw = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()  # from field 3 (state) on
        if fields[0] not in ("Z", "X"):
            out[int(d)] = (int(fields[2]), int(fields[19]))
    return out


def _ours(procs: list[dict]) -> list[int]:
    """The live pids of recorded processes and of their process groups.

    Every recorded process was started in its own session (start_new_session), so its group
    holds what it forked too (a container's shell and its children) even after the leader was
    SIGKILLed. A group is ours only if its leader still has the recorded start time, or the
    leader is gone (Linux never reuses a pid while a group of that id exists) and members
    started after it; a recycled leader pid belongs to someone else and is left alone.
    """
    table = _proc_table()
    out: set[int] = set()
    for e in procs:
        pid, start = e["pid"], e["start_time"]
        leader = table.get(pid)
        if leader is not None and leader[1] != start:
            continue
        out.update(p for p, (pgid, st) in table.items()
                   if p == pid or (pgid == pid and st >= start))
    return sorted(out)


def end_recorded(procs: list[dict]) -> None:
    """SIGTERM, a short grace, SIGKILL: recorded processes and their groups (see `_ours`)."""
    def signal_all(sig: int, pids: list[int]) -> None:
        # A zombie reads as gone (_proc_table); reaping is its parent's job (a Popen object
        # would misreport its exit status if we reaped it here).
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    if not procs:
        return
    signal_all(signal.SIGTERM, _ours(procs))
    deadline = time.monotonic() + TERM_GRACE
    while (left := _ours(procs)) and time.monotonic() < deadline:
        time.sleep(0.02)
    signal_all(signal.SIGKILL, left)
    for _ in range(100):  # SIGKILL is not instant; removing a netns still in use would leak it
        if not _ours(procs):
            break
        time.sleep(0.01)
