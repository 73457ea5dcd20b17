"""ExternalName targets outside the cluster domain: CoreDNS's kubernetes plugin answers the CNAME
and what its upstream says about the target (plugin/pkg/upstream, on by default since 1.6); a
failed lookup drops the CNAME (NODATA). The resolver flags it, the handler builds the reply,
emunet.dns.upstream builds the query and reads the upstream's records, the server does the I/O."""

from __future__ import annotations

import asyncio

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR

from emunet.dns import upstream, wire
from emunet.dns.handler import Chase
from tests.unit.dns_cluster import NS, cluster, handler, query, rrs
from tests.unit.dns_loopback import free_port, serving, tcp_ask, tcp_upstream, udp_ask

EXT = f"ext.{NS}.svc.cluster.local"


def test_chase_only_with_upstreams_and_only_outside_the_zone():
    out = handler(cluster(upstreams=("192.0.2.1",))).handle(query(EXT, ident=9))
    assert type(out) is Chase and out.target == "example.com" and out.query.id == 9
    assert [(r[1], r[3]) for r in out.answer] == [(wire.CNAME, "example.com")]
    # no upstreams: the CNAME alone, as before (the client resolves it)
    (c,) = rrs(DNS(handler().handle(query(EXT))).an)
    assert c.type == wire.CNAME
    # inside the zone the chain is followed locally, never upstream
    h = handler(cluster(upstreams=("192.0.2.1",)))
    assert isinstance(h.handle(query(f"alias.{NS}.svc.cluster.local")), bytes)
    # a CNAME question is answered with the CNAME only (CoreDNS chases A/AAAA)
    assert isinstance(h.handle(query(EXT, "CNAME")), bytes)


def test_chased_reply_and_nodata_when_the_lookup_fails():
    h = handler(cluster(upstreams=("192.0.2.1",)))
    ch = h.handle(query(EXT.upper(), ident=77))
    r = DNS(h.chased(ch, [("example.com", wire.CNAME, 30, "edge.example.net"),
                          ("edge.example.net", wire.A, 60, "198.51.100.7")], udp=True))
    assert r.id == 77 and r.rcode == 0 and r.aa == 1
    assert [(x.rrname, x.type, x.ttl, x.rdata) for x in rrs(r.an)] == [
        (EXT.upper().encode() + b".", wire.CNAME, 5, b"example.com."),
        (b"example.com.", wire.CNAME, 30, b"edge.example.net."),
        (b"edge.example.net.", wire.A, 60, "198.51.100.7")]
    r = DNS(h.chased(ch, None, udp=True))
    assert r.rcode == 0 and not rrs(r.an) and rrs(r.ns)[0].type == wire.SOA
    assert h.counters["chased"] == 1 and h.counters["NOERROR"] == 2


def test_upstream_query_and_answer_records():
    q = DNS(upstream.build_query("Example.COM", wire.AAAA, 513))
    assert (q.id, q.rd, q.qd[0].qname, q.qd[0].qtype) == (513, 1, b"Example.COM.", wire.AAAA)
    reply = bytes(DNS(id=513, qr=1, qd=DNSQR(qname="example.com", qtype="A"), an=[
        DNSRR(rrname="example.com", type="CNAME", ttl=30, rdata="edge.example.net"),
        DNSRR(rrname="edge.example.net", type="A", ttl=60, rdata="198.51.100.7"),
        DNSRR(rrname="edge.example.net", type="TXT", rdata="skipped")]))
    assert upstream.answer_records(reply, 513) == [
        ("example.com", wire.CNAME, 30, "edge.example.net"),
        ("edge.example.net", wire.A, 60, "198.51.100.7")]
    with pytest.raises(ValueError):
        upstream.answer_records(reply, 514)  # not the reply to our query
    with pytest.raises(ValueError):
        upstream.answer_records(reply[:40], 513)
    loop = bytearray(reply)
    loop[12:14] = b"\xc0\x0c"  # the question's name points at itself
    with pytest.raises(ValueError):
        upstream.answer_records(bytes(loop), 513)
    assert upstream.host_port("192.0.2.1:5353") == ("192.0.2.1", 5353)
    assert upstream.host_port("192.0.2.1") == ("192.0.2.1", 53)


async def test_server_chases_over_udp_and_tcp(tmp_path):
    loop = asyncio.get_running_loop()
    asked = []

    class Upstream(asyncio.DatagramProtocol):
        def connection_made(self, tr):
            self.tr = tr

        def datagram_received(self, d, addr):
            q = DNS(d)
            asked.append((q.qd[0].qname, q.qd[0].qtype))
            self.tr.sendto(bytes(DNS(id=q.id, qr=1, qd=q.qd, ra=1, an=DNSRR(
                rrname=q.qd[0].qname, type="A", ttl=60, rdata="203.0.113.9"))), addr)

    def tcp_answer(q):
        asked.append(("tcp", q.qd[0].qtype))
        return DNS(id=q.id, qr=1, qd=q.qd, ra=1, an=DNSRR(
            rrname=q.qd[0].qname, type="A", ttl=60, rdata="203.0.113.10"))

    up_port, tcp_up = await tcp_upstream(tcp_answer)
    up, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", up_port))
    try:
        async with serving(tmp_path, up_port) as srv:
            r = DNS(await udp_ask(srv.port, query(EXT, ident=31)))
            assert r.id == 31 and r.rcode == 0
            assert [(x.type, x.rdata) for x in rrs(r.an)] == [
                (wire.CNAME, b"example.com."), (wire.A, "203.0.113.9")]
            assert asked == [(b"example.com.", wire.A)]
            r = DNS(await tcp_ask(srv.port, query(EXT, ident=32)))
            assert [(x.type, x.rdata) for x in rrs(r.an)] == [
                (wire.CNAME, b"example.com."), (wire.A, "203.0.113.10")]
            assert asked[-1] == ("tcp", wire.A)
    finally:
        up.close()
        tcp_up.close()


async def test_server_chase_with_a_dead_upstream_is_nodata(tmp_path):
    async with serving(tmp_path, free_port()) as srv:  # nothing listens on the upstream port
        r = DNS(await udp_ask(srv.port, query(EXT)))
        assert r.rcode == 0 and not rrs(r.an) and rrs(r.ns)[0].type == wire.SOA


async def test_server_keeps_tc_from_the_upstreams_udp_answer(tmp_path):
    """The upstream's UDP answer completing the chase has TC=1: the reply keeps TC=1 (and what
    did arrive), so the client retries over TCP; CoreDNS plugin/backend_lookup.go A sets
    `truncated` from m1.Truncated (kubernetes handler_test "CNAME External Truncated Lookup")."""
    loop = asyncio.get_running_loop()

    class Upstream(asyncio.DatagramProtocol):
        def connection_made(self, tr):
            self.tr = tr

        def datagram_received(self, d, addr):
            q = DNS(d)
            self.tr.sendto(bytes(DNS(id=q.id, qr=1, tc=1, qd=q.qd, ra=1, an=DNSRR(
                rrname=q.qd[0].qname, type="A", ttl=60, rdata="203.0.113.9"))), addr)

    port = free_port()
    up, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", port))
    try:
        async with serving(tmp_path, port) as srv:
            r = DNS(await udp_ask(srv.port, query(EXT, ident=41)))
            assert r.id == 41 and r.rcode == 0 and r.tc == 1 and r.aa == 1
            assert [(x.type, x.rdata) for x in rrs(r.an)] == [
                (wire.CNAME, b"example.com."), (wire.A, "203.0.113.9")]
    finally:
        up.close()


def test_chased_reply_keeps_tc():
    h = handler(cluster(upstreams=("192.0.2.1",)))
    ch = h.handle(query(EXT, ident=5))
    r = DNS(h.chased(ch, [("example.com", wire.A, 60, "198.51.100.7")], udp=True,
                     truncated=True))
    assert r.tc == 1 and [x.type for x in rrs(r.an)] == [wire.CNAME, wire.A]
    assert DNS(h.chased(ch, [("example.com", wire.A, 60, "198.51.100.7")], udp=True)).tc == 0
    assert upstream.truncated(bytes(DNS(id=1, qr=1, tc=1)))
    assert not upstream.truncated(bytes(DNS(id=1, qr=1)))
