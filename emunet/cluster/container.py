"""One container process of a pod, as the workloads supervise it: its current run, the run that
ended last, whether it is done for good, its held stdio, and the runtime status the supervisor
publishes for it (emunet.state.podphase's shape); and how a container process is ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
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
    TERM_WAIT unless a deletion's gracePeriodSeconds says; 0: at once)."""
    end_processes([popen], TERM_WAIT if grace is None else grace)


def end_processes(popens: list[subprocess.Popen], grace: float = TERM_WAIT) -> None:
    """End many containers at once (a pod's, or every pod's on `down`): SIGTERM every process
    group, wait out one grace period for all of them together, SIGKILL what is left. A tty
    container's command leads a session of its own (setsid, emunet.host.sandbox): its group is
    signalled too. A shell that is PID 1 of its PID namespace ignores SIGTERM (the kernel
    delivers only signals it handles), so without the shared deadline each such container
    would cost the whole grace period in turn."""
    groups: dict[int, list[int]] = {}
    for popen in popens:
        g = [popen.pid]
        inner = sandbox.child_pid(popen.pid)
        if inner is not None:
            with contextlib.suppress(OSError):
                if os.getpgid(inner) != popen.pid:
                    g.append(os.getpgid(inner))
        groups[popen.pid] = g
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for popen in popens:
            for g in groups[popen.pid]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(g, sig)
        deadline = time.monotonic() + grace
        while any(p.poll() is None for p in popens) and time.monotonic() < deadline:
            time.sleep(0.01)
    for popen in popens:
        popen.wait()
