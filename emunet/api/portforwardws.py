"""pods/portforward over the WebSocket channel protocol (`v4.channel.k8s.io`), as the
kubelet's websocket port-forward speaks it (pkg/kubelet/cri/streaming/portforward/websocket.go):
the client the official Python client's `kubernetes.stream.portforward` is.

The ports come in the query (`?ports=80,8080`, PodPortForwardOptions). Port i gets two
channels, data 2i and error 2i+1; each channel's first message is its channel byte and the port
number in two bytes, little endian, before anything else. After that every binary message is a
channel byte and payload: client data on 2i goes to the pod's port, the pod's bytes come back on
2i, a failed connect is written on 2i+1 (containerd's words, as emunet.api.portforward writes
them). One TCP connection per port for the life of the WebSocket; when every port's pod side
has ended, or the pod is deleted, the WebSocket closes (the protocol has no per-channel close).
kubectl itself never uses this protocol (it speaks SPDY, emunet.api.portforward).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiohttp import WSMsgType, web

from emunet.api import status
from emunet.api.portforward import POD_POLL, READ_CHUNK, Forwarder

log = logging.getLogger("emunet.api.portforwardws")
PROTOCOL = "v4.channel.k8s.io"
MAX_PORTS = 64  # a WebSocket's channel byte holds two channels per port: far more than enough


def offered(request: web.Request) -> bool:
    """The upgrade asks for the channel protocol (and not SPDY-in-WebSocket)."""
    protos = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    return PROTOCOL in protos


def ports(request: web.Request) -> list[int]:
    """The `ports` query parameter (repeated or comma-separated), validated as the API server
    validates PodPortForwardOptions."""
    raw = [p for v in request.query.getall("ports", []) for p in v.split(",") if p.strip()]
    if not raw:
        raise status.bad_request("at least one port must be given: ?ports=PORT[,PORT...]")
    out = []
    for p in raw:
        try:
            port = int(p)
        except ValueError:
            raise status.bad_request(f"invalid port {p!r}: a number 1-65535") from None
        if not 0 < port < 65536:
            raise status.bad_request(f"invalid port {port}: must be 1-65535")
        out.append(port)
    if len(out) > MAX_PORTS:
        raise status.bad_request(f"too many ports ({len(out)}): at most {MAX_PORTS}")
    return out


def init_frame(channel: int, port: int) -> bytes:
    return bytes((channel, port & 0xFF, port >> 8))


async def serve(request: web.Request, fwd: Forwarder, name: str, wanted: list[int],
                alive: Callable[[], bool]) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=(PROTOCOL,), max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    log.info("%s: %s, ports %s", name, PROTOCOL, wanted)
    for i, port in enumerate(wanted):
        await ws.send_bytes(init_frame(2 * i, port))
        await ws.send_bytes(init_frame(2 * i + 1, port))
    writers: dict[int, asyncio.StreamWriter] = {}
    pumps: list[asyncio.Task[None]] = []
    for i, port in enumerate(wanted):
        try:
            reader, writer = await fwd.connect(port)
        except Exception as e:  # refused, timed out, no namespace: said on the error channel
            await ws.send_bytes(bytes((2 * i + 1,)) + fwd.connect_error(port, e).encode())
            continue
        writers[2 * i] = writer
        pumps.append(asyncio.create_task(_pod_to_client(reader, ws, 2 * i)))
    inbound = asyncio.create_task(_client_to_pods(ws, writers))
    gone = asyncio.create_task(_until_gone(alive))
    # every pod side ended (or none connected), the client left, or the pod was deleted
    ended = asyncio.ensure_future(asyncio.gather(*pumps) if pumps else asyncio.sleep(0))
    try:
        await asyncio.wait({ended, inbound, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (*pumps, ended, inbound, gone):
            t.cancel()
        await asyncio.gather(*pumps, ended, inbound, gone, return_exceptions=True)
        for w in writers.values():
            w.close()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.close()
    return ws


async def _pod_to_client(reader: asyncio.StreamReader, ws: web.WebSocketResponse,
                         channel: int) -> None:
    prefix = bytes((channel,))
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(READ_CHUNK):
            await ws.send_bytes(prefix + chunk)


async def _client_to_pods(ws: web.WebSocketResponse,
                          writers: dict[int, asyncio.StreamWriter]) -> None:
    async for msg in ws:
        if msg.type == WSMsgType.BINARY and len(msg.data) > 1:
            w = writers.get(msg.data[0])  # data channels only; the error ones are ours
            if w is not None and not w.is_closing():
                with contextlib.suppress(ConnectionError):
                    w.write(msg.data[1:])
                    await w.drain()
        elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            return


async def _until_gone(alive: Callable[[], bool]) -> None:
    while alive():
        await asyncio.sleep(POD_POLL)
