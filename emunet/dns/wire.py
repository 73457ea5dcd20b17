"""DNS wire codec (RFC 1035 section 4, RFC 6891 EDNS0): parse queries, encode responses.

Hand-rolled with precompiled `struct.Struct` codecs because it is the responder's hot path;
Scapy's DNS layer is the oracle the tests compare against. Names are handled as lowercased,
dot-joined strings without the trailing dot ("" is the root). Only what a server needs is here:
a query parser that refuses anything malformed with `FormErr`, and an encoder with name
compression (RFC 1035 section 4.1.4) seeded with the question, so an answer owned by the
question's name is a pointer to it and echoes the client's spelling (0x20 case) for free.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from emunet.errors import EmunetError

HEADER = struct.Struct("!6H")  # RFC 1035 4.1.1: id, flags, qd/an/ns/ar counts
QFIXED = struct.Struct("!HH")  # RFC 1035 4.1.2: qtype, qclass
RRFIXED = struct.Struct("!HHIH")  # RFC 1035 4.1.3: type, class, ttl, rdlength
SRVFIXED = struct.Struct("!HHH")  # RFC 2782: priority, weight, port
SOAFIXED = struct.Struct("!5I")  # RFC 1035 3.3.13: serial, refresh, retry, expire, minimum
OPTFIXED = struct.Struct("!BHHIH")  # RFC 6891 6.1.2: root name, type, size, ttl, rdlength

CLASS_IN = 1
CLASS_ANY = 255
A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT = 1, 2, 5, 6, 12, 15, 16, 28, 33, 41
IXFR, AXFR, ANY = 251, 252, 255

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16  # RFC 6891 6.1.3: extended rcode, carried in the OPT TTL's top byte
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
               5: "REFUSED", 16: "BADVERS"}

# Header flag bits (RFC 1035 4.1.1).
QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
OPCODE_SHIFT = 11

MAX_UDP = 512  # RFC 1035 4.2.1, without EDNS0
OUR_EDNS_SIZE = 1232  # DNS flag day 2020: the payload size we advertise and accept at most

# One resource record: (owner, type, ttl, rdata). rdata by type: A/AAAA an address string;
# NS/CNAME/PTR a name; SRV (priority, weight, port, target); SOA (mname, rname, serial,
# refresh, retry, expire, minimum); TXT a tuple of strings.
RR = tuple[str, int, int, object]


class FormErr(EmunetError):
    """The message is not a query we can parse (answered with FORMERR)."""


@dataclass(slots=True)
class Query:
    id: int
    flags: int
    qname: str  # lowercased, dot-joined, no trailing dot
    qtype: int
    qclass: int
    question: bytes  # the question section exactly as received (the client's case)
    labels: tuple[int, ...]  # wire length of each label, to seed compression offsets
    edns_size: int | None = None  # None: no OPT record (RFC 6891)
    edns_version: int = 0
    edns_do: bool = False

    @property
    def opcode(self) -> int:
        return (self.flags >> OPCODE_SHIFT) & 0xF


def parse_header(data: bytes) -> tuple[int, int, int, int, int, int] | None:
    """The six header fields, or None when there are not even 12 bytes (then: drop)."""
    if len(data) < 12:
        return None
    return HEADER.unpack_from(data)


def _read_qname(data: bytes, off: int) -> tuple[str, tuple[int, ...], int]:
    """The question's name: no compression (nothing precedes it to point at)."""
    parts: list[str] = []
    lens: list[int] = []
    end = len(data)
    total = 0
    while True:
        if off >= end:
            raise FormErr("name runs past the end")
        n = data[off]
        if n == 0:
            return ".".join(parts), tuple(lens), off + 1
        if n > 63:
            raise FormErr("compressed or extended label in the question")
        label = data[off + 1:off + 1 + n]
        if len(label) != n:
            raise FormErr("label runs past the end")
        total += n + 1
        if total > 254:  # RFC 1035 2.3.4: 255 octets including the root
            raise FormErr("name too long")
        # A '.' inside a label must not split it; keep it escaped as in presentation form.
        parts.append(label.lower().decode("latin-1").replace(".", "\\046"))
        lens.append(n)
        off += 1 + n


def _skip_name(data: bytes, off: int) -> int:
    """The offset after a (possibly compressed) name in a record we do not interpret."""
    end = len(data)
    while True:
        if off >= end:
            raise FormErr("name runs past the end")
        n = data[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            if off + 2 > end:
                raise FormErr("pointer runs past the end")
            return off + 2
        if n > 63:
            raise FormErr("extended label type")
        off += 1 + n


def parse_query(data: bytes) -> Query:
    """Parse a query whose header is known to be there; raise FormErr on anything malformed."""
    ident, flags, qd, an, ns, ar = HEADER.unpack_from(data)
    if qd != 1:
        raise FormErr("QDCOUNT must be 1")
    qname, labels, off = _read_qname(data, 12)
    if off + 4 > len(data):
        raise FormErr("question runs past the end")
    qtype, qclass = QFIXED.unpack_from(data, off)
    off += 4
    q = Query(ident, flags, qname, qtype, qclass, data[12:off], labels)
    for i in range(an + ns + ar):
        start = off
        off = _skip_name(data, off)
        if off + 10 > len(data):
            raise FormErr("record runs past the end")
        rtype, rclass, ttl, rdlen = RRFIXED.unpack_from(data, off)
        off += 10 + rdlen
        if off > len(data):
            raise FormErr("rdata runs past the end")
        if rtype == OPT:
            # RFC 6891 6.1.1: one OPT, owned by the root, in the additional section only.
            if i < an + ns or q.edns_size is not None or data[start] != 0:
                raise FormErr("misplaced OPT record")
            q.edns_size = max(rclass, MAX_UDP)  # 6.2.5: values below 512 mean 512
            q.edns_version = (ttl >> 16) & 0xFF
            q.edns_do = bool(ttl & 0x8000)
    if off != len(data):
        raise FormErr("trailing bytes")
    return q


class Encoder:
    """Appends names and records to a message body with RFC 1035 4.1.4 compression."""

    __slots__ = ("buf", "base", "comp")

    def __init__(self, qname: str, labels: tuple[int, ...]) -> None:
        self.buf = bytearray()
        self.base = 12 + sum(n + 1 for n in labels) + 1 + 4  # body starts after the question
        self.comp: dict[str, int] = {}
        off = 12
        parts = qname.split(".") if qname else []
        for i, n in enumerate(labels):
            self.comp[".".join(parts[i:])] = off
            off += n + 1

    def name(self, name: str, compress: bool = True) -> None:
        parts = name.split(".") if name else []
        for i in range(len(parts)):
            suffix = ".".join(parts[i:])
            ptr = self.comp.get(suffix)
            if ptr is not None and compress:
                self.buf += (0xC000 | ptr).to_bytes(2, "big")
                return
            here = self.base + len(self.buf)
            if here < 0x4000 and suffix not in self.comp:
                self.comp[suffix] = here
            label = parts[i].replace("\\046", ".").encode("latin-1")
            self.buf.append(len(label))
            self.buf += label
        self.buf.append(0)

    def rr(self, rr: RR) -> None:
        owner, rtype, ttl, rdata = rr
        self.name(owner)
        head = len(self.buf)
        self.buf += RRFIXED.pack(rtype, CLASS_IN, ttl, 0)
        start = len(self.buf)
        if rtype == A:
            self.buf += socket.inet_aton(rdata)  # type: ignore[arg-type]
        elif rtype == AAAA:
            self.buf += socket.inet_pton(socket.AF_INET6, rdata)  # type: ignore[arg-type]
        elif rtype in (NS, CNAME, PTR):
            self.name(rdata)  # type: ignore[arg-type]
        elif rtype == SRV:
            prio, weight, port, target = rdata  # type: ignore[misc]
            self.buf += SRVFIXED.pack(prio, weight, port)
            self.name(target, compress=False)  # RFC 2782: the target is never compressed
        elif rtype == SOA:
            mname, rname, *nums = rdata  # type: ignore[misc]
            self.name(mname)
            self.name(rname)
            self.buf += SOAFIXED.pack(*nums)
        elif rtype == TXT:
            for s in rdata:  # type: ignore[union-attr]
                b = s.encode()
                self.buf.append(len(b))
                self.buf += b
        else:
            raise ValueError(f"cannot encode record type {rtype}")
        struct.pack_into("!H", self.buf, head + 8, len(self.buf) - start)


def encode_body(q: Query, answer: list[RR], authority: list[RR],
                additional: list[RR]) -> bytes:
    """The sections after the question (no OPT), valid for any spelling of q's name."""
    enc = Encoder(q.qname, q.labels)
    for rr in answer:
        enc.rr(rr)
    for rr in authority:
        enc.rr(rr)
    for rr in additional:
        enc.rr(rr)
    return bytes(enc.buf)


def opt_record(size: int, ext_rcode: int = 0) -> bytes:
    """Our OPT pseudo-record (RFC 6891 6.1.2): payload size, extended rcode, version 0."""
    return OPTFIXED.pack(0, OPT, size, (ext_rcode >> 4) << 24, 0)


def error_response(data: bytes, rcode: int) -> bytes:
    """A header-only error reply (RFC 1035 4.1.1): ID, opcode and RD copied, QR and RA set."""
    ident, flags, *_ = HEADER.unpack_from(data)
    return HEADER.pack(ident, QR | (flags & (0x7800 | RD)) | RA | (rcode & 0xF), 0, 0, 0, 0)
