"""pods/portforward over the WebSocket channel protocol (`v4.channel.k8s.io`, the official
Python client's `kubernetes.stream.portforward`), in-process: the aiohttp app against a client
that speaks the frames as that client reads them (a channel byte; each channel's first message
the port, little endian); the pod is a local asyncio server, so no root is needed."""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType

from emunet.api import portforwardws
from tests.unit.test_api_portforward import BLAST, BLAST_SIZE, CLOSED, ECHO, HTTP, URL, api, pod

__all__ = ["api", "pod"]  # fixtures


async def _connect(api, ports: str):
    ws = await api.ws_connect(f"{URL}?ports={ports}",
                              protocols=("v5.channel.k8s.io", portforwardws.PROTOCOL))
    assert ws.protocol == portforwardws.PROTOCOL  # the kubelet speaks v4 for port-forward
    return ws


async def _frames(ws) -> list[bytes]:
    out = []
    while (msg := await ws.receive(timeout=5)).type == WSMsgType.BINARY:
        out.append(msg.data)
    return out


async def test_each_channel_opens_with_its_port_then_data_flows(api, pod):
    ws = await _connect(api, f"{HTTP},{ECHO}")
    assert [await ws.receive_bytes() for _ in range(4)] == [
        bytes((0, HTTP, 0)), bytes((1, HTTP, 0)), bytes((2, ECHO, 0)), bytes((3, ECHO, 0))]
    await ws.send_bytes(b"\x00GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await ws.send_bytes(b"\x02ping")
    got = b""
    while not got.endswith(b"hello"):
        msg = await ws.receive_bytes(timeout=5)
        assert msg[0] == 0, msg  # the HTTP answer on port 0's data channel
        got += msg[1:]
    assert got.startswith(b"HTTP/1.1 200 OK")
    assert await ws.receive_bytes(timeout=5) == b"\x02ping"  # the echo on port 1's
    await ws.close()
    for _ in range(100):  # the pod side ends when the client leaves (its FIN, then ours)
        if pod:
            break
        await asyncio.sleep(0.02)
    assert pod == [b"ping"]


async def test_a_large_answer_arrives_whole_and_the_session_ends_with_it(api, pod):
    ws = await _connect(api, str(BLAST))
    frames = await _frames(ws)
    assert frames[:2] == [bytes((0, BLAST, 0)), bytes((1, BLAST, 0))]
    body = b"".join(f[1:] for f in frames[2:] if f[0] == 0)
    assert body == bytes(i % 251 for i in range(BLAST_SIZE))  # then the WebSocket closed


async def test_a_refused_port_is_said_on_its_error_channel(api, pod):
    ws = await _connect(api, str(CLOSED))
    frames = await _frames(ws)
    assert frames[:2] == [bytes((0, CLOSED, 0)), bytes((1, CLOSED, 0))]
    assert frames[2][0] == 1 and b"connect: connection refused" in frames[2]


async def test_ports_are_required_and_checked(api):
    for query, word in (("", "at least one port"), ("?ports=http", "invalid port"),
                        ("?ports=70000", "must be 1-65535")):
        r = await api.get(f"{URL}{query}", headers={
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": portforwardws.PROTOCOL})
        assert r.status == 400 and word in (await r.json())["message"], query
