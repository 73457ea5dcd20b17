"""emunet's built-in server, the workload of a container without `command`: on TCP it answers
HTTP with the pod's identity (and echoes anything that is not HTTP), on UDP it answers each
datagram with the same identity, and it logs requests as nginx's `combined` format does. It
also opens its listening sockets (both families in a dual-stack pod)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from emunet.host.netns import socket_in_netns
from emunet.state.cluster import PodState

_HTTP_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ")
_MAX_HEADER = 64 * 1024


def identity(ps: PodState) -> str:
    ip6 = f" ip6={ps.ip6}" if ps.ip6 else ""  # dual-stack pods name both addresses
    return f"pod={ps.pod.name} namespace={ps.pod.namespace} ip={ps.ip}{ip6} node={ps.node}"


def http_response(ps: PodState, method: str, path: str) -> bytes:
    body = (f"Hello from {ps.pod.name}\n{identity(ps)} path={path}\n").encode()
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nX-Emunet-Pod: {ps.pod.namespace}/{ps.pod.name}\r\n"
            f"X-Emunet-Node: {ps.node}\r\nConnection: close\r\n\r\n").encode()
    return head if method == "HEAD" else head + body


class UDPIdentity(asyncio.DatagramProtocol):
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


async def serve_tcp(ps: PodState, reader: asyncio.StreamReader,
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


def listen_families(ps: PodState) -> tuple[int, ...]:
    """The address families a built-in server listens on: both in a dual-stack pod, as
    nginx's `listen 80; listen [::]:80;` (two sockets, IPv6-only, so IPv4 clients keep their
    own addresses in the log rather than ::ffff:-mapped ones)."""
    return (socket.AF_INET, socket.AF_INET6) if ps.ip6 else (socket.AF_INET,)


def listen(netns: str, kind: int, port: int, family: int = socket.AF_INET) -> socket.socket:
    sock = socket_in_netns(netns, family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(1024)
    sock.setblocking(False)
    return sock
