"""pods/portforward in-process: the aiohttp app against a client-side SPDY speaker built on the
same codec, over WebSocket (kubectl 1.31+) and over the raw upgraded connection (the fallback);
the pod is a local asyncio server (the netns connect is replaced), so no root is needed."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from emunet.api import portforward, spdy, spdysession
from emunet.api.server import VIEW, make_app
from emunet.api.view import View
from tests.unit.test_api import state

URL = "/api/v1/namespaces/blog-website/pods/monospaced-test/portforward"
HTTP, ECHO, BLAST, CLOSED = 80, 7, 9, 81
BLAST_SIZE = 300 * 1024


class Speaker:
    """kubectl's side of a SPDY session: frames out, frames in (kept in arrival order)."""

    def __init__(self, send: Callable[[bytes], Awaitable[object]],
                 recv: Callable[[], Awaitable[bytes]]) -> None:
        self._send, self._recv = send, recv
        self.codec = spdy.Codec()
        self.got: list[spdy.Frame] = []
        self.eof = False

    async def send(self, *frames: spdy.Frame, piece: int = 0) -> None:
        wire = b"".join(self.codec.encode(f) for f in frames)
        step = piece or len(wire)
        for i in range(0, len(wire), step):  # piece: a frame spread over several messages
            await self._send(wire[i:i + step])

    async def until(self, done: Callable[[list[spdy.Frame]], bool], timeout: float = 5
                    ) -> list[spdy.Frame]:
        async def loop() -> None:
            while not done(self.got):
                data = await self._recv()
                if not data:
                    self.eof = True
                    return
                self.got += self.codec.feed(data)
        await asyncio.wait_for(loop(), timeout)
        return self.got

    def data(self, sid: int) -> bytes:
        return b"".join(f.data for f in self.got if isinstance(f, spdy.Data)
                        and f.stream_id == sid)

    def fin(self, sid: int) -> bool:
        return any(isinstance(f, spdy.Data) and f.stream_id == sid and f.fin for f in self.got)

    async def open_pair(self, rid: int, port: int, piece: int = 0) -> tuple[int, int]:
        err, data = 4 * rid + 1, 4 * rid + 3
        for sid, kind in ((err, "error"), (data, "data")):
            await self.send(spdy.SynStream(sid, {"streamtype": kind, "port": str(port),
                                                 "requestid": str(rid)}), piece=piece)
            await self.until(lambda g, s=sid: spdy.SynReply(s, {}) in g)
        await self.send(spdy.Data(err, b"", fin=True))  # as kubectl: it only reads errors
        return err, data


_STATE = []


@pytest.fixture
async def api():
    """The app over one planned state (port-forward changes nothing in it: planned once)."""
    if not _STATE:
        _STATE.append(state())
    async with TestClient(TestServer(make_app(View(None, state=_STATE[0])))) as c:
        yield c


@pytest.fixture
async def pod(monkeypatch):
    """Local servers standing in for the pod's ports; what each connection received."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     port: int) -> None:
        if port == HTTP:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        elif port == BLAST:
            writer.write(bytes(i % 251 for i in range(BLAST_SIZE)))
        else:
            got = b""
            while chunk := await reader.read(65536):
                got += chunk
                writer.write(chunk)
            received.append(got)
        await writer.drain()
        writer.close()

    servers = {}
    for port in (HTTP, ECHO, BLAST):
        srv = await asyncio.start_server(lambda r, w, p=port: handle(r, w, p), "127.0.0.1", 0)
        servers[port] = srv

    async def connect(self, port: int):
        if port not in servers:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        return await asyncio.open_connection(
            "127.0.0.1", servers[port].sockets[0].getsockname()[1])

    monkeypatch.setattr(portforward.Forwarder, "connect", connect)
    yield received
    for srv in servers.values():
        srv.close()


async def websocket(api) -> Speaker:
    ws = await api.ws_connect(URL, protocols=(portforward.WS_PROTOCOL,))
    assert ws.protocol == portforward.WS_PROTOCOL

    async def recv() -> bytes:
        msg = await ws.receive()
        return msg.data if msg.type == WSMsgType.BINARY else b""
    sp = Speaker(ws.send_bytes, recv)
    sp.ws = ws  # type: ignore[attr-defined]
    return sp


async def raw(api) -> Speaker:
    """The fallback kubectl takes when the WebSocket upgrade is refused."""
    reader, writer = await asyncio.open_connection(api.host, api.port)
    writer.write(f"POST {URL} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                 "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n"
                 "Content-Length: 0\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
    assert head.startswith("http/1.1 101") and "upgrade: spdy/3.1" in head
    assert "x-stream-protocol-version: portforward.k8s.io" in head

    async def send(data: bytes) -> None:
        writer.write(data)
        await writer.drain()
    sp = Speaker(send, lambda: reader.read(65536))
    sp.writer = writer  # type: ignore[attr-defined]
    return sp


TRANSPORTS = pytest.mark.parametrize("connect", [websocket, raw], ids=["websocket", "spdy"])


@TRANSPORTS
async def test_two_connections_reach_the_pod(api, pod, connect, caplog):
    sp = await connect(api)
    for rid in (0, 1):  # piece=5: every frame of the second pair spans several messages
        err, data = await sp.open_pair(rid, HTTP, piece=5 if rid else 0)
        await sp.send(spdy.Data(data, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        await sp.until(lambda g, e=err: sp.fin(e))
        assert sp.data(data).endswith(b"\r\n\r\nhello") and sp.fin(data)
        assert sp.data(err) == b""
        # FIN on data before FIN on error (the kubelet's order)
        fins = [f.stream_id for f in sp.got if isinstance(f, spdy.Data) and f.fin]
        assert fins.index(data) < fins.index(err)
        await sp.send(spdy.RstStream(data, spdy.CANCEL))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@TRANSPORTS
async def test_a_port_with_nothing_listening_is_an_error_on_the_error_stream(api, pod,
                                                                              connect):
    sp = await connect(api)
    err, data = await sp.open_pair(0, CLOSED)
    await sp.until(lambda g: sp.fin(err))
    message = sp.data(err).decode()
    assert message.startswith(f"error forwarding port {CLOSED} to pod ")
    assert "dial tcp4 127.0.0.1:81: connect: connection refused" in message
    assert sp.fin(data) and sp.data(data) == b""


@TRANSPORTS
async def test_a_large_echo_is_byte_identical_and_windows_are_given_back(api, pod,
                                                                          connect):
    sp = await connect(api)
    err, data = await sp.open_pair(0, ECHO)
    payload = bytes(range(256)) * 4096  # 1 MiB each way
    for i in range(0, len(payload), 16384):
        await sp.send(spdy.Data(data, payload[i:i + 16384]))
        await sp.send(spdy.WindowUpdate(data, 16384), spdy.WindowUpdate(0, 16384))
    await sp.send(spdy.Data(data, b"", fin=True))
    await sp.until(lambda g: sp.fin(err), timeout=20)
    assert sp.data(data) == payload and pod == [payload]
    ups = [f for f in sp.got if isinstance(f, spdy.WindowUpdate)]
    assert sum(u.delta for u in ups if u.stream_id == data) >= len(payload) - spdy.INITIAL_WINDOW
    assert sum(u.delta for u in ups if u.stream_id == 0) >= len(payload) - spdy.INITIAL_WINDOW


async def test_a_peer_that_keeps_windows_is_sent_no_more_than_its_window(api, pod,
                                                                        monkeypatch):
    monkeypatch.setattr(spdysession, "PEER_GRACE", 0.1)
    sp = await websocket(api)
    await sp.send(spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: spdy.INITIAL_WINDOW}))
    err, data = await sp.open_pair(0, BLAST)
    await sp.until(lambda g: len(sp.data(data)) >= spdy.INITIAL_WINDOW)
    with pytest.raises(TimeoutError):  # past PEER_GRACE too: the window is kept
        await sp.until(lambda g: len(sp.data(data)) > spdy.INITIAL_WINDOW,
                       timeout=0.3)
    while not sp.fin(data):
        n = len(sp.data(data))
        await sp.send(spdy.WindowUpdate(data, 32768), spdy.WindowUpdate(0, 32768))
        await sp.until(lambda g, n=n: len(sp.data(data)) > n or sp.fin(data))
        assert len(sp.data(data)) <= n + 32768 + spdy.INITIAL_WINDOW
    assert sp.data(data) == bytes(i % 251 for i in range(BLAST_SIZE))


@TRANSPORTS
async def test_a_peer_that_never_updates_windows_is_not_stalled(api, pod, connect,
                                                                monkeypatch):
    # moby/spdystream (kubectl) sends no WINDOW_UPDATE: after PEER_GRACE windows are not kept
    monkeypatch.setattr(spdysession, "PEER_GRACE", 0.05)
    sp = await connect(api)
    err, data = await sp.open_pair(0, BLAST)
    await sp.until(lambda g: sp.fin(err))
    assert sp.data(data) == bytes(i % 251 for i in range(BLAST_SIZE))


@TRANSPORTS
async def test_a_reset_data_stream_closes_the_pod_connection(api, pod, connect):
    sp = await connect(api)
    err, data = await sp.open_pair(0, ECHO)
    await sp.send(spdy.Data(data, b"abc"))
    await sp.until(lambda g: sp.data(data) == b"abc")
    await sp.send(spdy.RstStream(data, spdy.CANCEL))
    await sp.until(lambda g: sp.fin(err))
    async def closed() -> None:
        while not pod:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(closed(), 5)  # the pod's server saw the connection end
    assert pod == [b"abc"]


async def test_pings_are_echoed_and_bad_streams_refused(api, pod):
    sp = await websocket(api)
    await sp.send(spdy.Ping(1))
    await sp.until(lambda g: spdy.Ping(1) in g)
    await sp.send(spdy.SynStream(1, {"streamtype": "data", "port": "http", "requestid": "0"}),
                  spdy.SynStream(3, {"streamtype": "stdin", "port": "80", "requestid": "0"}))
    await sp.until(lambda g: spdy.RstStream(3, spdy.PROTOCOL_ERROR) in g)
    assert spdy.RstStream(1, spdy.PROTOCOL_ERROR) in sp.got


async def test_a_stream_left_without_its_pair_times_out(api, pod, monkeypatch):
    monkeypatch.setattr(portforward, "PAIR_TIMEOUT", 0.1)
    sp = await websocket(api)
    await sp.send(spdy.SynStream(1, {"streamtype": "error", "port": "80", "requestid": "4"}))
    await sp.until(lambda g: sp.fin(1))
    assert sp.data(1) == b"(request=4) timed out waiting for streams"


async def test_the_client_going_away_lets_open_streams_finish(api, pod):
    sp = await websocket(api)
    err, data = await sp.open_pair(0, ECHO)
    await sp.send(spdy.GoAway(3), spdy.Data(data, b"still here"), spdy.Data(data, b"", fin=True))
    await sp.until(lambda g: sp.fin(err))
    assert sp.data(data) == b"still here"


@TRANSPORTS
async def test_the_server_stopping_sends_goaway_and_closes(api, pod, connect, caplog):
    sp = await connect(api)
    err, data = await sp.open_pair(0, ECHO)
    await sp.send(spdy.Data(data, b"x"))
    await sp.until(lambda g: sp.data(data) == b"x")
    await portforward.shutdown(api.app)
    await sp.until(lambda g: False)  # returns at the connection's end
    assert sp.eof and spdy.GoAway(3, spdy.GOAWAY_OK) in sp.got
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@TRANSPORTS
async def test_the_pod_going_away_ends_the_session(api, pod, connect, monkeypatch):
    monkeypatch.setattr(portforward, "POD_POLL", 0.02)
    sp = await connect(api)
    err, data = await sp.open_pair(0, ECHO)
    del api.server.app[VIEW].objs["pods"][("blog-website", "monospaced-test")]
    await sp.until(lambda g: False)  # returns at the connection's end
    assert sp.eof and spdy.GoAway(3, spdy.GOAWAY_OK) in sp.got


async def test_a_garbled_session_is_a_protocol_error_goaway(api, pod):
    sp = await websocket(api)
    await sp._send(b"\x80\x02\x00\x01\x00\x00\x00\x00")  # SPDY/2
    await sp.until(lambda g: False)
    assert sp.got == [spdy.GoAway(0, spdy.GOAWAY_PROTOCOL_ERROR)]


async def test_without_upgrade_or_subprotocol_the_answer_is_a_status(api):
    resp = await api.post(URL)
    assert resp.status == 400
    assert (await resp.json())["message"] == "Upgrade request required"
    resp = await api.get(URL, headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                       "Sec-WebSocket-Version": "13",
                                       "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                       "Sec-WebSocket-Protocol": "v5.channel.k8s.io"})
    assert resp.status == 400 and "SPDY/3.1+portforward.k8s.io" in (await resp.json())["message"]
    resp = await api.post(URL, headers={"Upgrade": "SPDY/3.1", "Connection": "Upgrade",
                                        "X-Stream-Protocol-Version": "v4.channel.k8s.io"})
    assert resp.status == 403
    resp = await api.post(URL.replace("monospaced-test", "nope"))
    assert resp.status == 404
