"""A supervised helper process of the supervisor (a node agent, an L7 proxy, the DNS
responder, the API server): started in its namespace, recorded in the manifest, signalled,
stopped; or, after a supervisor restart, adopted from the manifest (emunet.cluster.adopt)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from emunet import naming
from emunet.host import adopted
from emunet.state import loaded


class Child:
    """A supervised helper process (a node agent, the DNS responder, the API server); `netns`
    None runs it in the root namespace (the API server, which binds 127.0.0.1 only)."""

    def __init__(self, role: str, netns: str | None, argv: list[str]) -> None:
        self.role, self.netns, self.argv = role, netns, argv
        self.popen: subprocess.Popen | adopted.Adopted | None = None
        self.restarts = 0
        self.started = 0.0

    def start(self, sup: Any) -> None:
        # A restarted reader has loaded nothing yet: the stamp its dead predecessor left would
        # make `status` (and `up`, `apply`) count it as forwarding before it has a socket open
        loaded.path(naming.run_dir(), self.role).unlink(missing_ok=True)
        logf = open(naming.run_dir() / "logs" / f"{self.role}.log", "ab")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        enter = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.popen = subprocess.Popen(
            [*enter, sys.executable, "-m", *self.argv],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        logf.close()
        self.started = time.time()
        sup.manifest.add_process(self.popen.pid, self.role)

    def adopt(self, processes: list[dict[str, Any]]) -> bool:
        """Take over the recorded process of this role if it still runs (a supervisor
        restart); its restarts are the starts the manifest recorded, less the first."""
        self.popen = adopted.find(processes, self.role)
        self.restarts = max(0, sum(e.get("role") == self.role for e in processes) - 1)
        self.started = time.time()
        return self.popen is not None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(sig)

    def stop(self) -> None:
        if self.popen is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def stop_all(children: list[Child], timeout: float = 3.0) -> None:
    """SIGTERM every child, then wait for all of them under one deadline (SIGKILL after)."""
    for child in children:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        if child.popen is None:
            continue
        try:
            child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.popen.kill()
            child.popen.wait()
