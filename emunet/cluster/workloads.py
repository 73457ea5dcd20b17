"""Pod workloads: emunet's built-in servers and real container processes.

A container without `command` gets emunet's built-in server on each declared containerPort:
TCP answers HTTP with the pod's identity (and echoes anything that is not HTTP), UDP answers each
datagram with the same identity. All built-in servers of all pods live in the supervisor's one
event loop: a socket belongs to the network namespace it was created in, so one process can serve
every pod (no Python process per pod). A container with `command`/`args` runs that real process
inside the pod's namespace via `ip netns exec`, which also bind-mounts the pod's resolv.conf.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from emunet.host import sandbox
from emunet.host.netns import socket_in_netns
from emunet.model import Container
from emunet.state.cluster import KUBE_SYSTEM, PodState

log = logging.getLogger("emunet.cluster.workloads")

_HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ")
_MAX_HEADER = 64 * 1024
SANDBOX_TIMEOUT = 5.0  # seconds for a pod sandbox to set up its namespaces
_BACKOFF_MAX = 300.0  # kubelet's CrashLoopBackOff cap (5 minutes)


def log_path(log_dir: Path, ps: PodState, container: str) -> Path:
    """Where a container's output goes (`emunet logs` and the API's pods/log read it)."""
    if ps.pod.namespace == KUBE_SYSTEM and ps.pod.labels.get("k8s-app") == "kube-dns":
        return log_dir / "dns.log"  # CoreDNS is the supervisor's `dns` child
    return log_dir / f"{ps.pod.namespace}_{ps.pod.name}_{container}.log"


def identity(ps: PodState) -> str:
    return (f"pod={ps.pod.name} namespace={ps.pod.namespace} ip={ps.ip} node={ps.node}")


def http_response(ps: PodState, method: str, path: str) -> bytes:
    body = (f"Hello from {ps.pod.name}\n{identity(ps)} path={path}\n").encode()
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nX-Emunet-Pod: {ps.pod.namespace}/{ps.pod.name}\r\n"
            f"X-Emunet-Node: {ps.node}\r\nConnection: close\r\n\r\n").encode()
    return head if method == "HEAD" else head + body


class _UDPIdentity(asyncio.DatagramProtocol):
    def __init__(self, ps: PodState) -> None:
        self.ps = ps
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(f"{identity(self.ps)} bytes={len(data)}\n".encode(), addr)


def access_line(peer: object, request: bytes, status: int, size: int, now: float) -> str:
    """One request as nginx's default `combined` log format writes it."""
    head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    agent = next((h.split(":", 1)[1].strip() for h in head[1:]
                  if h.lower().startswith("user-agent:")), "-")
    client = peer[0] if isinstance(peer, tuple) else "-"
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
    return f'{client} - - [{stamp}] "{head[0]}" {status} {size} "-" "{agent}"\n'


async def _serve_tcp(ps: PodState, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, access: Callable[[str], object]) -> None:
    try:
        first = await asyncio.wait_for(reader.read(4096), timeout=30)
        if first.startswith(_HTTP_METHODS):
            data = first
            while b"\r\n\r\n" not in data and len(data) < _MAX_HEADER:
                more = await asyncio.wait_for(reader.read(4096), timeout=30)
                if not more:
                    break
                data += more
            method, _, rest = data.partition(b" ")
            path = rest.split(b" ", 1)[0].decode("latin-1") or "/"
            resp = http_response(ps, method.decode("latin-1"), path)
            writer.write(resp)
            body = len(resp) - resp.index(b"\r\n\r\n") - 4
            access(access_line(writer.get_extra_info("peername"), data, 200, body, time.time()))
        else:  # not HTTP: a plain TCP echo, handy for nc and byte-checking load tests
            while first:
                writer.write(first)
                await writer.drain()
                first = await reader.read(65536)
        await writer.drain()
    except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


@dataclass
class _Proc:
    container: Container
    popen: subprocess.Popen | None = None
    restarts: int = 0
    backoff: float = 0.0
    next_start: float = 0.0


@dataclass
class PodWorkload:
    """Everything running for one pod: built-in listeners and container processes."""

    ps: PodState
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    transports: list[asyncio.BaseTransport] = field(default_factory=list)
    procs: list[_Proc] = field(default_factory=list)
    logs: list[TextIO] = field(default_factory=list)  # built-in servers' access logs
    builtin_restarts: int = 0  # liveness restarts of built-in containers
    sandbox: subprocess.Popen | None = None  # the pod's pause process (emunet.host.sandbox)
    sandbox_pid: int | None = None  # its PID 1 (the pause), what containers nsenter

    @property
    def restarts(self) -> int:
        return sum(p.restarts for p in self.procs) + self.builtin_restarts


class Workloads:
    """Starts, supervises and stops pod workloads inside the supervisor's event loop."""

    def __init__(self, log_dir: Path, on_process: Callable[..., None]) -> None:
        self.log_dir = log_dir
        self.on_process = on_process  # records each started pid (for `emunet down`)
        self.pods: dict[tuple[str, str], PodWorkload] = {}

    async def start(self, ps: PodState, builtin: bool = True) -> None:
        """Open the pod's listeners and start its processes (idempotent per pod)."""
        if ps.key in self.pods:
            return
        wl = PodWorkload(ps)
        self.pods[ps.key] = wl
        for c in ps.pod.containers:
            if c.command or c.args:
                wl.procs.append(_Proc(c))
            elif builtin:
                await self._open_builtin(wl, c)
        if wl.procs:
            await asyncio.to_thread(self._start_sandbox, wl)
        for p in wl.procs:
            self._spawn(wl, p)

    def _start_sandbox(self, wl: PodWorkload) -> None:
        """The pod's pause process; returns once its namespaces are set up (or it failed)."""
        ps = wl.ps
        logf = self.log_dir / f"{ps.pod.namespace}_{ps.pod.name}_sandbox.log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(logf, "ab") as out:
            try:
                wl.sandbox = subprocess.Popen(
                    sandbox.sandbox_argv(ps.pod, ps.netns), stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                    env={"PATH": sandbox.PATH})
            except OSError as e:
                out.write(f"emunet: cannot start the pod sandbox: {e}\n".encode())
                return
        self.on_process(wl.sandbox.pid, sandbox.sandbox_role(ps.pod), netns=ps.netns)
        deadline = time.monotonic() + SANDBOX_TIMEOUT
        while time.monotonic() < deadline and wl.sandbox.poll() is None:
            pid = sandbox.child_pid(wl.sandbox.pid)
            # set up once the pause runs: hostname and /tmp are done before its exec
            if pid is not None and _exe_name(pid) == sandbox.PAUSE:
                wl.sandbox_pid = pid
                return
            time.sleep(0.005)
        log.error("%s/%s: the pod sandbox did not start (see %s)", ps.pod.namespace,
                  ps.pod.name, logf)

    async def _open_builtin(self, wl: PodWorkload, c: Container) -> None:
        """A built-in container's listeners; like a web server it logs one line per request
        to its container log (what `emunet logs` shows)."""
        ps = wl.ps
        loop = asyncio.get_running_loop()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{ps.pod.namespace}_{ps.pod.name}_{c.name}.log"
        out = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        wl.logs.append(out)
        for cp in c.ports:
            out.write(f"emunet built-in server: listening on {cp.container_port}/{cp.protocol}"
                      f" ({identity(ps)})\n")
            if cp.protocol == "TCP":
                sock = await asyncio.to_thread(_listen, ps.netns, socket.SOCK_STREAM,
                                               cp.container_port)
                srv = await asyncio.start_server(
                    lambda r, w, ps=ps, out=out: _serve_tcp(
                        ps, r, w, lambda line: out.closed or out.write(line)), sock=sock)
                wl.servers.append(srv)
            elif cp.protocol == "UDP":
                sock = await asyncio.to_thread(_listen, ps.netns, socket.SOCK_DGRAM,
                                               cp.container_port)
                tr, _ = await loop.create_datagram_endpoint(lambda ps=ps: _UDPIdentity(ps),
                                                            sock=sock)
                wl.transports.append(tr)
            else:
                log.warning("%s/%s: built-in server has no %s support; port %d not served",
                            ps.pod.namespace, ps.pod.name, cp.protocol, cp.container_port)

    async def restart(self, key: tuple[str, str], container: str) -> None:
        """Restart one container (a failed liveness probe): a process is ended and `reap`
        starts it again (with kubelet's back-off); built-in listeners are closed and reopened."""
        wl = self.pods.get(key)
        if wl is None:
            return
        for p in wl.procs:
            if p.container.name == container and p.popen is not None:
                await asyncio.to_thread(_end, p.popen)
                return
        c = next((c for c in wl.ps.pod.containers if c.name == container), None)
        if c is None or c.command or c.args:
            return
        self._close_builtin(wl)
        wl.builtin_restarts += 1
        for c in wl.ps.pod.containers:
            if not (c.command or c.args):
                await self._open_builtin(wl, c)

    @staticmethod
    def _close_builtin(wl: PodWorkload) -> None:
        for srv in wl.servers:
            srv.close()
        for tr in wl.transports:
            tr.close()
        for f in wl.logs:
            f.close()
        wl.servers, wl.transports, wl.logs = [], [], []

    def _spawn(self, wl: PodWorkload, p: _Proc) -> None:
        ps = wl.ps
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logf = self.log_dir / f"{ps.pod.namespace}_{ps.pod.name}_{p.container.name}.log"
        cmd = [*p.container.command, *p.container.args]
        with open(logf, "ab") as out:
            if wl.sandbox_pid is None:  # no namespaces to run in: as a runtime failure
                out.write(b"emunet: the pod sandbox is not running; container not started\n")
                return
            argv = sandbox.container_argv(ps.pod, p.container, wl.sandbox_pid, cmd)
            env = sandbox.env(ps.pod, p.container)
            try:
                # Own session: `down` can end the process group (a shell and its children).
                p.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True, umask=0o022)
            except OSError as e:
                out.write(f"emunet: cannot start {cmd}: {e}\n".encode())
                p.popen = None
                return
        self.on_process(p.popen.pid, sandbox.container_role(ps.pod, p.container),
                        netns=ps.netns)

    def reap(self, now: float) -> bool:
        """Restart exited containers with back-off (restartPolicy Always). True if any moved."""
        changed = False
        for wl in self.pods.values():
            for p in wl.procs:
                if p.popen is not None and p.popen.poll() is not None:
                    p.popen = None
                    p.restarts += 1
                    p.backoff = min(_BACKOFF_MAX, max(10.0, p.backoff * 2))  # kubelet: 10s, x2
                    p.next_start = now + (0 if p.restarts == 1 else p.backoff)
                    changed = True
                if p.popen is None and now >= p.next_start:
                    self._spawn(wl, p)
                    changed = True
        return changed

    def container_pid(self, key: tuple[str, str], container: str) -> int | None:
        """The container's first process (PID 1 of its PID namespace), None if not running."""
        wl = self.pods.get(key)
        for p in wl.procs if wl else ():
            if p.container.name == container and p.popen is not None:
                return sandbox.child_pid(p.popen.pid)
        return None

    def running(self, key: tuple[str, str]) -> bool:
        """Its workload is up: listeners open, every container process alive (ports aside)."""
        wl = self.pods.get(key)
        return wl is not None and all(p.popen is not None and p.popen.poll() is None
                                      for p in wl.procs)

    def ready(self, key: tuple[str, str]) -> bool:
        """Ready when built-in listeners are open, every container process runs, and every TCP
        containerPort a command container declares accepts connections (its ports listen)."""
        wl = self.pods.get(key)
        if wl is None:
            return False
        if not all(p.popen is not None and p.popen.poll() is None for p in wl.procs):
            return False
        return all(_listens(wl.ps, cp.container_port) for p in wl.procs
                   for cp in p.container.ports if cp.protocol == "TCP")

    async def stop(self, key: tuple[str, str]) -> None:
        wl = self.pods.pop(key, None)
        if wl is None:
            return
        self._close_builtin(wl)
        for p in wl.procs:
            if p.popen is not None and p.popen.poll() is None:
                _end(p.popen)
        if wl.sandbox is not None and wl.sandbox.poll() is None:
            _end(wl.sandbox)  # PID 1 of the pod's PID namespace: what was left there goes too

    async def stop_all(self) -> None:
        for key in list(self.pods):
            await self.stop(key)



def _exe_name(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


def _listen(netns: str, kind: int, port: int) -> socket.socket:
    sock = socket_in_netns(netns, socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(1024)
    sock.setblocking(False)
    return sock


def _listens(ps: PodState, port: int) -> bool:
    """A TCP connect to the pod's own IP from inside its namespace (over its loopback)."""
    try:
        sock = socket_in_netns(ps.netns, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return False
    with sock:
        sock.settimeout(0.2)
        return sock.connect_ex((ps.ip, port)) == 0


def _end(popen: subprocess.Popen) -> None:
    """SIGTERM the container's process group, SIGKILL after the grace period."""
    try:
        os.killpg(popen.pid, 15)
        popen.wait(timeout=2)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        try:
            os.killpg(popen.pid, 9)
        except ProcessLookupError:
            pass
        popen.wait()
