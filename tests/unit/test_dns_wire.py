"""The wire protocol: header rules, EDNS0, truncation, malformed input, and a fuzz test."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRROPT

from emunet.dns import wire
from emunet.dns.zone import Zone
from tests.unit.dns_cluster import NS, ask, cluster, handler, query, rrs

SVC = f"monospaced.{NS}.svc.cluster.local"
H = handler()


def test_parse_query_matches_scapy():
    q = wire.parse_query(query("MonoSpaced.Blog-Website.svc.cluster.local", "SRV", ident=9))
    assert (q.id, q.qname, q.qtype, q.qclass, q.edns_size) == (
        9, "monospaced.blog-website.svc.cluster.local", wire.SRV, wire.CLASS_IN, None)
    assert q.labels == (10, 12, 3, 7, 5)


def test_short_garbage_and_responses_are_dropped():
    assert H.handle(b"") is None and H.handle(b"\x00" * 11) is None
    resp = bytearray(query(SVC))
    resp[2] |= 0x80  # QR: a response, never answered (no reflection loops)
    assert H.handle(bytes(resp)) is None


def test_formerr_and_notimp():
    data = bytearray(query(SVC))
    bad = bytes(data[:-3])  # question cut short
    r = DNS(H.handle(bad))
    assert r.rcode == wire.FORMERR and r.qr == 1 and r.id == 4242 and r.rd == 1
    two = bytes(data[:4]) + struct.pack("!H", 2) + bytes(data[6:])
    assert DNS(H.handle(two)).rcode == wire.FORMERR  # QDCOUNT != 1
    zero = bytes(data[:4]) + struct.pack("!H", 0) + bytes(data[6:12])
    assert DNS(H.handle(zero)).rcode == wire.FORMERR
    notify = bytes(DNS(id=5, opcode=4, qd=DNSQR(qname=SVC)))
    r = DNS(H.handle(notify))
    assert r.rcode == wire.NOTIMP and r.opcode == 4 and r.id == 5
    assert DNS(H.handle(bytes(data) + b"\x00")).rcode == wire.FORMERR  # trailing bytes


def test_edns_is_echoed_and_badvers():
    r = ask(H, SVC, ar=DNSRROPT(rclass=4096))
    (opt,) = [x for x in rrs(r.ar) if x.type == wire.OPT]
    assert opt.rclass == wire.OUR_EDNS_SIZE and r.rcode == 0 and rrs(r.an)
    r = ask(H, SVC, ar=DNSRROPT(rclass=4096, version=1))
    (opt,) = rrs(r.ar)
    assert r.ancount == 0 and (opt.extrcode << 4 | r.rcode) == wire.BADVERS


def _big_cluster():
    from emunet.model import Container, ContainerPort, Pod, Service, ServicePort
    st = cluster()
    st.add_service(Service(NS, "big", (ServicePort(80, 80, "TCP", "http"),),
                           {"app": "big"}, cluster_ip="None"))
    for i in range(40):
        st.add_pod(Pod(NS, f"big-{i}", {"app": "big"}, (Container("c", ports=(
            ContainerPort(80, "TCP", "http"),)),)))
    for p in st.pods.values():
        p.ready = True
    return Zone.from_state(st)


def test_truncation_over_udp_complete_over_tcp():
    from emunet.dns.handler import Handler
    h = Handler(_big_cluster())
    name = f"big.{NS}.svc.cluster.local"
    r = ask(h, name)
    assert r.tc == 1 and r.ancount == 0 and len(bytes(r)) <= 512
    r = ask(h, name, ar=DNSRROPT(rclass=4096))  # 40 A records fit in 1232 bytes
    assert r.tc == 0 and r.ancount == 40
    r = ask(h, name, "SRV", ar=DNSRROPT(rclass=4096))  # 40 SRV + 40 A do not
    assert r.tc == 1 and r.arcount == 1  # the OPT stays
    r = ask(h, name, "SRV", udp=False)
    assert r.tc == 0 and r.ancount == 40 and r.arcount == 40


def test_compression_pointers_reach_the_question():
    raw = H.handle(query(SVC))
    # the answer's owner is a pointer to offset 12, the question's name
    assert raw[12 + len(SVC) + 2 + 4:][:2] == b"\xc0\x0c"


def test_counters():
    h = handler()
    ask(h, SVC)
    ask(h, "nope." + SVC)
    h.handle(b"x")
    assert h.counters["queries"] == 3 and h.counters["NOERROR"] == 1
    assert h.counters["NXDOMAIN"] == 1 and h.counters["dropped"] == 1


NAMES = [SVC, f"_http._tcp.{SVC}", "cluster.local", f"db.{NS}.svc.cluster.local",
         "11.0.43.10.in-addr.arpa", "example.com", f"ext.{NS}.svc.cluster.local"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_never_raise(data):
    out = H.handle(data)
    assert out is None or isinstance(out, bytes)
    if isinstance(out, bytes):
        DNS(out)  # and what we send parses


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(NAMES), st.sampled_from([1, 2, 5, 6, 12, 16, 28, 33, 255, 252, 99]),
       st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=6),
       st.integers(0, 3), st.booleans())
def test_fuzz_mutated_queries_never_raise(name, qtype, flips, cut, edns):
    kw = {"ar": DNSRROPT(rclass=1232)} if edns else {}
    data = bytearray(query(name, qtype, **kw))
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    if cut:
        data = data[:-cut]
    for udp in (True, False):
        out = H.handle(bytes(data), udp=udp)
        assert out is None or isinstance(out, bytes)
        if isinstance(out, bytes):
            r = DNS(out)
            assert r.qr == 1 and r.id == struct.unpack("!H", bytes(data[:2]))[0]
