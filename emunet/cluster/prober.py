"""Container probes as the kubelet runs them: when each is due, what its result is, and the
three ways to run one (tcpSocket, httpGet, exec) from inside the pod's network namespace.

`ProbeTracker` is pure (time is passed in): kubelet's prober worker semantics
(pkg/kubelet/prober/worker.go) - nothing runs before initialDelaySeconds, then one probe every
periodSeconds; the result flips only after successThreshold successes or failureThreshold
failures in a row. A readiness result starts as failure (a pod is not Ready until its probe
passes); a liveness result starts as success, and its failure restarts the container. A
startup probe (kubelet: "all other probes are disabled until it succeeds") starts as failure,
stops once it has succeeded, and failureThreshold failures in a row restart the container.

The runners do the I/O: tcp/http connect to the pod IP from a socket created inside the pod's
netns (as the kubelet on the node connects to the pod IP); exec runs the command with
nsenter into the container's namespaces as the container's user (securityContext, else nobody:
emunet.host.sandbox), as the kubelet runs it in the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass

from emunet.host import sandbox
from emunet.host.netns import socket_in_netns
from emunet.model import Container, Pod, Probe

READINESS, LIVENESS, STARTUP = "Readiness", "Liveness", "Startup"
USER_AGENT = "kube-probe/1.31"  # what the kubelet sends; servers log it


@dataclass
class ProbeTracker:
    """One probe of one container (kubelet: one worker per probe)."""

    probe: Probe
    kind: str  # READINESS | LIVENESS
    container: str
    started: float  # when the container (re)started
    result: bool = False
    successes: int = 0
    failures: int = 0
    next_due: float = 0.0
    running: bool = False
    last_message: str = ""

    def __post_init__(self) -> None:
        self.reset(self.started)

    def reset(self, started: float) -> None:
        """A (re)started container: initial delay again, counts from zero."""
        self.started = started
        self.result = self.kind == LIVENESS
        self.successes = self.failures = 0
        self.next_due = started + self.probe.initial_delay

    def due(self, now: float) -> bool:
        if self.kind == STARTUP and self.result:
            return False  # a startup probe that succeeded is done until the next restart
        return not self.running and now >= self.next_due

    @property
    def gives_up(self) -> bool:
        """A startup probe that failed failureThreshold times in a row: restart."""
        return self.kind == STARTUP and not self.result and \
            self.failures >= self.probe.failure_threshold

    def record(self, ok: bool, now: float, message: str = "") -> bool:
        """A probe finished at `now`; True if the result flipped."""
        self.running = False
        self.next_due = now + self.probe.period
        self.last_message = message
        before = self.result
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.probe.success_threshold:
                self.result = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= self.probe.failure_threshold:
                self.result = False
        return self.result != before


def trackers_for(containers: tuple[Container, ...], now: float) -> list[ProbeTracker]:
    out = []
    for c in containers:
        if c.startup_probe is not None:
            out.append(ProbeTracker(c.startup_probe, STARTUP, c.name, now))
        if c.readiness_probe is not None:
            out.append(ProbeTracker(c.readiness_probe, READINESS, c.name, now))
        if c.liveness_probe is not None:
            out.append(ProbeTracker(c.liveness_probe, LIVENESS, c.name, now))
    return out


def started(trackers: list[ProbeTracker], container: str) -> bool:
    """Whether the container's startup probe (if it has one) has succeeded."""
    return all(t.result for t in trackers if t.kind == STARTUP and t.container == container)


def probe_port(probe: Probe, container: Container) -> int | None:
    """A named probe port resolves against the container's own ports, as the kubelet does."""
    if isinstance(probe.port, int):
        return probe.port
    for p in container.ports:
        if p.name == probe.port:
            return p.container_port
    return None


async def run(probe: Probe, container: Container, pod: Pod, netns: str, ip: str,
              target_pid: int | None = None) -> tuple[bool, str]:
    """Run a probe once: (success, the kubelet-style failure message). `target_pid`: the
    container's process, whose namespaces an exec probe runs in (emunet.host.sandbox)."""
    if probe.kind == "exec":
        return await _exec(exec_argv(probe, container, pod, netns, target_pid), probe)
    port = probe_port(probe, container)
    if port is None:
        return False, f"port {probe.port!r} is not a port of container {container.name}"
    try:
        return await asyncio.wait_for(_connect_probe(probe, netns, ip, port), probe.timeout)
    except TimeoutError:
        what = f"Get \"http://{ip}:{port}{probe.path}\"" if probe.kind == "httpGet" else \
            f"dial tcp {ip}:{port}"
        return False, f"{what}: context deadline exceeded (timeout {probe.timeout}s)"


async def _connect_probe(probe: Probe, netns: str, ip: str, port: int) -> tuple[bool, str]:
    sock = await asyncio.to_thread(socket_in_netns, netns, socket.AF_INET,
                                   socket.SOCK_STREAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    url = f"http://{ip}:{port}{probe.path}"
    try:
        try:
            await loop.sock_connect(sock, (ip, port))
        except OSError as e:
            # as Go's net package words it: "connect: connection refused"
            reason = (os.strerror(e.errno) if e.errno else str(e)).lower()
            prefix = f'Get "{url}": ' if probe.kind == "httpGet" else ""
            return False, f"{prefix}dial tcp {ip}:{port}: connect: {reason}"
        if probe.kind == "tcpSocket":
            return True, ""
        req = (f"GET {probe.path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: {USER_AGENT}\r\n"
               f"Accept: */*\r\nConnection: close\r\n\r\n").encode()
        await loop.sock_sendall(sock, req)
        data = b""
        while b"\r\n" not in data and len(data) < 4096:
            more = await loop.sock_recv(sock, 4096)
            if not more:
                break
            data += more
        parts = data.split(b"\r\n", 1)[0].split()
        code = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
        # kubelet: any code >= 200 and < 400 is a success.
        if 200 <= code < 400:
            return True, ""
        return False, (f"HTTP probe failed with statuscode: {code}" if code else
                       f'Get "{url}": malformed HTTP response')
    except OSError as e:
        return False, f'Get "{url}": {e.strerror or e}'
    finally:
        sock.close()


def exec_argv(probe: Probe, container: Container, pod: Pod, netns: str,
              target_pid: int | None = None) -> list[str]:
    """An exec probe's command line: in the container's namespaces, as the container's user."""
    return sandbox.exec_argv(pod, netns, target_pid, list(probe.command),
                             sandbox.run_as(container))


async def _exec(argv: list[str], probe: Probe) -> tuple[bool, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, env={"PATH": sandbox.PATH},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    except OSError as e:
        return False, f"exec {list(probe.command)}: {e}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), probe.timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return False, f"command {list(probe.command)} timed out after {probe.timeout}s"
    if proc.returncode == 0:
        return True, ""
    text = out.decode(errors="replace").strip()[:200]
    return False, f"command {list(probe.command)} exited {proc.returncode}" + (
        f": {text}" if text else "")
