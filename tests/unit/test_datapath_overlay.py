"""VXLAN encap/decap byte-exactness and cross-node round trips through a PipelinePair."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as hs
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from emunet.datapath import Drop, DropReason, Encap, Send
from tests.unit.pipeline_pair import PipelinePair, datapath, make_state, pod

WEB_VIP = "10.43.0.11"
VTEP1, VTEP2 = "0a:59:0a:2a:01:00", "0a:59:0a:2a:02:00"


def test_encap_payload_and_outer_frame_match_scapy():
    st = make_state()
    dp = datapath(st, "node-1")
    c, w = pod(st, "client"), pod(st, "web-0")
    f = Ether(src=c.mac, dst="0a:58:0a:2a:01:01") / IP(src=c.ip, dst=w.ip, ttl=64, id=1) / \
        ICMP(id=1, seq=1) / b"hello"
    [e] = dp.process(bytes(f), c.host_ifname, 0)
    want = VXLAN(vni=1, flags=0x08) / Ether(src=VTEP1, dst=VTEP2) / \
        IP(src=c.ip, dst=w.ip, ttl=63, id=1) / ICMP(id=1, seq=1) / b"hello"
    assert isinstance(e, Encap) and e.payload == bytes(want)
    # the datagram as the kernel sends it from our UDP socket (outer checksum 0, SO_NO_CHECK)
    outer = Ether() / IP(src="192.168.1.11", dst=e.dst_ip) / \
        UDP(sport=8472, dport=e.dst_port, chksum=0) / e.payload
    ref = Ether() / IP(src="192.168.1.11", dst="192.168.1.12") / \
        UDP(sport=8472, dport=8472, chksum=0) / want
    assert bytes(outer) == bytes(ref)
    assert Ether(bytes(outer))[VXLAN].vni == 1


def test_decap_delivers_with_gateway_mac_and_ttl():
    st = make_state()
    dp = datapath(st, "node-2")
    c, w = pod(st, "client"), pod(st, "web-0")
    payload = VXLAN(vni=1, flags=0x08) / Ether(src=VTEP1, dst=VTEP2) / \
        IP(src=c.ip, dst=w.ip, ttl=63) / UDP(sport=1, dport=5353) / b"q"
    [s] = dp.process_underlay(bytes(payload), "192.168.1.11", 0)
    got = Ether(s.frame)
    assert isinstance(s, Send) and s.port == w.host_ifname
    assert (got.src, got.dst, got[IP].ttl) == ("0a:58:0a:2a:02:01", w.mac, 62)
    del got[IP].chksum, got[UDP].chksum
    assert bytes(got) == s.frame


def test_decap_rejects_bad_headers():
    st = make_state()
    dp = datapath(st, "node-2")
    c, w = pod(st, "client"), pod(st, "web-0")
    inner = Ether(src=VTEP1, dst=VTEP2) / IP(src=c.ip, dst=w.ip) / UDP()
    cases = [
        (VXLAN(vni=2, flags=0x08) / inner, "192.168.1.11", DropReason.INVALID_VNI),
        (VXLAN(vni=1, flags=0x00) / inner, "192.168.1.11", DropReason.INVALID_VNI),
        (VXLAN(vni=1, flags=0x08) / inner, "192.168.1.99", DropReason.INVALID_SOURCE),
        (VXLAN(vni=1, flags=0x08) / Ether(src=VTEP1, dst=VTEP2) / IP(src=c.ip, dst="10.42.2.77")
         / UDP(), "192.168.1.11", DropReason.NO_ROUTE),
        (VXLAN(vni=1, flags=0x08) / Ether(src=VTEP1, dst=VTEP2) / IP(src=c.ip, dst=w.ip, ttl=1)
         / UDP(), "192.168.1.11", DropReason.TTL_EXCEEDED),
    ]
    for pkt, src, reason in cases:
        *before, d = dp.process_underlay(bytes(pkt), src, 0)
        assert isinstance(d, Drop) and d.reason is reason, (pkt.summary(), d)
        # only the hop with no TTL left says so: time exceeded, back through the tunnel
        assert [(type(b), b.dst_ip) for b in before] == \
            ([(Encap, src)] if reason is DropReason.TTL_EXCEEDED else [])


def test_tcp_handshake_and_data_through_clusterip_across_nodes():
    st = make_state()
    pair = PipelinePair(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    gw1, gw2 = "0a:58:0a:2a:01:01", "0a:58:0a:2a:02:01"

    def c2s(flags, seq, ack, data=b""):
        f = Ether(src=c.mac, dst=gw1) / IP(src=c.ip, dst=WEB_VIP) / \
            TCP(sport=41000, dport=80, flags=flags, seq=seq, ack=ack) / data
        [s] = pair.send("node-1", bytes(f), c.host_ifname)
        got = Ether(s.frame)
        assert s.port == w.host_ifname
        assert (got[IP].src, got[IP].dst, got[TCP].dport, got[IP].ttl) == (c.ip, w.ip, 8080, 62)
        return got

    def s2c(flags, seq, ack, data=b""):
        f = Ether(src=w.mac, dst=gw2) / IP(src=w.ip, dst=c.ip) / \
            TCP(sport=8080, dport=41000, flags=flags, seq=seq, ack=ack) / data
        [s] = pair.send("node-2", bytes(f), w.host_ifname)
        got = Ether(s.frame)
        assert s.port == c.host_ifname
        assert (got[IP].src, got[TCP].sport, got.dst) == (WEB_VIP, 80, c.mac)
        return got

    frames = [c2s("S", 100, 0), s2c("SA", 500, 101), c2s("A", 101, 501),
              c2s("PA", 101, 501, b"GET / HTTP/1.0\r\n\r\n"),
              s2c("PA", 501, 120, b"HTTP/1.0 200 OK\r\n\r\nhi")]
    assert bytes(frames[-1][TCP].payload).endswith(b"hi")
    for got in frames:
        raw = bytes(got)
        del got[IP].chksum, got[TCP].chksum
        assert bytes(got) == raw
    assert pair.drops == []
    assert pair.dps["node-1"].counters["dnat"] == 1


def test_ping_across_nodes_both_ways():
    st = make_state()
    pair = PipelinePair(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    req = Ether(src=c.mac, dst="0a:58:0a:2a:01:01") / IP(src=c.ip, dst=w.ip) / ICMP(id=9)
    [s] = pair.send("node-1", bytes(req), c.host_ifname)
    assert s.port == w.host_ifname and Ether(s.frame)[ICMP].type == 8
    rep = Ether(src=w.mac, dst="0a:58:0a:2a:02:01") / IP(src=w.ip, dst=c.ip) / \
        ICMP(type=0, id=9)
    [s] = pair.send("node-2", bytes(rep), w.host_ifname)
    assert s.port == c.host_ifname and Ether(s.frame)[IP].src == w.ip


_ST = make_state()
_DP1, _DP2 = datapath(_ST, "node-1"), datapath(_ST, "node-2")
_C = pod(_ST, "client")
_SEED = bytes(Ether(src=_C.mac, dst="0a:58:0a:2a:01:01") / IP(src=_C.ip, dst=WEB_VIP) /
              TCP(sport=1, dport=80, flags="S"))


@settings(max_examples=400, deadline=None)
@given(hs.binary(max_size=120), hs.lists(hs.tuples(hs.integers(0, 200), hs.integers(0, 255)),
                                          max_size=6), hs.integers(0, 80))
def test_random_and_mutated_frames_never_raise(junk, mutations, cut):
    f = bytearray(_SEED)
    for pos, val in mutations:
        if pos < len(f):
            f[pos] = val
    for frame in (bytes(junk), bytes(f), bytes(f[:len(f) - cut])):
        for a in _DP1.process(frame, _C.host_ifname, random.random()):
            assert isinstance(a, Send | Encap | Drop)
        vx = bytes(VXLAN(vni=1, flags=0x08)) + frame
        for payload in (frame, vx):
            _DP2.process_underlay(payload, "192.168.1.11", 0.0)
