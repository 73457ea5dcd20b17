"""pods/portforward: kubectl's local connections reach a port of the pod, over SPDY/3.1.

Two ways in for kubectl (research kubernetes-api.md, port-forward and section 6), and a third,
the WebSocket channel protocol of the Python client (emunet.api.portforwardws):
- `GET` with `Upgrade: websocket` and subprotocol `SPDY/3.1+portforward.k8s.io` (kubectl 1.31+,
  KEP-4006): the SPDY frames travel in WebSocket binary messages;
- `POST` (or GET) with `Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version: portforward.k8s.io`
  (older kubectl, and newer ones when the WebSocket upgrade is refused): raw SPDY on the TCP
  connection after a 101 (emunet.api.spdyupgrade).

Per local connection kubectl opens an `error` and a `data` stream with the same `requestid`
and the pod's `port`. As the kubelet does (pkg/kubelet/cri/streaming/portforward/httpstream.go),
each stream gets a SYN_REPLY, the data stream is joined to a TCP connection to localhost:PORT
made inside the pod's network namespace, and when the pod side ends the data stream gets FIN,
then the error stream; a failed connect is written on the error stream, worded as containerd
words it, and kubectl prints it. The API server runs as root in the root namespace, so it
enters the pod's namespace to make the socket (emunet.host.socket_in_netns).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from emunet.api import spdy, spdyupgrade, status
from emunet.api.spdysession import Closed, Session, Stream
from emunet.host.manifest import HostError
from emunet.host.netns import socket_in_netns

log = logging.getLogger("emunet.api.portforward")
PROTOCOL = "portforward.k8s.io"
WS_PROTOCOL = "SPDY/3.1+" + PROTOCOL
PAIR_TIMEOUT = 30.0  # the kubelet's stream creation timeout: an error stream left without data
CONNECT_TIMEOUT = 10.0
READ_CHUNK = 64 * 1024
POD_POLL = 0.5  # seconds between checks that the pod still exists (a deleted one ends the session)
SESSIONS: web.AppKey[set[tuple[Session, Any]]] = web.AppKey("portforward-sessions", set)


class _Pair:
    def __init__(self) -> None:
        self.error: Stream | None = None
        self.data: Stream | None = None
        self.complete = asyncio.Event()


class Forwarder:
    """The port-forward side of one session: streams paired by requestid, joined to the pod."""

    def __init__(self, netns: str, pod: dict[str, Any]) -> None:
        self.netns = netns
        self.uid = pod["metadata"].get("uid", "")
        self.pairs: dict[str, _Pair] = {}

    async def on_stream(self, s: Stream) -> None:
        kind, rid = s.headers.get("streamtype"), s.headers.get("requestid", "")
        port = _port(s.headers.get("port", ""))
        if kind not in ("error", "data") or port is None:
            log.warning("port-forward: refused stream %d with headers %s", s.id, s.headers)
            await s.reset(spdy.PROTOCOL_ERROR)
            return
        await s.reply()
        pair = self.pairs.setdefault(rid, _Pair())
        if getattr(pair, kind) is not None:
            await s.reset(spdy.PROTOCOL_ERROR)  # a second stream of that type for the request
            return
        setattr(pair, kind, s)
        if pair.error is not None and pair.data is not None:
            self.pairs.pop(rid, None)
            pair.complete.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pair.complete.wait(), PAIR_TIMEOUT)
        if not pair.complete.is_set():  # the kubelet's words (httpstream.go monitorStreamPair)
            self.pairs.pop(rid, None)
            if pair.error is not None:
                await pair.error.write(f"(request={rid}) timed out waiting for streams".encode())
                await pair.error.close()
            if pair.data is not None:
                await pair.data.reset(spdy.CANCEL)
            return
        if kind == "data":  # the error stream's task is done: kubectl only reads that one
            assert pair.error is not None
            await self.forward(port, s, pair.error)

    async def forward(self, port: int, data: Stream, error: Stream) -> None:
        try:
            reader, writer = await self.connect(port)
        except (OSError, HostError, TimeoutError) as e:
            await error.write(self.connect_error(port, e).encode())
            await data.close()
            await error.close()
            return
        down = asyncio.create_task(_pod_to_client(reader, data))
        up = asyncio.create_task(_client_to_pod(data, writer))
        ended = asyncio.create_task(data.ended.wait())
        try:
            await asyncio.wait({down, ended}, return_when=asyncio.FIRST_COMPLETED)
            if down.done():  # the pod side closed: FIN data (done), then error
                await error.close()
                await asyncio.wait({up, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (down, up, ended):
                t.cancel()
            await asyncio.gather(down, up, ended, return_exceptions=True)
            writer.close()
            await error.close()

    async def connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket_in_netns(self.netns, socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(
                sock, ("127.0.0.1", port)), CONNECT_TIMEOUT)
            return await asyncio.open_connection(sock=sock, limit=READ_CHUNK)
        except BaseException:
            sock.close()
            raise

    def connect_error(self, port: int, e: BaseException) -> str:
        """containerd's wording (pkg/cri/server/sandbox_portforward_linux.go), which kubectl
        prints after `an error occurred forwarding LOCAL -> PORT: `."""
        if isinstance(e, TimeoutError):
            reason = "i/o timeout"
        elif isinstance(e, OSError) and e.errno:
            text = os.strerror(e.errno)
            reason = text[:1].lower() + text[1:]
        else:
            reason = str(e)
        return (f"error forwarding port {port} to pod {self.uid}, uid : failed to execute "
                f"portforward in network namespace \"/var/run/netns/{self.netns}\": failed to "
                f"connect to localhost:{port} inside namespace \"{self.uid}\", IPv4: dial tcp4 "
                f"127.0.0.1:{port}: connect: {reason} ")


def _port(text: str) -> int | None:
    try:
        port = int(text)
    except ValueError:
        return None
    return port if 0 < port < 65536 else None


async def _pod_to_client(reader: asyncio.StreamReader, data: Stream) -> None:
    with contextlib.suppress(ConnectionError, Closed):
        while chunk := await reader.read(READ_CHUNK):
            await data.write(chunk)
    await data.close()


async def _client_to_pod(data: Stream, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await data.read():
            writer.write(chunk)
            await writer.drain()
        if data.remote_closed and writer.can_write_eof():  # the client's FIN: half-close
            writer.write_eof()


def session_name(pod: dict[str, Any]) -> str:
    return f"port-forward {pod['metadata']['namespace']}/{pod['metadata']['name']}"


async def serve(request: web.Request, netns: str, pod: dict[str, Any],
                alive: Callable[[], bool]) -> web.StreamResponse:
    """`alive()`: the pod is still there (deleted, its containers' connections would die with
    it: the session ends, and kubectl says `lost connection to pod`)."""
    upgrade = request.headers.get("Upgrade", "").lower()
    name = session_name(pod)
    fwd = Forwarder(netns, pod)
    if upgrade == "websocket":
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol",
                                                           "").split(",")]
        if WS_PROTOCOL not in offered:  # (v4.channel.k8s.io: emunet.api.portforwardws)
            raise status.bad_request(f"port-forward over WebSocket needs the subprotocol "
                                     f"{WS_PROTOCOL} or v4.channel.k8s.io")
        return await _websocket(request, fwd, name, alive)
    if spdyupgrade.is_spdy(request):
        if request.headers.getall(spdyupgrade.HEADER, []):
            spdyupgrade.negotiate(request, (PROTOCOL,))
        return await _raw(request, fwd, name, alive)
    raise status.bad_request("Upgrade request required")


async def _while_the_pod_lives(session: Session, alive: Callable[[], bool],
                               close: Callable[[], Awaitable[object]], name: str) -> None:
    while alive():
        await asyncio.sleep(POD_POLL)
    log.info("%s: the pod is gone: the session ends", name)
    await session.goaway()
    with contextlib.suppress(ConnectionError, RuntimeError):
        await close()


async def _websocket(request: web.Request, fwd: Forwarder, name: str,
                     alive: Callable[[], bool]) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=(WS_PROTOCOL,), max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    log.info("%s: SPDY/3.1 over WebSocket", name)
    session = Session(ws.send_bytes, fwd.on_stream, name)

    async def source() -> AsyncIterator[bytes]:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                yield msg.data
            elif msg.type == WSMsgType.ERROR:
                return

    entry = (session, ws)
    request.app[SESSIONS].add(entry)
    watcher = asyncio.create_task(_while_the_pod_lives(session, alive, ws.close, name))
    try:
        await session.run(source())
    finally:
        watcher.cancel()
        request.app[SESSIONS].discard(entry)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.close()
    return ws


async def _raw(request: web.Request, fwd: Forwarder, name: str,
               alive: Callable[[], bool]) -> web.StreamResponse:
    raw = await spdyupgrade.upgrade(request, PROTOCOL)
    assert raw.response is not None
    log.info("%s: SPDY/3.1 on the upgraded connection", name)
    session = Session(raw.send, fwd.on_stream, name)
    entry = (session, raw.transport)
    request.app[SESSIONS].add(entry)

    async def close() -> None:
        raw.close()
    watcher = asyncio.create_task(_while_the_pod_lives(session, alive, close, name))
    try:
        await session.run(raw.chunks())
    finally:
        watcher.cancel()
        request.app[SESSIONS].discard(entry)
        raw.close()
    return raw.response


async def shutdown(app: web.Application) -> None:
    """The API server is stopping: GOAWAY to every session, then close its connection."""
    for session, conn in list(app[SESSIONS]):
        await session.goaway()
        with contextlib.suppress(ConnectionError, RuntimeError):
            if isinstance(conn, web.WebSocketResponse):
                await conn.close()
            else:
                conn.close()
