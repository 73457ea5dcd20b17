"""One container process of a pod, as the workloads supervise it: its current run, the run that
ended last, whether it is done for good, its held stdio, and the runtime status the supervisor
publishes for it (emunet.state.podphase's shape); and how a container process is ended.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass

from emunet.cluster import stdio
from emunet.host import sandbox
from emunet.model import Container

# A container with held stdio (stdin/tty: `kubectl run -i`) is reported running this long after
# its start, as a kubelet reports it at its next PLEG relist (every second), not at once: a
# short command (nslookup) is then usually over before kubectl sees the pod Running, and
# kubectl prints its logs, as on a real cluster, instead of attaching after the output went by.
REPORT_DELAY = 0.5
TERM_WAIT = 2.0  # seconds from SIGTERM to SIGKILL when no grace period is asked for


@dataclass
class ContainerProc:
    container: Container
    popen: subprocess.Popen | None = None
    restarts: int = 0
    backoff: float = 0.0
    next_start: float = 0.0
    started_at: float = 0.0
    last: dict | None = None  # the run that ended last: exitCode, reason, startedAt, finishedAt
    done: bool = False  # terminated for good (restartPolicy Never, or OnFailure after exit 0)
    io: stdio.Stdio | None = None  # the stdio this run's stdin/tty is held by
    attach: stdio.AttachServer | None = None

    def reported(self, now: float) -> bool:
        """It runs, and the status says so (REPORT_DELAY after its start with held stdio)."""
        if self.popen is None or self.popen.poll() is not None:
            return False
        return self.io is None or now - self.started_at >= REPORT_DELAY

    def status(self) -> dict:
        """The container's runtime status (emunet.state.podphase's shape)."""
        if self.done and self.last is not None:
            return {"state": "terminated", **self.last}
        if self.reported(time.time()):
            return {"state": "running", "startedAt": self.started_at, "last": self.last}
        why = "CrashLoopBackOff" if self.last is not None else "ContainerCreating"
        return {"state": "waiting", "reason": why, "last": self.last}

    def current_io(self) -> stdio.Stdio | None:
        return self.io if self.popen is not None else None


def end_process(popen: subprocess.Popen, grace: float | None = None) -> None:
    """SIGTERM the container's process group, SIGKILL after the grace period (emunet's
    TERM_WAIT unless a deletion's gracePeriodSeconds says; 0: at once). A tty container's
    command leads a session of its own (setsid, emunet.host.sandbox): its group is signalled
    too."""
    groups = [popen.pid]
    inner = sandbox.child_pid(popen.pid)
    if inner is not None:
        with contextlib.suppress(OSError):
            if os.getpgid(inner) != popen.pid:
                groups.append(os.getpgid(inner))
    for sig in (15, 9):
        for g in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(g, sig)
        try:
            popen.wait(timeout=TERM_WAIT if grace is None or sig == 9 else grace)
            return
        except subprocess.TimeoutExpired:
            continue
    popen.wait()
