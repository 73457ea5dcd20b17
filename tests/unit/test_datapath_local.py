"""Datapath on one node: ARP, anti-spoofing, routing/bridging, TTL, services, hairpin, CT."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from emunet.datapath import Drop, DropReason, Encap, Send
from emunet.datapath.conntrack import TCP_SYN_SENT, UDP_UNREPLIED
from tests.unit.pipeline_pair import datapath, make_state, pod

GW_MAC = "0a:58:0a:2a:01:01"
GW = "10.42.1.1"
WEB_VIP = "10.43.0.11"
EMPTY_VIP = "10.43.0.12"


@pytest.fixture
def st():
    return make_state()


@pytest.fixture
def dp(st):
    return datapath(st, "node-1")


def frame_from(p, dst_mac=GW_MAC):
    return Ether(src=p.mac, dst=dst_mac) / IP(src=p.ip)


def assert_checksums_ok(raw: bytes) -> None:
    """Re-parse with Scapy, drop every checksum, rebuild: the bytes must not change."""
    pkt = Ether(raw)
    for layer in (IP, TCP, UDP, ICMP, IPerror):
        if layer in pkt:
            del pkt[layer].chksum
    if UDPerror in pkt:
        del pkt[UDPerror].chksum
    assert bytes(pkt) == raw


def only_send(actions):
    sends = [a for a in actions if isinstance(a, Send)]
    assert len(sends) == 1, actions
    return sends[0]


def test_arp_reply_for_gateway_is_byte_exact(st, dp):
    c = pod(st, "client")
    req = Ether(src=c.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=c.mac, psrc=c.ip, pdst=GW)
    s = only_send(dp.process(bytes(req), c.host_ifname, 0))
    want = Ether(src=GW_MAC, dst=c.mac) / ARP(op=2, hwsrc=GW_MAC, psrc=GW, hwdst=c.mac,
                                              pdst=c.ip)
    assert s.port == c.host_ifname and s.frame == bytes(want)


def test_arp_for_local_pod_answers_its_mac_and_ignores_others(st, dp):
    c, o = pod(st, "client"), pod(st, "other")
    req = Ether(src=c.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=c.mac, psrc=c.ip, pdst=o.ip)
    s = only_send(dp.process(bytes(req), c.host_ifname, 0))
    assert ARP(s.frame[14:]).hwsrc == o.mac and Ether(s.frame).src == o.mac
    req.pdst = "10.42.1.99"
    assert dp.process(bytes(req), c.host_ifname, 0) == []


def test_spoofed_source_is_dropped(st, dp):
    c, o = pod(st, "client"), pod(st, "other")
    spoof_ip = Ether(src=c.mac, dst=GW_MAC) / IP(src=o.ip, dst="10.42.2.2") / ICMP()
    spoof_mac = Ether(src=o.mac, dst=GW_MAC) / IP(src=c.ip, dst="10.42.2.2") / ICMP()
    for f in (spoof_ip, spoof_mac):
        [d] = dp.process(bytes(f), c.host_ifname, 0)
        assert d.reason is DropReason.INVALID_SOURCE
    assert dp.counters["drop:INVALID_SOURCE"] == 2


def test_non_ip_is_dropped(st, dp):
    c = pod(st, "client")
    [d] = dp.process(bytes(Ether(src=c.mac, dst=GW_MAC) / IPv6()), c.host_ifname, 0)
    assert d.reason is DropReason.UNSUPPORTED_L3


def test_routed_local_delivery_rewrites_macs_and_ttl(st, dp):
    c, o = pod(st, "client"), pod(st, "other")
    f = frame_from(c) / ICMP(id=7, seq=1) / b"ping"
    f[IP].dst, f[IP].ttl = o.ip, 64
    s = only_send(dp.process(bytes(f), c.host_ifname, 0))
    got = Ether(s.frame)
    assert s.port == o.host_ifname
    assert (got.src, got.dst, got[IP].ttl) == (GW_MAC, o.mac, 63)
    assert_checksums_ok(s.frame)


def test_bridged_delivery_keeps_macs_and_ttl(st, dp):
    c, o = pod(st, "client"), pod(st, "other")
    f = Ether(src=c.mac, dst=o.mac) / IP(src=c.ip, dst=o.ip, ttl=64) / UDP(sport=1, dport=2)
    s = only_send(dp.process(bytes(f), c.host_ifname, 0))
    assert s.port == o.host_ifname and s.frame == bytes(f)


def test_ttl_expiry_sends_time_exceeded(st, dp):
    c = pod(st, "client")
    f = frame_from(c) / UDP(sport=1000, dport=53) / b"x"
    f[IP].dst, f[IP].ttl = "10.42.2.2", 1
    acts = dp.process(bytes(f), c.host_ifname, 0)
    s = only_send(acts)
    assert any(isinstance(a, Drop) and a.reason is DropReason.TTL_EXCEEDED for a in acts)
    err = Ether(s.frame)
    assert (err[IP].src, err[IP].dst, err[ICMP].type, err[ICMP].code) == (GW, c.ip, 11, 0)
    assert err[IPerror].dst == "10.42.2.2"
    assert_checksums_ok(s.frame)


def test_unknown_destinations_have_no_route(st, dp):
    c = pod(st, "client")
    for dst in ("10.42.1.99", "8.8.8.8"):
        f = frame_from(c) / UDP(sport=1, dport=2)
        f[IP].dst = dst
        [d] = dp.process(bytes(f), c.host_ifname, 0)
        assert d.reason is DropReason.NO_ROUTE


def test_gateway_answers_ping(st, dp):
    c = pod(st, "client")
    f = frame_from(c) / ICMP(id=3, seq=9) / b"abc"
    f[IP].dst = GW
    s = only_send(dp.process(bytes(f), c.host_ifname, 0))
    r = Ether(s.frame)
    assert (r[IP].src, r[IP].dst, r[ICMP].type, r[ICMP].id, bytes(r[ICMP].payload)) == \
        (GW, c.ip, 0, 3, b"abc")
    assert_checksums_ok(s.frame)


def test_no_endpoints_tcp_gets_rst_from_vip(st, dp):
    c = pod(st, "client")
    f = frame_from(c) / TCP(sport=40000, dport=80, flags="S", seq=1000)
    f[IP].dst = EMPTY_VIP
    acts = dp.process(bytes(f), c.host_ifname, 0)
    s = only_send(acts)
    assert any(isinstance(a, Drop) and a.reason is DropReason.NO_ENDPOINTS for a in acts)
    r = Ether(s.frame)
    assert (r.src, r.dst, r[IP].src, r[IP].dst) == (GW_MAC, c.mac, EMPTY_VIP, c.ip)
    assert (r[TCP].sport, r[TCP].dport, r[TCP].flags, r[TCP].ack) == (80, 40000, "RA", 1001)
    assert_checksums_ok(s.frame)


def test_no_endpoints_udp_and_unknown_port_get_port_unreachable(st, dp):
    c = pod(st, "client")
    for vip, port in ((EMPTY_VIP, 53), (WEB_VIP, 9999)):
        f = frame_from(c) / UDP(sport=5000, dport=port) / b"q"
        f[IP].dst = vip
        s = only_send(dp.process(bytes(f), c.host_ifname, 0))
        r = Ether(s.frame)
        assert (r[IP].src, r[ICMP].type, r[ICMP].code) == (vip, 3, 3)
        assert (r[IPerror].dst, r[UDPerror].dport) == (vip, port)
        assert_checksums_ok(s.frame)


def test_dnat_to_remote_backend_encaps_with_resolved_target_port(st, dp):
    c, w = pod(st, "client"), pod(st, "web-0")
    f = frame_from(c) / TCP(sport=40000, dport=80, flags="S", seq=1)
    f[IP].dst = WEB_VIP
    [e] = dp.process(bytes(f), c.host_ifname, 0)
    assert isinstance(e, Encap) and (e.dst_ip, e.dst_port) == ("192.168.1.12", 8472)
    inner = Ether(e.payload[8:])
    assert (inner[IP].dst, inner[TCP].dport, inner[IP].ttl) == (w.ip, 8080, 63)
    assert_checksums_ok(e.payload[8:])
    assert dp.counters["dnat"] == 1 and dp.counters["ct_entries"] == 1


def test_hairpin_snat_to_gateway_and_back():
    st = make_state(web_nodes=("node-1",))
    dp = datapath(st, "node-1")
    w = pod(st, "web-0")
    f = frame_from(w) / TCP(sport=40000, dport=80, flags="S", seq=1)
    f[IP].dst = WEB_VIP
    s = only_send(dp.process(bytes(f), w.host_ifname, 0))
    got = Ether(s.frame)
    assert s.port == w.host_ifname
    assert (got[IP].src, got[IP].dst, got[TCP].sport, got[TCP].dport) == (GW, w.ip, 40000, 8080)
    assert_checksums_ok(s.frame)
    reply = frame_from(w) / TCP(sport=8080, dport=40000, flags="SA", seq=5, ack=2)
    reply[IP].dst = GW
    s = only_send(dp.process(bytes(reply), w.host_ifname, 1))
    got = Ether(s.frame)
    assert (got[IP].src, got[IP].dst, got[TCP].sport, got[TCP].dport) == (WEB_VIP, w.ip, 80,
                                                                         40000)
    assert_checksums_ok(s.frame)


def test_local_dnat_round_trip_and_conntrack_expiry():
    st = make_state(web_nodes=("node-1",))
    dp = datapath(st, "node-1")
    c, w = pod(st, "client"), pod(st, "web-0")
    q = frame_from(c) / UDP(sport=5000, dport=53) / b"query"
    q[IP].dst = WEB_VIP
    s = only_send(dp.process(bytes(q), c.host_ifname, 10.0))
    got = Ether(s.frame)
    assert (s.port, got[IP].dst, got[UDP].dport) == (w.host_ifname, w.ip, 5353)
    assert_checksums_ok(s.frame)
    # the backend answers directly (same subnet: bridged to the client's MAC)
    a = Ether(src=w.mac, dst=c.mac) / IP(src=w.ip, dst=c.ip) / UDP(sport=5353, dport=5000) / b"a"
    s = only_send(dp.process(bytes(a), w.host_ifname, 11.0))
    got = Ether(s.frame)
    assert (s.port, got[IP].src, got[UDP].sport) == (c.host_ifname, WEB_VIP, 53)
    assert_checksums_ok(s.frame)
    # one query, one answer: still 30 s (nf_conntrack_proto_udp: not yet a stream)
    assert dp.expire(11.0 + UDP_UNREPLIED - 1) == 0
    # answered and still active 2 s after it began: a stream, assured, 120 s
    # (udp_timeout_stream); a never-answered one only 30 s
    only_send(dp.process(bytes(q), c.host_ifname, 13.0))
    (conn,) = dp.ct.conns()
    assert conn.assured
    assert dp.expire(13.0 + 119) == 0 and dp.expire(13.0 + 121) == 1
    assert dp.counters["ct_entries"] == 0
    dp.process(bytes(q), c.host_ifname, 200.0)
    assert dp.expire(200.0 + UDP_UNREPLIED + 1) == 1
    assert TCP_SYN_SENT == 120


def test_update_keeps_conntrack_but_forgets_udp_to_removed_backend():
    st = make_state(web_nodes=("node-1", "node-1"))
    dp = datapath(st, "node-1")
    c = pod(st, "client")
    t = frame_from(c) / TCP(sport=1, dport=80, flags="S")
    u = frame_from(c) / UDP(sport=2, dport=53)
    t[IP].dst = u[IP].dst = WEB_VIP
    for f in (t, u):
        dp.process(bytes(f), c.host_ifname, 0)
    for p in st.pods.values():
        p.ready = False
    from emunet.datapath import NodeTables
    dp.update(NodeTables.from_state(st, "node-1"))
    assert dp.counters["ct_entries"] == 1  # the TCP flow stays, the UDP one is gone


def test_icmp_port_unreachable_from_backend_is_reverse_translated():
    st = make_state(web_nodes=("node-1",))
    dp = datapath(st, "node-1")
    c, w = pod(st, "client"), pod(st, "web-0")
    q = frame_from(c) / UDP(sport=5000, dport=53) / b"query"
    q[IP].dst = WEB_VIP
    delivered = Ether(only_send(dp.process(bytes(q), c.host_ifname, 0)).frame)
    err = Ether(src=w.mac, dst=c.mac) / IP(src=w.ip, dst=c.ip) / ICMP(type=3, code=3) / \
        bytes(delivered[IP])
    s = only_send(dp.process(bytes(err), w.host_ifname, 1))
    got = Ether(s.frame)
    assert got[IP].src == WEB_VIP
    assert (got[IPerror].dst, got[UDPerror].dport) == (WEB_VIP, 53)
    assert_checksums_ok(s.frame)
