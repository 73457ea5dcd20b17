"""A client's own fragments to a node port (both families), with Scapy's fragment/fragment6
and defragment/defragment6: the first fragment is DNAT'ed and SNAT'ed as the NodePort stage
does, every later one gets the same addresses (tracked by IP id, emunet.datapath.frags), to a
local pod or over the tunnel, and the backend's fragmented reply goes back out of eth0
un-NAT'ed; fragments above the pod MTU get Packet Too Big (IPv6) or are cut again (IPv4);
a fragment before its first is dropped; the eth0 filter takes the fragments."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP, defragment, fragment
from scapy.layers.inet6 import (
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrFragment,
    defragment6,
    fragment6,
)
from scapy.layers.l2 import Ether

from emunet.datapath import Drop, DropReason, Encap, Send
from emunet.datapath.frags import split
from emunet.host.underlay import bpf_matches, bpf_program, frag_blocks, ingress_drop_commands
from tests.unit.test_datapath_nodeport6 import (
    ETH0_MAC,
    GW1_6,
    NODE1,
    NODE1_6,
    NODE2_6,
    OUT4,
    OUT6,
    OUT_MAC,
    dp_of,
    dual_np_state,
)

MTU = 1450
PAYLOAD = bytes(range(256)) * 12  # 3072 bytes, no two 8-byte blocks alike in a row


def frags6(size: int, mtu: int, dport: int = 30053, ident: int = 77, sport: int = 5000,
           src: str = OUT6, dst: str = NODE1_6, macs: tuple[str, str] = (OUT_MAC, ETH0_MAC)
           ) -> list[bytes]:
    """A UDP datagram of `size` payload bytes as the client's kernel fragments it (RFC 8200
    §4.5) for a path MTU of `mtu`, each fragment a frame."""
    pkt = IPv6(src=src, dst=dst) / IPv6ExtHdrFragment(id=ident) / \
        UDP(sport=sport, dport=dport) / PAYLOAD[:size]
    return [bytes(Ether(src=macs[0], dst=macs[1]) / f) for f in fragment6(pkt, mtu)]


def frags4(size: int, fragsize: int, dport: int = 30053, ident: int = 77) -> list[bytes]:
    pkt = IP(src=OUT4, dst=NODE1, id=ident) / UDP(sport=5000, dport=dport) / PAYLOAD[:size]
    return [bytes(Ether(src=OUT_MAC, dst=ETH0_MAC) / f) for f in fragment(pkt, fragsize)]


def whole6(frames: list[bytes]) -> IPv6:
    """What the receiver's kernel reassembles (Scapy's defragment6), its UDP checksum
    checked over the reassembled datagram."""
    got = defragment6([IPv6(bytes(Ether(f)[IPv6])) for f in frames])
    got = IPv6(bytes(got))
    check = got.copy()
    del check[UDP].chksum
    assert bytes(IPv6(bytes(check))[UDP]) == bytes(got[UDP]), "UDP checksum"
    return got


def whole4(frames: list[bytes]) -> IP:
    pkts = [IP(bytes(Ether(f)[IP])) for f in frames]
    for p in pkts:  # each fragment's own header checksum
        redo = p.copy()
        del redo.chksum
        assert bytes(IP(bytes(redo))) == bytes(p), "IPv4 header checksum"
    [got] = defragment(pkts)
    got = IP(bytes(got))
    check = got.copy()
    del check[UDP].chksum
    del check.chksum
    assert bytes(IP(bytes(check))[UDP]) == bytes(got[UDP]), "UDP checksum"
    return got


def frames_of(acts: list) -> list[bytes]:
    return [a.frame for a in acts if isinstance(a, Send)]


# ---- IPv6 -------------------------------------------------------------------------------------

def test_ipv6_fragments_to_a_local_backend_and_the_fragmented_reply():
    st = dual_np_state()
    dp = dp_of(st, "node-1")
    w1, gw = st.pods[("web", "w1")], st.node("node-1")
    frames = frags6(3000, MTU)  # after a Packet Too Big: the client fragments at the pod MTU
    assert len(frames) == 3
    out = [a for f in frames for a in dp.process_nodeport(f, 1.0)]
    assert all(isinstance(a, Send) and a.port == w1.host_ifname for a in out)
    assert all(len(a.frame) - 14 <= MTU for a in out)
    for a in out:  # each fragment DNAT'ed and SNAT'ed, hop limit - 1
        got = Ether(a.frame)
        assert (got[IPv6].src, got[IPv6].dst, got[IPv6].hlim) == (GW1_6, w1.ip6, 63)
        assert (got.src, got.dst) == (gw.gateway_mac, w1.mac)
    got = whole6(frames_of(out))
    assert (got[UDP].sport, got[UDP].dport, bytes(got[UDP].payload)) == (
        5000, 5353, PAYLOAD[:3000])
    assert dp.counters["nodeport_dnat"] == 1 and dp.counters["nodeport_fragments"] == 2
    assert not dp.frags  # forgotten at the datagram's last fragment
    # the pod's echo, fragmented by its kernel at its MTU: out of eth0, un-NAT'ed
    back = frags6(3000, MTU, dport=5000, sport=5353, ident=9, src=w1.ip6, dst=GW1_6,
                  macs=(w1.mac, gw.gateway_mac))
    acts = [a for f in back for a in dp.process(f, w1.host_ifname, 1.1)]
    assert all(isinstance(a, Send) and a.port == "eth0" for a in acts)
    for f in frames_of(acts):
        got = Ether(f)
        assert (got.src, got.dst, got[IPv6].src, got[IPv6].dst) == (
            ETH0_MAC, OUT_MAC, NODE1_6, OUT6)
    got = whole6(frames_of(acts))
    assert (got[UDP].sport, got[UDP].dport, bytes(got[UDP].payload)) == (
        30053, 5000, PAYLOAD[:3000])
    assert not dp.frags


def test_ipv6_fragments_to_a_remote_backend_over_flannel_v6_and_back():
    st = dual_np_state()
    dp1, dp2 = dp_of(st, "node-1"), dp_of(st, "node-2")
    w2, n2 = st.pods[("web", "w2")], st.node("node-2")
    # web/remote is TCP only: a (rare) fragmented TCP segment, tracked the same way
    pkt = IPv6(src=OUT6, dst=NODE1_6) / IPv6ExtHdrFragment(id=3) / \
        TCP(sport=40000, dport=30081, flags="PA", seq=1, ack=1) / PAYLOAD[:2500]
    frames = [bytes(Ether(src=OUT_MAC, dst=ETH0_MAC) / f) for f in fragment6(pkt, 1400)]
    encaps = [a for f in frames for a in dp1.process_nodeport(f, 1.0)]
    assert all(isinstance(a, Encap) and a.dst_ip == NODE2_6 for a in encaps)
    delivered = [a for e in encaps for a in dp2.process_underlay(e.payload, NODE1_6, 1.0)]
    assert all(isinstance(a, Send) and a.port == w2.host_ifname for a in delivered)
    got = defragment6([IPv6(bytes(Ether(a.frame)[IPv6])) for a in delivered])
    got = IPv6(bytes(got))
    assert (got.src, got.dst, got[TCP].dport, bytes(got[TCP].payload)) == (
        GW1_6, w2.ip6, 8080, PAYLOAD[:2500])
    check = got.copy()
    del check[TCP].chksum
    assert bytes(IPv6(bytes(check))[TCP]) == bytes(got[TCP])
    # the backend's fragmented answer: node-2 tracks it, node-1 un-NATs every fragment
    ans = IPv6(src=w2.ip6, dst=GW1_6) / IPv6ExtHdrFragment(id=4) / \
        TCP(sport=8080, dport=40000, flags="PA", seq=1, ack=2501) / PAYLOAD[:2000]
    back = [bytes(Ether(src=w2.mac, dst=n2.gateway_mac) / f) for f in fragment6(ans, MTU)]
    enc = [a for f in back for a in dp2.process(f, w2.host_ifname, 1.1)]
    assert all(isinstance(a, Encap) for a in enc)
    out = [a for e in enc for a in dp1.process_underlay(e.payload, NODE2_6, 1.1)]
    assert all(isinstance(a, Send) and a.port == "eth0" for a in out)
    got = IPv6(bytes(defragment6([IPv6(bytes(Ether(a.frame)[IPv6])) for a in out])))
    assert (got.src, got.dst, got[TCP].sport, got[TCP].dport) == (NODE1_6, OUT6, 30081, 40000)
    assert bytes(got[TCP].payload) == PAYLOAD[:2000]
    assert not dp1.frags and not dp2.frags


def test_ipv6_fragments_above_the_pod_mtu_get_one_packet_too_big():
    dp = dp_of(dual_np_state(), "node-1")
    frames = frags6(3000, 1520)  # the client's first try, at its link's MTU
    first, *rest = frames
    send, drop = dp.process_nodeport(first, 1.0)
    assert isinstance(drop, Drop) and drop.reason is DropReason.FRAG_NEEDED
    want = Ether(src=ETH0_MAC, dst=OUT_MAC) / IPv6(src=NODE1_6, dst=OUT6) / \
        ICMPv6PacketTooBig(mtu=MTU) / first[14:14 + 1280 - 48]
    assert send.frame == bytes(want)  # it quotes the UDP header: the client finds its socket
    for f in rest:  # the datagram is lost: its other fragments are not answered again
        [d] = dp.process_nodeport(f, 1.0)
        assert d.reason is DropReason.FRAG_NOT_SUPPORTED
    assert dp.counters["icmp_too_big"] == 1 and not dp.frags and len(dp.ct) == 0


def test_ipv6_fragment_before_its_first_and_after_expiry_is_dropped():
    from emunet.datapath.frags import FRAG_TIMEOUT

    dp = dp_of(dual_np_state(), "node-1")
    first, second, third = frags6(3000, MTU)
    [d] = dp.process_nodeport(second, 1.0)
    assert d.reason is DropReason.FRAG_NOT_SUPPORTED and "before its first" in d.detail
    [s] = dp.process_nodeport(first, 2.0)
    assert isinstance(s, Send)
    [d] = dp.process_nodeport(third, 2.0 + FRAG_TIMEOUT)  # ipfrag_time: 30 s
    assert d.reason is DropReason.FRAG_NOT_SUPPORTED
    dp.expire(2.0 + FRAG_TIMEOUT)
    assert not dp.frags


def test_ipv6_first_fragment_to_a_port_nobody_owns_is_rejected_and_its_rest_dropped():
    dp = dp_of(dual_np_state(), "node-1")
    first, *rest = frags6(3000, MTU, dport=30999)
    send, drop = dp.process_nodeport(first, 1.0)
    assert drop.reason is DropReason.NO_ENDPOINTS and send.port == "eth0"
    assert [dp.process_nodeport(f, 1.0)[0].reason for f in rest] == \
        [DropReason.FRAG_NOT_SUPPORTED] * 2


def test_ipv6_atomic_fragment_is_forwarded_and_leaves_no_entry():
    st = dual_np_state()
    dp = dp_of(st, "node-1")
    pkt = Ether(src=OUT_MAC, dst=ETH0_MAC) / IPv6(src=OUT6, dst=NODE1_6) / \
        IPv6ExtHdrFragment(id=1, m=0, offset=0) / UDP(sport=5000, dport=30053) / b"hi"
    [s] = dp.process_nodeport(bytes(pkt), 1.0)  # RFC 6946: a whole packet
    got = Ether(s.frame)
    assert (got[IPv6].dst, got[UDP].dport, bytes(got[UDP].payload)) == (
        st.pods[("web", "w1")].ip6, 5353, b"hi")
    assert not dp.frags


# ---- IPv4 -------------------------------------------------------------------------------------

def test_ipv4_fragments_within_the_pod_mtu_to_a_local_backend():
    st = dual_np_state()
    dp = dp_of(st, "node-1")
    w1, gw = st.pods[("web", "w1")], st.node("node-1")
    frames = frags4(3000, 1400)  # after fragmentation needed: the client's own fragments
    out = [a for f in frames for a in dp.process_nodeport(f, 1.0)]
    assert len(out) == len(frames) and all(a.port == w1.host_ifname for a in out)
    got = whole4(frames_of(out))
    assert (got.src, got.dst, got.ttl, got.id) == (gw.gateway_ip, w1.ip, 63, 77)
    assert (got[UDP].dport, bytes(got[UDP].payload)) == (5353, PAYLOAD[:3000])
    assert not dp.frags
    # the reply the pod's kernel fragments: out of eth0 from the node port
    ans = IP(src=w1.ip, dst=gw.gateway_ip, id=5) / UDP(sport=5353, dport=5000) / PAYLOAD[:3000]
    back = [bytes(Ether(src=w1.mac, dst=gw.gateway_mac) / f) for f in fragment(ans, 1400)]
    acts = [a for f in back for a in dp.process(f, w1.host_ifname, 1.1)]
    assert all(isinstance(a, Send) and a.port == "eth0" for a in acts)
    got = whole4(frames_of(acts))
    assert (got.src, got.dst, got[UDP].sport, got[UDP].dport) == (NODE1, OUT4, 30053, 5000)


def test_ipv4_fragments_above_the_pod_mtu_are_cut_again():
    st = dual_np_state()
    dp = dp_of(st, "node-1")
    w1 = st.pods[("web", "w1")]
    frames = frags4(3000, 1480)  # a default client's 3000 bytes on a 1500-byte link
    assert all(len(f) - 14 > MTU for f in frames[:-1])
    out = [a for f in frames for a in dp.process_nodeport(f, 1.0)]
    assert len(out) > len(frames) and all(a.port == w1.host_ifname for a in out)
    assert all(len(a.frame) - 14 <= MTU for a in out)
    got = whole4(frames_of(out))
    assert (got.dst, got[UDP].dport, bytes(got[UDP].payload)) == (w1.ip, 5353, PAYLOAD[:3000])
    offsets = sorted(Ether(a.frame)[IP].frag for a in out)
    assert offsets[0] == 0 and [Ether(a.frame)[IP].flags for a in out].count("MF") == \
        len(out) - 1  # one last fragment, RFC 791


def test_ipv4_fragments_to_a_remote_backend():
    st = dual_np_state()
    dp1, dp2 = dp_of(st, "node-1"), dp_of(st, "node-2")
    w2 = st.pods[("web", "w2")]
    pkt = IP(src=OUT4, dst=NODE1, id=11) / TCP(sport=40000, dport=30081, flags="PA") / \
        PAYLOAD[:2500]
    frames = [bytes(Ether(src=OUT_MAC, dst=ETH0_MAC) / f) for f in fragment(pkt, 1400)]
    encaps = [a for f in frames for a in dp1.process_nodeport(f, 1.0)]
    assert all(isinstance(a, Encap) for a in encaps)
    delivered = [a for e in encaps for a in dp2.process_underlay(e.payload, NODE1, 1.0)]
    assert len(delivered) == len(frames) and all(a.port == w2.host_ifname for a in delivered)
    [got] = defragment([IP(bytes(Ether(a.frame)[IP])) for a in delivered])
    got = IP(bytes(got))
    assert (got.dst, got[TCP].dport, bytes(got[TCP].payload)) == (w2.ip, 8080, PAYLOAD[:2500])


def test_ipv4_later_fragment_before_its_first_is_dropped():
    dp = dp_of(dual_np_state(), "node-1")
    first, second, *_ = frags4(3000, 1400)
    [d] = dp.process_nodeport(second, 1.0)
    assert d.reason is DropReason.FRAG_NOT_SUPPORTED


def test_split_of_a_fragment_keeps_its_offset_and_mf():
    pkt = IP(src="10.0.0.1", dst="10.0.0.2", id=3, flags="MF", frag=185) / (b"m" * 1480)
    parts = [Ether(f)[IP] for f in split(bytes(Ether() / pkt), 14, 1000)]
    assert [p.frag for p in parts] == [185, 185 + 122]
    assert [p.flags for p in parts] == ["MF", "MF"]  # the piece that ends it keeps MF
    last = IP(src="10.0.0.1", dst="10.0.0.2", id=3, frag=185) / (b"m" * 1480)
    parts = [Ether(f)[IP] for f in split(bytes(Ether() / last), 14, 1000)]
    assert [p.flags for p in parts] == ["MF", 0]
    assert b"".join(bytes(p.payload) for p in parts) == b"m" * 1480


def test_the_eth0_filter_takes_every_fragment_of_a_datagram():
    prog = bpf_program(NODE1, NODE1_6)
    assert all(bpf_matches(prog, f) for f in frags6(3000, MTU))
    assert all(bpf_matches(prog, f) for f in frags4(3000, 1400))
    assert not any(bpf_matches(bpf_program(NODE1), f) for f in frags6(3000, MTU))


def test_the_tc_drop_matches_exactly_the_fragments():
    # u32 matches (value, mask) on the flags + offset halfword: every word with MF or an
    # offset, whatever DF and the reserved bit say, and no other
    blocks = frag_blocks()
    matched = {w for w in range(1 << 16) for v, m in blocks if w & m == v}
    assert matched == {w for w in range(1 << 16) if w & 0x3FFF}
    cmds = ingress_drop_commands("ns", NODE1, node_ip6=NODE1_6)
    v4 = [c for c in cmds if "u16" in c]
    assert len(v4) == 2 * len(blocks) and all(c[c.index("at") + 1] == "6" for c in v4)
    assert all(f"{NODE1}/32" in c and "npdrop" in c for c in v4)


def test_observed_fragments_are_described_as_flows_from_the_network():
    # the event hook keeps a node port's new connections and drops from eth0: a fragmented
    # datagram's first fragment (new) and a later fragment dropped before its first must both
    # describe and render (records of fragments carry no ports but the first's)
    import random

    from emunet.datapath import NodeTables
    from emunet.observe import hubble
    from emunet.observe.hook import ObservedDatapath
    from emunet.observe.record import describe

    st = dual_np_state()
    dp = ObservedDatapath(NodeTables.from_state(st, "node-1"), random.Random(1))
    six, four = frags6(3000, MTU), frags4(3000, 1400)
    for frames in (six, four):
        dp.process_nodeport(frames[0], 1.0)
    dp.process_nodeport(frags6(3000, MTU, ident=5)[1], 1.0)  # before its first: dropped
    dp.process_nodeport(frags4(3000, 1400, ident=5)[1], 1.0)
    recs = [describe(ev, "node-1", st.node("node-1").underlay_ip, dp.ct.table, dp.traced, 0.0,
                     {p.port: p.name for p in dp.tables.pods_by_port.values()})
            for ev in dp.drain()]
    assert [r["from"] for r in recs] == ["network"] * 4
    assert [r.get("verdict") for r in recs][2:] == ["DROPPED", "DROPPED"]
    assert all(r["drop"]["reason"] == "FRAG_NOT_SUPPORTED" for r in recs[2:])
    for r in recs:
        assert hubble.flows(r, hubble.Directory(st))
