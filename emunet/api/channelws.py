"""exec/attach channels over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`; KEP-4006).

Every binary message starts with its channel (k8s.io/apimachinery pkg/util/remotecommand):
client to server 0 stdin, 4 resize (`{"Width":..,"Height":..}`), v5's 255 + channel (close that
stream: 255 0 closes stdin); server to client 1 stdout, 2 stderr, 3 the final Status, then a
close. v4 has no close message: stdin ends with the connection.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from emunet.api.channels import CLOSE, ERROR, RESIZE, STDERR, STDIN, Client, Options

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


class WsClient(Client):
    def __init__(self, ws: web.WebSocketResponse, opts: Options) -> None:
        self.ws = self.response = ws
        self.v5 = ws.ws_protocol == PROTOCOLS[0]
        self.opts = opts

    async def send(self, channel: int, data: bytes) -> None:
        if channel == STDERR and not self.opts.stderr:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_bytes(bytes([channel]) + data)

    async def inputs(self) -> AsyncIterator[tuple[int, bytes]]:
        async for msg in self.ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel in (STDIN, RESIZE):
                yield channel, data
            elif channel == CLOSE and self.v5 and data[:1] == bytes([STDIN]):
                yield CLOSE, bytes([STDIN])

    async def finish(self, status: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_bytes(bytes([ERROR]) + json.dumps(status).encode())
        await self.close()

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close()


async def accept(request: web.Request, opts: Options) -> WsClient:
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    return WsClient(ws, opts)

