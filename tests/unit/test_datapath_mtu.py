"""What does not fit the pod MTU (issue 19): a NodePort frame from the underlay (MTU 1500/1520)
larger than the pod MTU (1450) gets ICMPv6 Packet Too Big (RFC 4443 §3.2) or, IPv4 with DF,
ICMP fragmentation needed with the next-hop MTU (RFC 1191 §4), each compared byte for byte with
Scapy's build; IPv4 without DF is forwarded in fragments of the pod MTU (reassembled and
checked with Scapy, across the tunnel too); a GSO super-frame is never too big; a frame of
exactly the MTU passes."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP, UDPerror
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPerror6, IPv6
from scapy.layers.l2 import Ether

from emunet.datapath import Drop, DropReason, Encap, Send
from tests.unit.test_datapath_nodeport6 import (
    ETH0_MAC,
    NODE1,
    NODE1_6,
    OUT4,
    OUT6,
    OUT_MAC,
    dp_of,
    dual_np_state,
    syn6,
)

MTU = 1450


def udp6(size: int, dport: int = 30053) -> Ether:
    """A UDP datagram of `size` bytes from its IPv6 header on."""
    pad = size - 40 - 8
    return Ether(src=OUT_MAC, dst=ETH0_MAC) / IPv6(src=OUT6, dst=NODE1_6) / \
        UDP(sport=5000, dport=dport) / (b"x" * pad)


def udp4(size: int, df: bool, dport: int = 30053) -> Ether:
    pad = size - 20 - 8
    return Ether(src=OUT_MAC, dst=ETH0_MAC) / \
        IP(src=OUT4, dst=NODE1, id=5, flags="DF" if df else 0) / \
        UDP(sport=5000, dport=dport) / (b"x" * pad)


def test_ipv6_too_big_gets_packet_too_big_byte_exact():
    dp = dp_of(dual_np_state(), "node-1")
    big = bytes(udp6(1500))
    send, drop = dp.process_nodeport(big, 1.0)
    assert isinstance(drop, Drop) and drop.reason is DropReason.FRAG_NEEDED
    # RFC 4443 §3.2 and §2.4(c): as much of the packet as fits in 1280 bytes, MTU = next hop's
    want = Ether(src=ETH0_MAC, dst=OUT_MAC) / IPv6(src=NODE1_6, dst=OUT6, hlim=64) / \
        ICMPv6PacketTooBig(mtu=MTU) / big[14:14 + 1280 - 48]
    assert isinstance(send, Send) and send.port == "eth0" and send.frame == bytes(want)
    assert len(send.frame) == 14 + 1280
    assert dp.counters["icmp_too_big"] == 1 and "nodeport_dnat" not in dp.counters
    assert len(dp.ct) == 0  # dropped before its connection was confirmed


def test_ipv6_at_the_mtu_passes_and_a_gso_frame_is_never_too_big():
    st = dual_np_state()
    dp = dp_of(st, "node-1")
    [s] = dp.process_nodeport(bytes(udp6(MTU)), 1.0)
    assert isinstance(s, Send) and s.port == st.pods[("web", "w1")].host_ifname
    seg = syn6(flags="A", data=b"y" * 3000)  # a GRO train from eth0: the agent says gso
    [s] = dp_of(st, "node-1").process_nodeport(bytes(seg), 1.0, True)
    assert isinstance(s, Send) and len(s.frame) == len(bytes(seg))


def test_ipv6_established_flow_then_too_big():
    dp = dp_of(dual_np_state(), "node-1")
    [s] = dp.process_nodeport(bytes(udp6(100)), 1.0)
    assert isinstance(s, Send)
    send, drop = dp.process_nodeport(bytes(udp6(1460)), 1.1)
    got = Ether(send.frame)
    assert drop.reason is DropReason.FRAG_NEEDED and got[ICMPv6PacketTooBig].mtu == MTU
    # the quote is the packet as the client sent it (to the node port, not the backend)
    assert (got[IPerror6].dst, got[UDPerror].dport) == (NODE1_6, 30053)


def test_ipv6_too_big_to_a_remote_backend_too():
    dp = dp_of(dual_np_state(), "node-1")
    big = syn6(dport=30081, flags="A", data=b"z" * 1460)  # 1520 bytes: the underlay's MTU
    send, drop = dp.process_nodeport(bytes(big), 1.0)
    assert drop.reason is DropReason.FRAG_NEEDED and Ether(send.frame)[ICMPv6PacketTooBig]
    [e] = dp.process_nodeport(bytes(syn6(dport=30081)), 1.0)
    assert isinstance(e, Encap)


def test_no_endpoints_still_rejects_a_big_datagram():
    dp = dp_of(dual_np_state(), "node-1")
    send, drop = dp.process_nodeport(bytes(udp6(1500, dport=30999)), 1.0)
    assert drop.reason is DropReason.NO_ENDPOINTS  # the node's own port: no forwarding


def test_ipv4_df_gets_fragmentation_needed_byte_exact():
    dp = dp_of(dual_np_state(), "node-1")
    big = bytes(udp4(1500, df=True))
    send, drop = dp.process_nodeport(big, 1.0)
    assert isinstance(drop, Drop) and drop.reason is DropReason.FRAG_NEEDED
    # RFC 792 type 3 code 4, RFC 1191 §4 Next-Hop MTU; Linux quotes up to 576 bytes in all
    want = Ether(src=ETH0_MAC, dst=OUT_MAC) / \
        IP(src=NODE1, dst=OUT4, ttl=64, id=0, flags="DF") / \
        ICMP(type=3, code=4, nexthopmtu=MTU) / big[14:14 + 576 - 28]
    got = Ether(send.frame)
    assert send.port == "eth0" and (got[ICMP].type, got[ICMP].code, got[ICMP].nexthopmtu) == (
        3, 4, MTU)
    assert send.frame == bytes(want)  # both checksums as Scapy computes them


def test_ipv4_at_the_mtu_passes_with_df():
    dp = dp_of(dual_np_state(), "node-1")
    [s] = dp.process_nodeport(bytes(udp4(MTU, df=True)), 1.0)
    assert isinstance(s, Send) and Ether(s.frame)[UDP].dport == 5353
    assert len(s.frame) == 14 + MTU


def test_ipv4_gso_super_frame_is_not_judged():
    st = dual_np_state()
    dp = dp_of(st, "node-1")
    seg = Ether(src=OUT_MAC, dst=ETH0_MAC) / IP(src=OUT4, dst=NODE1, flags="DF") / \
        TCP(sport=40000, dport=30080, flags="A") / (b"y" * 3000)
    [s] = dp.process_nodeport(bytes(seg), 1.0, True)
    assert isinstance(s, Send) and s.port == st.pods[("web", "w1")].host_ifname


def _reassembled(frames: list[bytes]) -> Ether:
    """The fragments (each a frame) put back together as the receiving stack would, checking
    each against its own header checksum on the way."""
    pkts = [Ether(f) for f in frames]
    for p in pkts:
        redo = p.copy()
        del redo[IP].chksum
        assert bytes(Ether(bytes(redo))) == bytes(p), "fragment header checksum"
    whole = b"".join(bytes(p[IP].payload) for p in sorted(pkts, key=lambda p: p[IP].frag))
    first = pkts[0]
    return Ether(src=first.src, dst=first.dst) / IP(
        src=first[IP].src, dst=first[IP].dst, ttl=first[IP].ttl, id=first[IP].id,
        proto=first[IP].proto) / UDP(whole)


def test_ipv4_without_df_is_forwarded_in_fragments_of_the_pod_mtu():
    st = dual_np_state()
    dp = dp_of(st, "node-1")
    w1, gw = st.pods[("web", "w1")], st.node("node-1")
    big = udp4(1500, df=False)
    sends = dp.process_nodeport(bytes(big), 1.0)
    assert [type(a) for a in sends] == [Send, Send]
    assert all(a.port == w1.host_ifname and len(a.frame) - 14 <= MTU for a in sends)
    f1, f2 = (Ether(a.frame) for a in sends)
    assert (f1[IP].flags, f1[IP].frag, f2[IP].flags, f2[IP].frag) == ("MF", 0, 0, 1424 // 8)
    assert f1[IP].len == 20 + 1424 and f1[IP].id == f2[IP].id == 5
    got = _reassembled([a.frame for a in sends])
    want = Ether(src=gw.gateway_mac, dst=w1.mac) / \
        IP(src=gw.gateway_ip, dst=w1.ip, ttl=63, id=5) / UDP(sport=5000, dport=5353) / \
        (b"x" * (1500 - 28))
    # the reassembled datagram is the NAT'ed one with a correct UDP checksum over it all
    assert bytes(got[UDP]) == bytes(Ether(bytes(want))[UDP])
    assert dp.counters["ip_fragmented"] == 1 and dp.counters["ip_fragments_out"] == 2


def test_ipv4_fragments_to_a_remote_backend_cross_the_tunnel_tracked_by_ip_id():
    st = dual_np_state()
    dp1, dp2 = dp_of(st, "node-1"), dp_of(st, "node-2")
    w2 = st.pods[("web", "w2")]
    big = Ether(src=OUT_MAC, dst=ETH0_MAC) / IP(src=OUT4, dst=NODE1, id=9) / \
        TCP(sport=40000, dport=30081, flags="S") / (b"y" * (1500 - 40))
    encaps = dp1.process_nodeport(bytes(big), 1.0)
    assert [type(a) for a in encaps] == [Encap, Encap]
    delivered = [a for e in encaps for a in dp2.process_underlay(e.payload, "192.168.1.11", 1.0)]
    assert [type(a) for a in delivered] == [Send, Send]
    assert all(a.port == w2.host_ifname for a in delivered)
    f1, f2 = (Ether(a.frame) for a in delivered)
    assert (f1[IP].dst, f2[IP].dst, f1[TCP].dport) == (w2.ip, w2.ip, 8080)
    assert f1[IP].ttl == 62 and f2[IP].frag == 1424 // 8


def test_split_copies_only_the_copied_options():
    from emunet.datapath.frags import split

    pkt = Ether() / IP(dst="10.0.0.1", options=b"\x94\x04\x00\x00" + b"\x07\x07\x04" +
                       b"\0" * 4 + b"\x00") / UDP() / (b"z" * 100)
    frames = split(bytes(pkt), 14, 60)  # 32 + 24 bytes, then 24-byte headers + 32
    first, *rest = (Ether(f) for f in frames)
    assert first[IP].ihl == 8 and all(p[IP].ihl == 6 for p in rest)  # router alert only
    assert all(bytes(p[IP])[20:24] == b"\x94\x04\x00\x00" for p in rest)
    assert b"".join(bytes(p[IP].payload) for p in (first, *rest)) == bytes(pkt[IP].payload)
    assert [p[IP].frag * 8 for p in (first, *rest)] == [0, 24, 56, 88]
    assert [p[IP].flags for p in (first, *rest)] == ["MF", "MF", "MF", 0]
    assert all(len(f) - 14 <= 60 for f in frames)
