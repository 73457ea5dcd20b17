"""Processes a restarted supervisor adopts: ones a dead supervisor started, found again by the
pid and start time the manifest recorded, and supervised by polling since they are not ours to
wait() on.

`Adopted` quacks like the part of `subprocess.Popen` the supervisor uses (pid, poll, wait,
send_signal, terminate, kill, returncode), so an adopted agent or container sits where a Popen
did. Its exit status is unknown (another process reaps it: init, or the watchdog as
subreaper); it reads as SIGKILL, the 137 the kubelet reports for a container whose status was
lost (reason ContainerStatusUnknown). A pid is the recorded process only while its start time
(proc(5) stat field 22) matches, so a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import Any

from emunet.host.manifest import process_start_time

LOST = -signal.SIGKILL  # the returncode of an adopted process once it is gone


class Adopted:
    """A live process recorded in the manifest, supervised by pid and start time."""

    def __init__(self, pid: int, start_time: int, role: str = "") -> None:
        self.pid, self.start_time, self.role = pid, start_time, role
        self.returncode: int | None = None
        self.args = [role]

    def poll(self) -> int | None:
        if self.returncode is None and process_start_time(self.pid) != self.start_time:
            self.returncode = LOST  # gone, a zombie, or the pid now someone else's
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.role, timeout or 0.0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __repr__(self) -> str:
        return f"Adopted(pid={self.pid}, role={self.role!r})"


def find(processes: list[dict[str, Any]], role: str,
         start_time=process_start_time) -> Adopted | None:
    """The newest recorded process with `role` that still runs as recorded, adopted; None if
    none does (it died with or after the supervisor: start it again)."""
    for e in reversed(processes):
        if e.get("role") == role and start_time(e["pid"]) == e.get("start_time"):
            return Adopted(e["pid"], e["start_time"], role)
    return None
