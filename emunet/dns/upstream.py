"""Talking to upstream resolvers: one query over UDP or TCP, and the records of a reply.

The forward path relays a client's query as is (server.forward). The ExternalName chase asks a
question of its own: CoreDNS's kubernetes plugin answers an ExternalName whose target lies
outside the cluster domain with the CNAME *and* what its upstream says about the target (the
`upstream` lookup, on by default since CoreDNS 1.6: plugin/pkg/upstream, through its own
forward), so this module also builds that query and reads the answer records back.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from emunet.dns import wire
from emunet.dns.wire import CLASS_IN, HEADER, QFIXED, RD, RR, RRFIXED

TCP_LEN = struct.Struct("!H")  # RFC 1035 4.2.2 / RFC 7766: two-byte length prefix
MAX_POINTERS = 16  # compression pointers followed per name: a loop is malformed, not infinite


class _OneShot(asyncio.DatagramProtocol):
    """Waits for the upstream's reply with our query's ID (RFC 5452: check the ID)."""

    def __init__(self, fut: asyncio.Future, ident: bytes) -> None:
        self.fut, self.ident = fut, ident

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        if data[:2] == self.ident and not self.fut.done():
            self.fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)


async def ask_udp(host: str, port: int, data: bytes) -> bytes:
    """One query to an upstream over UDP; the first reply with our ID."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bytes] = loop.create_future()
    tr, _ = await loop.create_datagram_endpoint(lambda: _OneShot(fut, data[:2]),
                                                remote_addr=(host, port))
    try:
        tr.sendto(data)
        return await fut
    finally:
        tr.close()


async def ask_tcp(host: str, port: int, data: bytes) -> bytes:
    """One query to an upstream over TCP."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(TCP_LEN.pack(len(data)) + data)
        await writer.drain()
        reply = await reader.readexactly(TCP_LEN.unpack(await reader.readexactly(2))[0])
        if reply[:2] != data[:2]:
            raise ValueError("reply ID does not match the query's")
        return reply
    finally:
        writer.close()


def host_port(upstream: str) -> tuple[str, int]:
    """"192.0.2.1" or "192.0.2.1:5353" (an IPv6 address has no port here)."""
    host, _, port = upstream.rpartition(":") if upstream.count(":") == 1 else (upstream, "", "53")
    return host, int(port)


def build_query(name: str, qtype: int, ident: int) -> bytes:
    """A recursive query (RD set) for one name, class IN, no EDNS."""
    labels = b"".join(bytes((len(p),)) + p.encode("latin-1") for p in name.split(".") if p)
    return HEADER.pack(ident, RD, 1, 0, 0, 0) + labels + b"\0" + QFIXED.pack(qtype, CLASS_IN)


def _name(data: bytes, off: int) -> tuple[str, int]:
    """A possibly compressed name (RFC 1035 4.1.4) and the offset after it where it started."""
    parts: list[str] = []
    after = -1
    for _ in range(MAX_POINTERS):
        while True:
            n = data[off]
            if n & 0xC0 == 0xC0:
                if after < 0:
                    after = off + 2
                off = ((n & 0x3F) << 8) | data[off + 1]
                break
            if n > 63:
                raise wire.FormErr("extended label type")
            if n == 0:
                return ".".join(parts).lower(), (after if after >= 0 else off + 1)
            parts.append(data[off + 1:off + 1 + n].decode("latin-1").replace(".", "\\046"))
            off += 1 + n
    raise wire.FormErr("compression pointer loop")


def truncated(reply: bytes) -> bool:
    """The reply's TC bit (RFC 1035 4.1.1): its answer is incomplete, a client retries over TCP."""
    return len(reply) >= 4 and bool(HEADER.unpack_from(reply)[1] & wire.TC)


def answer_records(reply: bytes, ident: int) -> list[RR]:
    """The answer section's A, AAAA and CNAME records of an upstream reply to our query
    `ident` (what a chase of an A/AAAA question can use; other types are left out).
    Raises ValueError on a reply that is not for us or does not parse."""
    try:
        rid, flags, qd, an, _, _ = HEADER.unpack_from(reply)
        if rid != ident or not flags & wire.QR:
            raise ValueError("not the reply to our query")
        off = 12
        for _ in range(qd):
            off = _name(reply, off)[1] + 4
        out: list[RR] = []
        for _ in range(an):
            owner, off = _name(reply, off)
            rtype, _, ttl, rdlen = RRFIXED.unpack_from(reply, off)
            off += 10
            rdata = reply[off:off + rdlen]
            if len(rdata) != rdlen:
                raise ValueError("rdata runs past the end")
            if rtype == wire.A and rdlen == 4:
                out.append((owner, rtype, ttl, socket.inet_ntoa(rdata)))
            elif rtype == wire.AAAA and rdlen == 16:
                out.append((owner, rtype, ttl, socket.inet_ntop(socket.AF_INET6, rdata)))
            elif rtype == wire.CNAME:
                out.append((owner, rtype, ttl, _name(reply, off)[0]))
            off += rdlen
        return out
    except (IndexError, struct.error, wire.FormErr) as e:
        raise ValueError(f"malformed upstream reply: {e}") from e
