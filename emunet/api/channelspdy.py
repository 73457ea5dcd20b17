"""exec/attach channels over SPDY/3.1 streams: kubectl <= 1.29, and newer kubectl when the
WebSocket upgrade is refused (client-go tools/remotecommand spdy.go, v1.go..v5.go; the kubelet's
side is pkg/kubelet/cri/streaming/remotecommand/httpstream.go).

The client POSTs with `Upgrade: SPDY/3.1` and offers `X-Stream-Protocol-Version`s; this side
answers 101 with the first one it speaks (v4, v3, v2 and channel.k8s.io; kubectl 1.29+ offers
v5 first, which over SPDY is v4 on both sides). Then the client opens one stream per channel,
each with a `streamType` header, and waits for each SYN_REPLY: `error` always, `stdin`,
`stdout`, `stderr` (none with a tty) as asked in the query, `resize` with a tty (v3 and later:
one JSON TerminalSize per line, as Go's json.Encoder writes them). As the kubelet does, the
command starts once every expected stream is there (at most CREATE_TIMEOUT); stdin's FIN
closes the command's stdin. At the end stdout and stderr get FIN, then the error stream carries
the Status and FIN: v4 the metav1.Status JSON (an exit code as NonZeroExitCode with an ExitCode
cause, which kubectl turns into its own exit code), v1-v3 the failure's message as text
(nothing on success). The client then closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from emunet.api import spdy, spdyupgrade
from emunet.api.channels import CLOSE, RESIZE, STDERR, STDIN, STDOUT, Client, Options
from emunet.api.spdysession import Closed, Session, Stream

log = logging.getLogger("emunet.api.spdy")
V4, V3, V2, V1 = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                  "channel.k8s.io")
PROTOCOLS = (V4, V3, V2, V1)
CREATE_TIMEOUT = 30.0  # the kubelet's streamCreationTimeout
CLOSE_GRACE = 5.0  # seconds the client gets to close the connection after the Status
INPUT_QUEUE = 64  # input chunks waiting for the back end before the streams stop being read
MAX_RESIZE_LINE = 4096


class SpdyClient(Client):
    def __init__(self, raw: spdyupgrade.Raw, protocol: str, opts: Options, name: str) -> None:
        assert raw.response is not None
        self.raw, self.response = raw, raw.response
        self.protocol, self.name = protocol, name
        wanted = {"stdin": opts.stdin, "stdout": opts.stdout, "stderr": opts.stderr,
                  "resize": opts.tty and protocol in (V4, V3)}
        self.expected = {"error"} | {kind for kind, on in wanted.items() if on}
        self.streams: dict[str, Stream] = {}
        self.ready = asyncio.Event()
        self.connected = False  # every expected stream arrived
        self.queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(INPUT_QUEUE)
        self.session = Session(raw.send, self._on_stream, name)
        self.runner = asyncio.create_task(self.session.run(raw.chunks()))

    async def wait_streams(self) -> bool:
        ready = asyncio.create_task(self.ready.wait())
        await asyncio.wait({ready, self.runner}, timeout=CREATE_TIMEOUT,
                           return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        self.connected = self.ready.is_set() and not self.runner.done()
        if not self.connected:  # the kubelet's words
            log.warning("%s: timed out waiting for client to create streams (has %s, wants %s)",
                        self.name, sorted(self.streams), sorted(self.expected))
        return self.connected

    async def _on_stream(self, s: Stream) -> None:
        kind = s.headers.get("streamtype", "")
        if kind in self.streams:
            await s.reset(spdy.PROTOCOL_ERROR)  # a second stream of one type
            return
        await s.reply()  # the kubelet replies to every stream, expected or not
        if kind not in self.expected:
            log.warning("%s: unexpected stream type %r", self.name, kind)
            return
        self.streams[kind] = s
        if set(self.streams) == self.expected:
            self.ready.set()
        if kind == "stdin":
            while data := await s.read():
                await self.queue.put((STDIN, data))
            if s.remote_closed:  # FIN (a reset is no end of input)
                await self.queue.put((CLOSE, bytes([STDIN])))
        elif kind == "resize":
            buf = b""
            while data := await s.read():
                *lines, buf = (buf + data).split(b"\n")
                for line in lines:
                    if line.strip():
                        await self.queue.put((RESIZE, line.strip()))
                if len(buf) > MAX_RESIZE_LINE:
                    buf = b""

    async def send(self, channel: int, data: bytes) -> None:
        s = self.streams.get({STDOUT: "stdout", STDERR: "stderr"}.get(channel, ""))
        if s is not None:
            with contextlib.suppress(Closed):
                await s.write(data)

    async def inputs(self) -> AsyncIterator[tuple[int, bytes]]:
        get: asyncio.Future | None = None
        try:
            while True:
                if not self.queue.empty():
                    yield self.queue.get_nowait()
                    continue
                if self.runner.done():
                    return
                get = asyncio.ensure_future(self.queue.get())
                await asyncio.wait({get, self.runner}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    return
                item, get = get.result(), None
                yield item
        finally:  # the consumer stopped (or was cancelled) while waiting
            if get is not None:
                get.cancel()

    async def finish(self, status: dict[str, Any]) -> None:
        with contextlib.suppress(Closed):
            for kind in ("stdout", "stderr"):
                if (s := self.streams.get(kind)) is not None:
                    await s.close()
            if (err := self.streams.get("error")) is not None:
                if self.protocol == V4:
                    body = json.dumps(status).encode()
                else:  # the kubelet's v1WriteStatusFunc: the error's text, nothing on success
                    body = (b"" if status.get("status") == "Success"
                            else status.get("message", "").encode())
                if body:
                    await err.write(body)
                await err.close()
        # the client closes the connection once it has read everything
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.runner), CLOSE_GRACE)
        await self.close()

    async def close(self) -> None:
        self.raw.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.runner), CLOSE_GRACE)
        if not self.runner.done():
            self.runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.runner


async def accept(request: web.Request, opts: Options, name: str) -> SpdyClient:
    """The 101 and the client's streams; `connected` false when they did not all come."""
    protocol = spdyupgrade.negotiate(request, PROTOCOLS)
    raw = await spdyupgrade.upgrade(request, protocol)
    log.info("%s: SPDY/3.1 (%s) on the upgraded connection", name, protocol)
    client = SpdyClient(raw, protocol, opts, name)
    await client.wait_streams()
    return client
