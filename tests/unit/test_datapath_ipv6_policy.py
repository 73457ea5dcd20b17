"""NetworkPolicy over IPv6 (dual-stack, issue 19): a pod's two addresses carry one identity,
label peers match both families, ipBlocks are per family (cidr minus except), enforced by the
IPv6 pipeline on new connections."""

from __future__ import annotations

import dataclasses

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from emunet.datapath import Drop, DropReason, Encap
from emunet.datapath.ipv6pkt import ip6_bytes
from emunet.model.netpol import (
    EGRESS,
    INGRESS,
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    Peer,
    PolicyPort,
    Rule,
)
from emunet.packets import PROTO_TCP, ip_bytes
from emunet.policy.compile import compile_node
from emunet.policy.verdict import WORLD
from tests.unit.dualstack import datapath6, dual_state, eth6
from tests.unit.pipeline_pair import GW_MAC, pod

WEB = LabelSelector((("app", "web"),))


def _state(*policies: NetworkPolicy):
    st = dual_state()
    c = pod(st, "client")
    c.pod = dataclasses.replace(c.pod, labels={"role": "client"})
    st.policies = {p.key: p for p in policies}
    return st


def _syn6(src, dst_ip6: str, sport: int = 40000, dport: int = 8080) -> bytes:
    return bytes(eth6(src, dst=dst_ip6) / TCP(sport=sport, dport=dport, flags="S"))


def _syn4(src, dst_ip: str, sport: int = 40000, dport: int = 8080) -> bytes:
    return bytes(Ether(src=src.mac, dst=GW_MAC) / IP(src=src.ip, dst=dst_ip) /
                 TCP(sport=sport, dport=dport, flags="S"))


def test_one_identity_for_both_addresses():
    st = _state()
    pol = compile_node(st, "node-1")
    for p in st.pods.values():
        assert pol.identities[ip_bytes(p.ip)] == pol.identities[ip6_bytes(p.ip6)] >= 256
    c = pod(st, "client")
    assert pol.pods[ip_bytes(c.ip)] is pol.pods[ip6_bytes(c.ip6)]
    assert pol.identities[ip6_bytes("2001:cafe:42:2::1")] == 1  # a node gateway: HOST


def test_label_peer_allows_both_families_on_the_receiving_node():
    ingress = NetworkPolicy("blog", "web-from-client", WEB, (INGRESS,),
                            ingress=(Rule((Peer(LabelSelector((("role", "client"),))),),
                                          (PolicyPort("TCP", 8080),)),))
    st = _state(ingress)
    n1, n2 = datapath6(st, "node-1"), datapath6(st, "node-2")
    c, o, w = pod(st, "client"), pod(st, "other"), pod(st, "web-0")
    u1 = st.node("node-1").underlay_ip6
    for sender, allowed in ((c, True), (o, False)):
        [e] = n1.process(_syn6(sender, w.ip6), sender.host_ifname, 1.0)
        assert type(e) is Encap
        out = n2.process_underlay(e.payload, u1, 1.0)
        denied = isinstance(out[-1], Drop) and out[-1].reason is DropReason.POLICY_DENIED
        assert denied is not allowed, out
        if allowed:
            assert out[0].allowed and out[0].rule.policy == "blog/web-from-client"
    # and IPv4, by the same identity
    [e] = n1.process(_syn4(c, w.ip), c.host_ifname, 1.0)
    assert n2.process_underlay(e.payload, st.node("node-1").underlay_ip, 1.0)[0].allowed


def test_ipblock_v6_with_except_and_family_separation():
    block = IPBlock("2001:cafe:42::/56", ("2001:cafe:42:1::4/128",))
    egress = NetworkPolicy("blog", "client-to-v6", LabelSelector((("role", "client"),)),
                           (EGRESS,), egress=(Rule((Peer(ip_block=block),)),))
    st = _state(egress)
    n1 = datapath6(st, "node-1")
    c, o, w = pod(st, "client"), pod(st, "other"), pod(st, "web-0")
    assert o.ip6 == "2001:cafe:42:1::4"
    v, e = n1.process(_syn6(c, w.ip6), c.host_ifname, 1.0)
    assert v.allowed and type(e) is Encap  # web-0's IPv6 address is in the block
    v, d = n1.process(_syn6(c, o.ip6, sport=40001), c.host_ifname, 1.0)
    assert d.reason is DropReason.POLICY_DENIED and not v.allowed  # the except
    # an IPv6 block says nothing of IPv4: the client's IPv4 egress is isolated and denied
    v, d = n1.process(_syn4(c, w.ip, sport=40002), c.host_ifname, 1.0)
    assert d.reason is DropReason.POLICY_DENIED
    # WORLD addresses: matched by the IPv6 block only (0.0.0.0/0 is not ::/0, nor the reverse)
    pol = n1.tables.policy
    src = ip6_bytes(c.ip6)
    assert pol.identities.get(ip6_bytes("2001:cafe:42:ff::9"), WORLD) == WORLD
    assert pol.egress(src, ip6_bytes("2001:cafe:42:ff::9"), PROTO_TCP, 443).allowed
    assert not pol.egress(src, ip6_bytes("2001:db8::1"), PROTO_TCP, 443).allowed
    assert not pol.egress(ip_bytes(c.ip), ip_bytes("8.8.8.8"), PROTO_TCP, 443).allowed


def test_ipv4_block_zero_does_not_open_ipv6():
    egress = NetworkPolicy("blog", "client-v4-only", LabelSelector((("role", "client"),)),
                           (EGRESS,), egress=(Rule((Peer(ip_block=IPBlock("0.0.0.0/0")),)),))
    st = _state(egress)
    pol = compile_node(st, "node-1")
    c = pod(st, "client")
    assert pol.egress(ip_bytes(c.ip), ip_bytes("8.8.8.8"), PROTO_TCP, 443).allowed
    assert not pol.egress(ip6_bytes(c.ip6), ip6_bytes("2001:db8::1"), PROTO_TCP, 443).allowed
    w = pod(st, "web-0")
    assert pol.egress(ip_bytes(c.ip), ip_bytes(w.ip), PROTO_TCP, 8080).allowed
    assert not pol.egress(ip6_bytes(c.ip6), ip6_bytes(w.ip6), PROTO_TCP, 8080).allowed


def test_service_dnat_then_policy_on_the_backend_ipv6():
    ingress = NetworkPolicy("blog", "deny-web", WEB, (INGRESS,))
    st = _state(ingress)
    n1, n2 = datapath6(st, "node-1"), datapath6(st, "node-2")
    c = pod(st, "client")
    [e] = n1.process(_syn6(c, "2001:cafe:43::b", dport=80), c.host_ifname, 1.0)
    out = n2.process_underlay(e.payload, st.node("node-1").underlay_ip6, 1.0)
    assert out[-1].reason is DropReason.POLICY_DENIED and out[0].policies == ("blog/deny-web",)
