"""The DNS responder on loopback for the tests: a free port, the server serving a test
cluster, and one-query UDP/TCP clients and a TCP-only upstream (no root: 127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from scapy.layers.dns import DNS

from emunet.dns.server import DnsServer
from emunet.state import codec
from tests.unit.dns_cluster import cluster


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


@contextlib.asynccontextmanager
async def serving(tmp_path, upstream_port: int | None = None):
    """Our server on loopback (stats in tmp_path/dns.json), with one upstream at
    127.0.0.1:upstream_port if given."""
    state = tmp_path / "state.json"
    ups = () if upstream_port is None else (f"127.0.0.1:{upstream_port}",)
    state.write_text(codec.to_json(cluster(upstreams=ups)))
    srv = DnsServer(state, "127.0.0.1", free_port(), tmp_path / "dns.json")
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def udp_ask(port: int, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, d, addr):
            if not fut.done():
                fut.set_result(d)

    tr, _ = await loop.create_datagram_endpoint(P, remote_addr=("127.0.0.1", port))
    try:
        tr.sendto(data)
        return await asyncio.wait_for(fut, 2)
    finally:
        tr.close()


async def tcp_ask(port: int, data: bytes) -> bytes:
    """One query over TCP (RFC 7766 length prefix), its reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        (n,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(n)
    finally:
        writer.close()


async def tcp_upstream(answer):
    """A TCP-only upstream on a free port answering each query with answer(query)."""
    async def serve(reader, writer):
        (n,) = struct.unpack("!H", await reader.readexactly(2))
        out = bytes(answer(DNS(await reader.readexactly(n))))
        writer.write(struct.pack("!H", len(out)) + out)
        await writer.drain()
        writer.close()
    port = free_port()
    return port, await asyncio.start_server(serve, "127.0.0.1", port)
