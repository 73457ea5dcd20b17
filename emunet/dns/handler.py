"""Bytes in, bytes out: one DNS message handled against the current Zone, with a cache.

The sans-IO core of the server: protocol checks (RFC 1035 4.1.1, RFC 6891 EDNS0), the
precomputed-answer cache, truncation (RFC 1035 4.2.1, RFC 2181 9) and counters. The answer
sections for a question are encoded once and cached under the lowercased question: compression
pointers to the question make the cached bytes valid for every spelling of the name, so a hit
costs one header pack and two concatenations. In front of it, UDP replies are also cached whole
under the query's bytes after the ID (flags, counts, question as spelt, OPT): the reply depends on
nothing else, so a repeated query costs one slice, one dict lookup and one concatenation (the
precomputed-answer lever the benchmark measures). `load` swaps the zone and drops both caches, so
a state reload shows in the very next answer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from emunet.dns import wire
from emunet.dns.resolver import resolve, soa
from emunet.dns.wire import AA, HEADER, OPCODE_SHIFT, QR, RA, RD, RR, TC, FormErr, Query
from emunet.dns.zone import Zone

FORWARD = object()  # handle() result: not our zone, send the query to an upstream as is


@dataclass(frozen=True, slots=True)
class Chase:
    """handle() result: our answer ends in a CNAME to `target`, outside the cluster domain.

    CoreDNS's kubernetes plugin looks such a target up through its own forward plugin and
    answers the CNAME followed by the upstream's answer records; when that lookup fails it
    drops the CNAME (plugin/backend_lookup.go), which leaves NODATA. The server does the
    lookup and calls `Handler.chased`. Never cached whole: the upstream's part may change.
    """

    query: Query
    answer: tuple[RR, ...]
    nodata: tuple[int, int, int, int, bytes]  # the entry for a failed lookup
    target: str


@dataclass(frozen=True, slots=True)
class _ChaseEntry:
    answer: tuple[RR, ...]
    nodata: tuple[int, int, int, int, bytes]
    target: str
MAX_CACHE = 50_000  # entries; question names come from clients, so the cache is bounded


class Handler:
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        # (qname, qtype, qclass) -> (flag bits, ancount, nscount, arcount, body) or FORWARD
        self.cache: dict[tuple[str, int, int], object] = {}
        # query bytes after the ID -> (reply bytes after the ID, rcode name); UDP replies only
        self.wire: dict[bytes, tuple[bytes, str]] = {}
        self.counters: Counter[str] = Counter()

    def load(self, zone: Zone) -> None:
        self.zone = zone
        self.cache = {}
        self.wire = {}

    def handle(self, data: bytes, udp: bool = True) -> bytes | object | None:
        """The reply to one message, FORWARD, or None to drop it silently."""
        counters = self.counters
        counters["queries"] += 1
        if udp:
            hit = self.wire.get(data[2:])
            if hit is not None:
                counters[hit[1]] += 1
                return data[:2] + hit[0]
        out = self._handle(data, udp)
        if out is None:
            counters["dropped"] += 1
        elif out is FORWARD:
            counters["forwarded"] += 1
        elif type(out) is Chase:
            counters["chased"] += 1
        else:
            rcode = self.count_reply(out)  # type: ignore[arg-type]
            if udp and len(data) >= 12:
                if len(self.wire) >= MAX_CACHE:
                    self.wire = {}
                self.wire[data[2:]] = (out[2:], rcode)  # type: ignore[index]
        return out

    def count_reply(self, reply: bytes) -> str:
        rcode = reply[3] & 0xF if len(reply) >= 4 else wire.SERVFAIL
        name = wire.RCODE_NAMES.get(rcode, str(rcode))
        self.counters[name] += 1
        return name

    def servfail(self, data: bytes) -> bytes:
        """The reply when forwarding failed (upstream timeout or error)."""
        out = _reply_or_error(data, wire.SERVFAIL)
        self.count_reply(out)
        return out

    def _handle(self, data: bytes, udp: bool) -> bytes | object | None:
        header = wire.parse_header(data)
        if header is None or header[1] & QR:
            return None  # not even a header, or a response: never answer (no reflection loops)
        if (header[1] >> OPCODE_SHIFT) & 0xF != 0:
            return wire.error_response(data, wire.NOTIMP)  # only QUERY (RFC 1035 4.1.1)
        try:
            q = wire.parse_query(data)
        except FormErr:
            return wire.error_response(data, wire.FORMERR)
        if q.edns_version != 0:  # RFC 6891 6.1.3: we speak version 0 only
            return self._build(q, (0, 0, 0, 0, b""), udp, ext_rcode=wire.BADVERS)
        key = (q.qname, q.qtype, q.qclass)
        entry = self.cache.get(key)
        if entry is None:
            entry = self._compute(q)
            if len(self.cache) >= MAX_CACHE:
                self.cache = {}
            self.cache[key] = entry
        if entry is FORWARD:
            return FORWARD
        if type(entry) is _ChaseEntry:
            return Chase(q, entry.answer, entry.nodata, entry.target)
        return self._build(q, entry, udp)  # type: ignore[arg-type]

    def chased(self, ch: Chase, records: list[RR] | None, udp: bool,
               truncated: bool = False) -> bytes:
        """The reply to a Chase: our CNAMEs and the upstream's records (None: the lookup
        failed, so NODATA, as CoreDNS). `truncated`: the upstream's reply had TC set; the
        reply keeps it (what arrived, with TC=1), so the client asks again over TCP, where
        the chase goes over TCP too (CoreDNS plugin/backend_lookup.go A: m1.Truncated)."""
        q = ch.query
        if records is None:
            out = self._build(q, ch.nodata, udp)
        else:
            answer = [*ch.answer, *records]
            body = wire.encode_body(q, answer, [], [])
            out = self._build(q, (AA | (TC if truncated else 0), len(answer), 0, 0, body), udp)
        self.count_reply(out)
        return out

    def _compute(self, q: Query) -> object:
        if q.qclass not in (wire.CLASS_IN, wire.CLASS_ANY):
            return (wire.REFUSED, 0, 0, 0, b"")
        ans = resolve(self.zone, q.qname, q.qtype)
        if ans.forward:
            return FORWARD
        if ans.chase is not None:
            nodata = (wire.NOERROR | AA, 0, 1, 0,  # CoreDNS's NODATA: the zone's SOA
                      wire.encode_body(q, [], [soa(self.zone, self.zone.domain)], []))
            return _ChaseEntry(tuple(ans.answer), nodata, ans.chase)
        body = wire.encode_body(q, ans.answer, ans.authority, ans.additional)
        flags = (AA if ans.aa else 0) | ans.rcode
        return (flags, len(ans.answer), len(ans.authority), len(ans.additional), body)

    @staticmethod
    def _build(q: Query, entry: tuple[int, int, int, int, bytes], udp: bool,
               ext_rcode: int = 0) -> bytes:
        flag_bits, an, ns, ar, body = entry
        flags = QR | (q.flags & (0x7800 | RD)) | RA | flag_bits
        opt = b""
        limit = wire.MAX_UDP
        if q.edns_size is not None:  # RFC 6891 7: answer EDNS with EDNS
            opt = wire.opt_record(wire.OUR_EDNS_SIZE, ext_rcode)
            ar += 1
            # Stay below the pod MTU (1450) too: the flag-day 2020 size, never more.
            limit = min(q.edns_size, wire.OUR_EDNS_SIZE)
        msg = HEADER.pack(q.id, flags, 1, an, ns, ar) + q.question + body + opt
        if udp and len(msg) > limit:
            # RFC 2181 9: set TC and let the client retry over TCP, where it is complete.
            msg = (HEADER.pack(q.id, flags | TC, 1, 0, 0, 1 if opt else 0)
                   + q.question + opt)
        return msg


def _reply_or_error(data: bytes, rcode: int) -> bytes:
    try:
        q = wire.parse_query(data)
    except FormErr:
        return wire.error_response(data, rcode)
    return Handler._build(q, (rcode, 0, 0, 0, b""), udp=True)
