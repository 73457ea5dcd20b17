"""What does not fit the pod MTU (issue 19): a NodePort frame from the underlay (MTU 1500/1520)
larger than the pod MTU (1450) gets ICMPv6 Packet Too Big (RFC 4443 §3.2) or, IPv4 with DF,
ICMP fragmentation needed with the next-hop MTU (RFC 1191 §4), each compared byte for byte with
Scapy's build; IPv4 without DF is forwarded as before; a GSO super-frame is never too big;
a frame of exactly the MTU passes."""

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
    # the IP header's id/flags are the datapath's own choice: compare from the ICMP header on
    assert bytes(got[ICMP]) == bytes(want[ICMP])
    assert got[IP].src == NODE1 and got[IP].dst == OUT4
    redone = Ether(send.frame)
    del redone[IP].chksum
    assert bytes(Ether(bytes(redone))) == send.frame  # the IPv4 header checksum holds


def test_ipv4_without_df_is_forwarded_as_before():
    st = dual_np_state()
    dp = dp_of(st, "node-1")
    big = udp4(1500, df=False)
    [s] = dp.process_nodeport(bytes(big), 1.0)
    assert isinstance(s, Send) and s.port == st.pods[("web", "w1")].host_ifname
    assert len(s.frame) == len(bytes(big))
    [s] = dp.process_nodeport(bytes(udp4(MTU, df=True)), 1.0)  # at the MTU: it fits
    assert isinstance(s, Send) and Ether(s.frame)[UDP].dport == 5353


def test_ipv4_gso_super_frame_is_not_judged():
    st = dual_np_state()
    dp = dp_of(st, "node-1")
    seg = Ether(src=OUT_MAC, dst=ETH0_MAC) / IP(src=OUT4, dst=NODE1, flags="DF") / \
        TCP(sport=40000, dport=30080, flags="A") / (b"y" * 3000)
    [s] = dp.process_nodeport(bytes(seg), 1.0, True)
    assert isinstance(s, Send) and s.port == st.pods[("web", "w1")].host_ifname
