"""The IPv6 pipeline (dual-stack, issue 19) with Scapy frames: Neighbour Discovery, the
gateway's answers, forwarding with the hop limit, Service DNAT and reverse NAT over the IPv6
pseudo-header, REJECT, flannel-v6 VXLAN bytes, conntrack per family, ICMPv6 error NAT."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6MLReport2,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrHopByHop,
    RouterAlert,
)
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from emunet.datapath import Drop, DropReason, Encap, Send
from emunet.datapath.ipv6pkt import KEY6_LEN, ip6_bytes
from emunet.packets import fill_l4_checksum
from tests.unit.dualstack import (
    EMPTY6,
    GW2_MAC,
    GW6,
    GW6_2,
    GW_MAC,
    VIP6,
    datapath6,
    dual_state,
    eth6,
)
from tests.unit.pipeline_pair import pod


def _ns(p, target: str, src: str | None = None, hlim: int = 255) -> bytes:
    low = ip6_bytes(target)[13:]  # RFC 4291 §2.7.1 solicited-node, RFC 2464 §7 its MAC
    sn = f"ff02::1:ff{low[0]:02x}:{low[1:].hex()}"
    frame = Ether(src=p.mac, dst="33:33:ff:" + low.hex(":")) / \
        IPv6(src=src or p.ip6, dst=sn, hlim=hlim) / ICMPv6ND_NS(tgt=target)
    if src != "::":
        frame = frame / ICMPv6NDOptSrcLLAddr(lladdr=p.mac)
    return bytes(frame)


def _na(dst_mac: str, mac: str, target: str, dst: str, r: int, s: int) -> bytes:
    return bytes(Ether(dst=dst_mac, src=mac) / IPv6(src=target, dst=dst, hlim=255) /
                 ICMPv6ND_NA(R=r, S=s, O=1, tgt=target) / ICMPv6NDOptDstLLAddr(lladdr=mac))


def test_ns_for_the_gateway_gets_a_router_na():
    st = dual_state()
    dp, c = datapath6(st, "node-1"), pod(st, "client")
    [s] = dp.process(_ns(c, GW6), c.host_ifname, 1.0)
    assert s.port == c.host_ifname
    # RFC 4861 §4.4/§7.2.4: R, S, O set, hop limit 255, TLLA = gateway MAC, checksum over the
    # IPv6 pseudo-header (Scapy computes it)
    assert s.frame == _na(c.mac, GW_MAC, GW6, c.ip6, 1, 1)
    # a NUD probe: unicast to the gateway MAC and address, from the pod's link-local
    probe = Ether(src=c.mac, dst=GW_MAC) / IPv6(src="fe80::858:aff:fe2a:103", dst=GW6,
                                                hlim=255) / ICMPv6ND_NS(tgt=GW6)
    [s] = dp.process(bytes(probe), c.host_ifname, 1.0)
    assert s.frame == _na(c.mac, GW_MAC, GW6, "fe80::858:aff:fe2a:103", 1, 1)


def test_ns_for_a_local_pod_and_dad():
    st = dual_state()
    dp, c, o = datapath6(st, "node-1"), pod(st, "client"), pod(st, "other")
    [s] = dp.process(_ns(c, o.ip6), c.host_ifname, 1.0)
    assert s.frame == _na(c.mac, o.mac, o.ip6, c.ip6, 0, 1)  # a host: no Router flag
    assert dp.process(_ns(c, c.ip6, src="::"), c.host_ifname, 1.0) == []  # its own DAD
    assert dp.process(_ns(c, "2001:cafe:42:1::99"), c.host_ifname, 1.0) == []  # nobody
    # a DAD probe for the gateway's address is told it is taken: to all-nodes, S clear
    [s] = dp.process(_ns(c, GW6, src="::"), c.host_ifname, 1.0)
    assert s.frame == _na("33:33:00:00:00:01", GW_MAC, GW6, "ff02::1", 1, 0)
    [d] = dp.process(_ns(c, GW6, hlim=64), c.host_ifname, 1.0)  # forwarded ND: RFC 4861 §7.1.1
    assert d.reason is DropReason.INVALID_PACKET


def test_router_solicitation_and_mld_are_consumed():
    st = dual_state()
    dp, c = datapath6(st, "node-1"), pod(st, "client")
    rs = Ether(src=c.mac, dst="33:33:00:00:00:02") / IPv6(src=c.ip6, dst="ff02::2", hlim=255) \
        / ICMPv6ND_RS()
    assert dp.process(bytes(rs), c.host_ifname, 1.0) == []  # no router advertises on cni0
    mld = Ether(src=c.mac, dst="33:33:00:00:00:16") / IPv6(src="::", dst="ff02::16", hlim=1) \
        / IPv6ExtHdrHopByHop(options=[RouterAlert()]) / ICMPv6MLReport2()
    assert dp.process(bytes(mld), c.host_ifname, 1.0) == []
    assert dp.counters["nd_ignored"] == 2 and not any(k.startswith("drop:") for k in
                                                       dp.counters)


def test_ipv4_only_node_still_drops_ipv6():
    from tests.unit.pipeline_pair import datapath, make_state

    st = make_state()
    dp, c = datapath(st, "node-1"), pod(st, "client")
    [d] = dp.process(_ns(type("P", (), {"mac": c.mac, "ip6": "fe80::1"})(), "fe80::2"),
                     c.host_ifname, 0)
    assert d.reason is DropReason.UNSUPPORTED_L3 and d.detail == "ethertype 0x86dd"


def test_echo_to_the_gateway_and_time_exceeded():
    st = dual_state()
    dp, c = datapath6(st, "node-1"), pod(st, "client")
    req = eth6(c, dst=GW6) / ICMPv6EchoRequest(id=7, seq=3, data=b"ping")
    [s] = dp.process(bytes(req), c.host_ifname, 1.0)
    assert s.frame == bytes(Ether(src=GW_MAC, dst=c.mac) / IPv6(src=GW6, dst=c.ip6) /
                            ICMPv6EchoReply(id=7, seq=3, data=b"ping"))
    w = pod(st, "web-0")
    last = eth6(c, dst=w.ip6, hlim=1) / UDP(sport=5000, dport=53) / b"q"
    s, d = dp.process(bytes(last), c.host_ifname, 1.0)
    assert d.reason is DropReason.TTL_EXCEEDED
    quote = bytes(last)[14:]
    assert s.frame == bytes(Ether(src=GW_MAC, dst=c.mac) / IPv6(src=GW6, dst=c.ip6) /
                            ICMPv6TimeExceeded(code=0) / quote)


def test_local_routing_decrements_hop_limit_and_bridging_does_not():
    st = dual_state(("node-1",))
    dp, c, w = datapath6(st, "node-1"), pod(st, "client"), pod(st, "web-0")
    seg = eth6(c, dst=w.ip6) / TCP(sport=40000, dport=8080, flags="S")
    [s] = dp.process(bytes(seg), c.host_ifname, 1.0)
    want = Ether(src=GW_MAC, dst=w.mac) / IPv6(src=c.ip6, dst=w.ip6, hlim=63) / \
        TCP(sport=40000, dport=8080, flags="S")
    assert s.port == w.host_ifname and s.frame == bytes(want)
    seg = eth6(c, dst_mac=w.mac, dst=w.ip6) / TCP(sport=40001, dport=8080, flags="S")
    [s] = dp.process(bytes(seg), c.host_ifname, 1.0)
    assert s.frame == bytes(seg)  # cni0 bridging: untouched


def test_spoofed_ipv6_source_is_dropped():
    st = dual_state()
    dp, c, o = datapath6(st, "node-1"), pod(st, "client"), pod(st, "other")
    [d] = dp.process(bytes(eth6(c, src=o.ip6) / TCP()), c.host_ifname, 1.0)
    assert d.reason is DropReason.INVALID_SOURCE


def _pair(st):
    n1, n2 = datapath6(st, "node-1"), datapath6(st, "node-2")
    return n1, n2, st.node("node-1").underlay_ip6, st.node("node-2").underlay_ip6


def test_clusterip_dnat_vxlan_and_reverse_nat_round_trip():
    st = dual_state()
    n1, n2, u1, u2 = _pair(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    syn = eth6(c) / TCP(sport=40000, dport=80, flags="S", seq=1000)
    [e] = n1.process(bytes(syn), c.host_ifname, 1.0)
    assert type(e) is Encap and e.dst_ip == u2 and e.dst_port == 8472  # flannel-v6.1's outer
    inner = Ether(src="0a:5b:00:00:00:01", dst="0a:5b:00:00:00:02") / \
        IPv6(src=c.ip6, dst=w.ip6, hlim=63) / TCP(sport=40000, dport=8080, flags="S", seq=1000)
    assert e.payload == bytes(VXLAN(vni=1, flags=0x08) / inner)  # checksum recomputed by Scapy
    [s] = n2.process_underlay(e.payload, u1, 1.0)
    assert s.port == w.host_ifname
    assert s.frame == bytes(Ether(src=GW2_MAC, dst=w.mac) / IPv6(src=c.ip6, dst=w.ip6, hlim=62)
                            / TCP(sport=40000, dport=8080, flags="S", seq=1000))
    synack = Ether(src=w.mac, dst=GW2_MAC) / IPv6(src=w.ip6, dst=c.ip6) / \
        TCP(sport=8080, dport=40000, flags="SA", seq=5000, ack=1001)
    [e] = n2.process(bytes(synack), w.host_ifname, 1.0)
    assert e.dst_ip == u1
    [s] = n1.process_underlay(e.payload, u2, 1.0)
    assert s.port == c.host_ifname
    assert s.frame == bytes(Ether(src=GW_MAC, dst=c.mac) / IPv6(src=VIP6, dst=c.ip6, hlim=62) /
                            TCP(sport=80, dport=40000, flags="SA", seq=5000, ack=1001))
    # the handshake's ACK and data: established, rewritten incrementally, still valid
    for flags, data in (("A", b""), ("PA", b"GET / HTTP/1.1\r\n\r\n")):
        seg = eth6(c) / TCP(sport=40000, dport=80, flags=flags, seq=1001, ack=5001) / data
        [e] = n1.process(bytes(seg), c.host_ifname, 2.0)
        got = Ether(e.payload[8:])
        want = Ether(src="0a:5b:00:00:00:01", dst="0a:5b:00:00:00:02") / \
            IPv6(src=c.ip6, dst=w.ip6, hlim=63) / \
            TCP(sport=40000, dport=8080, flags=flags, seq=1001, ack=5001) / data
        assert bytes(got) == bytes(want)
    conn = n1.ct.table[bytes((6,)) + ip6_bytes(c.ip6) + ip6_bytes(VIP6) +
                       (40000).to_bytes(2, "big") + (80).to_bytes(2, "big")][0]
    assert conn.assured and conn.backend == (ip6_bytes(w.ip6), 8080)


def test_conntrack_keys_per_family_do_not_collide():
    st = dual_state(("node-1",))
    dp, c, w = datapath6(st, "node-1"), pod(st, "client"), pod(st, "web-0")
    v4 = Ether(src=c.mac, dst=GW_MAC) / IP(src=c.ip, dst="10.43.0.11") / \
        TCP(sport=40000, dport=80, flags="S")
    v6 = eth6(c) / TCP(sport=40000, dport=80, flags="S")
    [s4] = dp.process(bytes(v4), c.host_ifname, 1.0)
    [s6] = dp.process(bytes(v6), c.host_ifname, 1.0)
    assert IP(s4.frame[14:]).dst == w.ip and IPv6(s6.frame[14:]).dst == w.ip6
    keys = sorted(len(k) for k in dp.ct.table)
    assert keys == [13, 13, KEY6_LEN, KEY6_LEN] and len(dp.ct) == 2


def test_service_without_endpoints_is_rejected():
    st = dual_state()
    dp, c = datapath6(st, "node-1"), pod(st, "client")
    syn = eth6(c, dst=EMPTY6) / TCP(sport=40000, dport=80, flags="S", seq=77)
    s, d = dp.process(bytes(syn), c.host_ifname, 1.0)
    assert d.reason is DropReason.NO_ENDPOINTS
    assert s.frame == bytes(Ether(src=GW_MAC, dst=c.mac) / IPv6(src=EMPTY6, dst=c.ip6) /
                            TCP(sport=80, dport=40000, flags="RA", seq=0, ack=78, window=0))
    dgram = eth6(c, dst=EMPTY6) / UDP(sport=5000, dport=53) / b"query"
    s, d = dp.process(bytes(dgram), c.host_ifname, 1.0)
    # kube-proxy's REJECT: ip6tables' icmp6-port-unreachable (RFC 4443 §3.1, code 4)
    assert s.frame == bytes(Ether(src=GW_MAC, dst=c.mac) / IPv6(src=EMPTY6, dst=c.ip6) /
                            ICMPv6DestUnreach(code=4) / bytes(dgram)[14:])
    [d] = dp.process(bytes(eth6(c, dst=VIP6) / ICMPv6EchoRequest()), c.host_ifname, 1.0)
    assert d.reason is DropReason.UNSUPPORTED_L4  # no answer from a VIP


def test_udp_icmpv6_error_from_backend_is_translated():
    st = dual_state(("node-1",))
    dp, c, w = datapath6(st, "node-1"), pod(st, "client"), pod(st, "web-0")
    q = eth6(c) / UDP(sport=5000, dport=53) / b"query"
    [s] = dp.process(bytes(q), c.host_ifname, 1.0)
    assert IPv6(s.frame[14:]).dst == w.ip6
    # the backend's kernel: nobody on 5353, port unreachable quoting what it got
    err = Ether(src=w.mac, dst=GW_MAC) / IPv6(src=w.ip6, dst=c.ip6) / \
        ICMPv6DestUnreach(code=4) / s.frame[14:]
    [s] = dp.process(bytes(err), w.host_ifname, 1.0)
    got = IPv6(s.frame[14:])
    assert got.src == VIP6 and got.dst == c.ip6
    quote = got[ICMPv6DestUnreach].payload
    assert quote.src == c.ip6 and quote.dst == VIP6 and quote.payload.dport == 53
    again = IPv6(bytes(got))
    del again[ICMPv6DestUnreach].cksum
    assert IPv6(bytes(again))[ICMPv6DestUnreach].cksum == got[ICMPv6DestUnreach].cksum


def test_overlay_checks_and_remote_time_exceeded():
    st = dual_state()
    n1, n2, u1, u2 = _pair(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    inner = Ether(src="0a:5b:00:00:00:01", dst="0a:5b:00:00:00:02") / \
        IPv6(src=c.ip6, dst=w.ip6, hlim=1) / UDP(sport=1, dport=2)
    payload = bytes(VXLAN(vni=1, flags=0x08) / inner)
    d1, d2 = n2.process_underlay(payload, u1, 1.0)
    assert d2.reason is DropReason.TTL_EXCEEDED and type(d1) is Encap and d1.dst_ip == u1
    err = Ether(d1.payload[8:])
    assert err[ICMPv6TimeExceeded] and err[IPv6].src == GW6_2 and err[IPv6].dst == c.ip6
    [d] = n2.process_underlay(payload, "fd00:e::99", 1.0)
    assert d.reason is DropReason.INVALID_SOURCE  # not a peer
    v4 = bytes(VXLAN(vni=1, flags=0x08) / Ether(src="0a:5b:00:00:00:01",
                                                 dst="0a:5b:00:00:00:02") /
               IP(src=c.ip, dst=w.ip) / UDP())
    [d] = n2.process_underlay(v4, u1, 1.0)
    assert d.reason is DropReason.UNSUPPORTED_L3  # flannel-v6.1 carries IPv6 only
    ping = Ether(src="0a:5b:00:00:00:01", dst="0a:5b:00:00:00:02") / \
        IPv6(src=c.ip6, dst=GW6_2) / ICMPv6EchoRequest(id=1, seq=1)
    [e] = n2.process_underlay(bytes(VXLAN(vni=1, flags=0x08) / ping), u1, 1.0)
    assert Ether(e.payload[8:])[ICMPv6EchoReply].id == 1  # node-2's cni0 answers


def test_fill_l4_checksum_ipv6():
    """CHECKSUM_PARTIAL IPv6 frames (the agent finishes them with packets.fill_l4_checksum)."""
    st = dual_state()
    c, w = pod(st, "client"), pod(st, "web-0")
    good = bytes(eth6(c, dst=w.ip6) / UDP(sport=1, dport=2) / b"data")
    partial = bytearray(good)
    partial[54 + 6:54 + 8] = b"\x12\x34"
    assert fill_l4_checksum(partial) and bytes(partial) == good
    good = bytes(eth6(c, dst=w.ip6) / TCP(sport=1, dport=2, flags="PA") / b"data")
    partial = bytearray(good)
    partial[54 + 16:54 + 18] = b"\0\0"
    assert fill_l4_checksum(partial) and bytes(partial) == good
    assert not fill_l4_checksum(bytearray(bytes(eth6(c) / ICMPv6EchoRequest())))


def test_ipv6_unknown_destination_and_fragments():
    from scapy.layers.inet6 import IPv6ExtHdrFragment

    st = dual_state()
    dp, c = datapath6(st, "node-1"), pod(st, "client")
    [d] = dp.process(bytes(eth6(c, dst="2001:db8::1") / UDP()), c.host_ifname, 1.0)
    assert d.reason is DropReason.NO_ROUTE
    [d] = dp.process(bytes(eth6(c, dst="2001:cafe:42:1::99") / UDP()), c.host_ifname, 1.0)
    assert d.reason is DropReason.NO_ROUTE
    # a later fragment whose first was not seen: to a ClusterIP dropped (frags.py)
    frag = eth6(c) / IPv6ExtHdrFragment(id=1, m=1, offset=9, nh=17) / (b"x" * 64)
    [d] = dp.process(bytes(frag), c.host_ifname, 1.0)
    assert d.reason is DropReason.FRAG_NOT_SUPPORTED
    # a first fragment to the ClusterIP is DNAT'ed (test_datapath_frags6), to a pod routed
    frag = eth6(c) / IPv6ExtHdrFragment(id=2, m=1) / UDP(sport=1, dport=53) / (b"x" * 64)
    [e] = dp.process(bytes(frag), c.host_ifname, 1.0)
    assert type(e) is Encap
    w = pod(st, "web-0")
    frag = eth6(c, dst=w.ip6) / IPv6ExtHdrFragment(id=1, m=1, offset=9, nh=17) / (b"x" * 8)
    [e] = dp.process(bytes(frag), c.host_ifname, 1.0)  # to a pod: routed, port-less rules
    assert type(e) is Encap


def test_drops_are_counted_and_sends_are_actions():
    st = dual_state()
    dp, c = datapath6(st, "node-1"), pod(st, "client")
    out = dp.process(bytes(eth6(c, dst="2001:db8::1") / UDP()), c.host_ifname, 1.0)
    assert all(isinstance(a, Drop | Send | Encap) for a in out)
    assert dp.counters["drop:NO_ROUTE"] == 1


def test_client_ip_affinity_and_udp_flows_follow_ipv6_endpoints():
    import dataclasses

    from emunet.datapath import NodeTables

    st = dual_state(("node-1", "node-1"))
    ss = st.services[("blog", "web")]
    ss.service = dataclasses.replace(ss.service, session_affinity="ClientIP",
                                     affinity_timeout=600)
    dp, c = datapath6(st, "node-1"), pod(st, "client")
    dsts = set()
    for sport in range(40000, 40010):
        [s] = dp.process(bytes(eth6(c) / TCP(sport=sport, dport=80, flags="S")), c.host_ifname,
                         1.0)
        dsts.add(IPv6(s.frame[14:]).dst)
    assert len(dsts) == 1  # ClientIP: the client's IPv6 address keeps its backend
    [s] = dp.process(bytes(eth6(c) / UDP(sport=5000, dport=53) / b"q"), c.host_ifname, 1.0)
    backend = IPv6(s.frame[14:]).dst
    n = len(dp.ct)
    for p in st.pods.values():
        if p.ip6 == backend:
            p.ready = False
    dp.update(NodeTables.from_state(st, "node-1"))
    assert len(dp.ct) == n - 1  # its UDP flow forgotten, as kube-proxy clears it
