"""The raw SPDY/3.1 upgrade: a `POST` (or GET) with `Upgrade: SPDY/3.1` answered `101`, after
which the TCP connection carries SPDY frames (kubectl's port-forward fallback, and its exec and
attach before 1.30; k8s.io/apimachinery pkg/util/httpstream/spdy's ResponseUpgrader).

aiohttp's parser only hands over `websocket`/`tcp` upgrades, so the connection's protocol is
swapped for `Raw` before the 101 goes out: no SPDY byte reaches aiohttp's HTTP parser (research
kubernetes-api.md section 6: without the swap it raised BadHttpMethod on the first frame).
`negotiate` is httpstream.Handshake: the first of the client's `X-Stream-Protocol-Version`
values (repeated headers or comma-separated) that the server speaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from emunet.api import status

RAW_HIGH = 1024 * 1024  # raw SPDY bytes buffered before the socket stops being read
HEADER = "X-Stream-Protocol-Version"


def is_spdy(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower().startswith("spdy/3.1")


def negotiate(request: web.Request, server: tuple[str, ...]) -> str:
    """The protocol both sides speak, in the client's order (httpstream.Handshake and its
    words: 400 without the header, 403 without a common protocol)."""
    client = [p.strip() for h in request.headers.getall(HEADER, []) for p in h.split(",")
              if p.strip()]
    if not client:
        raise status.bad_request(f"unable to upgrade: {HEADER} is required")
    for p in client:
        if p in server:
            return p
    raise status.APIError(403, "Forbidden", f"unable to upgrade: unable to negotiate protocol: "
                          f"client supports [{' '.join(client)}], server accepts "
                          f"[{' '.join(server)}]")


class Raw(asyncio.Protocol):
    """The connection's protocol after the 101: bytes to a queue, write pauses to an event;
    the connection's end is passed on to aiohttp's protocol, which tracks the connection."""

    def __init__(self, transport: asyncio.Transport, previous: asyncio.BaseProtocol) -> None:
        self.transport, self.previous = transport, previous
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.queued = 0
        self.writable = asyncio.Event()
        self.writable.set()
        self.response: web.StreamResponse | None = None  # the prepared 101

    def data_received(self, data: bytes) -> None:
        self.queue.put_nowait(data)
        self.queued += len(data)
        if self.queued > RAW_HIGH:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.queue.put_nowait(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(None)
        self.writable.set()
        self.previous.connection_lost(exc)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        while (data := await self.queue.get()) is not None:
            self.queued -= len(data)
            if self.queued <= RAW_HIGH // 2 and not self.transport.is_closing():
                self.transport.resume_reading()
            yield data

    async def send(self, data: bytes) -> None:
        if self.transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        self.transport.write(data)
        await self.writable.wait()

    def close(self) -> None:
        self.transport.close()


async def upgrade(request: web.Request, protocol: str) -> Raw:
    """Answer 101 (`X-Stream-Protocol-Version: protocol`) and take the connection over."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client closed the connection")
    raw = Raw(transport, transport.get_protocol())  # type: ignore[arg-type]
    transport.set_protocol(raw)  # before the 101: no SPDY byte reaches aiohttp's HTTP parser
    resp = web.StreamResponse(status=101, headers={
        "Connection": "Upgrade", "Upgrade": "SPDY/3.1", HEADER: protocol})
    await resp.prepare(request)
    raw.response = resp
    return raw
