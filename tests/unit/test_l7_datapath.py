"""The L7 redirect in the datapath: a new TCP flow that an HTTP rule covers reaches the pod on
its proxy port (only the port rewritten), replies come back from the original port, and an
L3/L4 deny stays a silent drop. Pure: PipelinePair, Scapy-built frames."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from emunet.datapath import DropReason, Send
from tests.unit.pipeline_pair import PipelinePair, l7_state, pod

GW1, GW2 = "0a:58:0a:2a:01:01", "0a:58:0a:2a:02:01"
VIP = "10.43.0.11"
def _syn(p, dst: str, dport: int, proto=TCP) -> bytes:
    l4 = TCP(sport=40000, dport=dport, flags="S", seq=1) if proto is TCP else \
        UDP(sport=40000, dport=dport)
    return bytes(Ether(src=p.mac, dst=GW1) / IP(src=p.ip, dst=dst) / l4)


@pytest.mark.parametrize("web_node", ["node-2", "node-1"])
def test_redirect_to_proxy_port_and_back(web_node: str) -> None:
    st = l7_state(web_node)
    pair = PipelinePair(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    (got,) = pair.send("node-1", _syn(c, VIP, 80), c.host_ifname)
    pkt = Ether(got.frame)
    assert got.port == w.host_ifname
    assert (pkt[IP].src, pkt[IP].dst, pkt[TCP].dport) == (c.ip, w.ip, 15001)  # client kept
    assert pkt[TCP].chksum == Ether(bytes(_fresh(pkt)))[TCP].chksum
    gw = GW2 if web_node == "node-2" else GW1
    reply = Ether(src=w.mac, dst=gw) / IP(src=w.ip, dst=c.ip) / TCP(
        sport=15001, dport=40000, flags="SA", seq=9, ack=2)
    (back,) = pair.send(web_node, bytes(reply), w.host_ifname)
    rp = Ether(back.frame)
    assert back.port == c.host_ifname
    assert (rp[IP].src, rp[TCP].sport, rp[TCP].dport) == (VIP, 80, 40000)
    assert rp[TCP].chksum == Ether(bytes(_fresh(rp)))[TCP].chksum


def test_l3l4_deny_is_silent_and_udp_is_not_redirected() -> None:
    st = l7_state("node-2")
    pair = PipelinePair(st)
    o, w = pod(st, "other"), pod(st, "web-0")
    assert pair.send("node-1", _syn(o, w.ip, 8080), o.host_ifname) == []  # no RST, no 403
    assert pair.drops[-1].reason == DropReason.POLICY_DENIED
    c = pod(st, "client")
    assert pair.send("node-1", _syn(c, w.ip, 5353, UDP), c.host_ifname) == []  # not allowed
    assert pair.drops[-1].reason == DropReason.POLICY_DENIED


def _fresh(pkt):
    """The same packet with checksums recomputed by Scapy."""
    p = pkt.copy()
    del p[IP].chksum
    del p[TCP].chksum
    return p


def test_redirect_to_proxy_port_over_ipv6() -> None:
    """Dual-stack: the same redirect through the IPv6 ClusterIP (`Services._dnat`) and to the
    pod's IPv6 address directly (`_to_proxy`); replies come back from the original port."""
    from scapy.layers.inet6 import IPv6

    from tests.unit.dualstack import VIP6, datapath6, eth6, make_dual

    st = make_dual(l7_state("node-1"))  # client and web-0 on node-1: one datapath
    dp = datapath6(st, "node-1")
    c, w = pod(st, "client"), pod(st, "web-0")
    for dst, dport, sport in ((VIP6, 80, 40000), (w.ip6, 8080, 40001)):
        syn = eth6(c, dst=dst) / TCP(sport=sport, dport=dport, flags="S", seq=1)
        (got,) = [a for a in dp.process(bytes(syn), c.host_ifname, 100.0)
                  if isinstance(a, Send)]  # and the policy verdict
        pkt = Ether(got.frame)
        assert got.port == w.host_ifname
        assert (pkt[IPv6].src, pkt[IPv6].dst, pkt[TCP].dport) == (c.ip6, w.ip6, 15001)
        fresh = pkt.copy()
        del fresh[TCP].chksum
        assert pkt[TCP].chksum == Ether(bytes(fresh))[TCP].chksum
        reply = Ether(src=w.mac, dst=GW1) / IPv6(src=w.ip6, dst=c.ip6) / TCP(
            sport=15001, dport=sport, flags="SA", seq=9, ack=2)
        (back,) = [a for a in dp.process(bytes(reply), w.host_ifname, 100.1)
                   if isinstance(a, Send)]
        rp = Ether(back.frame)
        assert back.port == c.host_ifname
        assert (rp[IPv6].src, rp[TCP].sport, rp[TCP].dport) == (dst, dport, sport)
