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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import host
from .model import Container
from .state import PodState

log = logging.getLogger("emunet.workloads")

_HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ")
_MAX_HEADER = 64 * 1024
_BACKOFF_MAX = 300.0  # kubelet's CrashLoopBackOff cap (5 minutes)


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


async def _serve_tcp(ps: PodState, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
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
            writer.write(http_response(ps, method.decode("latin-1"), path))
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

    @property
    def restarts(self) -> int:
        return sum(p.restarts for p in self.procs)


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
        loop = asyncio.get_running_loop()
        for c in ps.pod.containers:
            if c.command or c.args:
                wl.procs.append(_Proc(c))
                continue
            if not builtin:
                continue
            for cp in c.ports:
                if cp.protocol == "TCP":
                    sock = await asyncio.to_thread(_listen, ps.netns, socket.SOCK_STREAM,
                                                   cp.container_port)
                    srv = await asyncio.start_server(
                        lambda r, w, ps=ps: _serve_tcp(ps, r, w), sock=sock)
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
        for p in wl.procs:
            self._spawn(wl, p)

    def _spawn(self, wl: PodWorkload, p: _Proc) -> None:
        ps = wl.ps
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logf = self.log_dir / f"{ps.pod.namespace}_{ps.pod.name}_{p.container.name}.log"
        argv = ["ip", "netns", "exec", ps.netns, *p.container.command, *p.container.args]
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "HOSTNAME": ps.pod.name, **dict(p.container.env)}
        with open(logf, "ab") as out:
            try:
                # Own session: `down` can end the process group (a shell and its children).
                p.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True)
            except OSError as e:
                out.write(f"emunet: cannot start {argv[4:]}: {e}\n".encode())
                p.popen = None
                return
        self.on_process(p.popen.pid, f"container {ps.pod.namespace}/{ps.pod.name}/"
                        f"{p.container.name}", netns=ps.netns)

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
        for srv in wl.servers:
            srv.close()
        for tr in wl.transports:
            tr.close()
        for p in wl.procs:
            if p.popen is not None and p.popen.poll() is None:
                _end(p.popen)

    async def stop_all(self) -> None:
        for key in list(self.pods):
            await self.stop(key)


def _listen(netns: str, kind: int, port: int) -> socket.socket:
    sock = host.socket_in_netns(netns, socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(1024)
    sock.setblocking(False)
    return sock


def _listens(ps: PodState, port: int) -> bool:
    """A TCP connect to the pod's own IP from inside its namespace (over its loopback)."""
    try:
        sock = host.socket_in_netns(ps.netns, socket.AF_INET, socket.SOCK_STREAM)
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
