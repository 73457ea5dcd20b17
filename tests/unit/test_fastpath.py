"""The established fast path (emunet.datapath.fastpath): it is taken, it answers as the full
pipeline does, and each of its inputs invalidates it when it changes (endpoints, pods, routes
and peers, policy, an agent restart), while packets that need the pipeline take it (TTL 1,
TCP flag changes, fragments, traced packets, NodePort replies)."""

from __future__ import annotations

import dataclasses
import random

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from emunet.config import load_config_text
from emunet.datapath import Datapath, Drop, DropReason, Encap, NodeTables, Send
from emunet.datapath.conntrack import Conntrack
from emunet.observe.hook import TRACE_TOS, ObservedDatapath
from emunet.packets import VXLAN
from tests.unit.pipeline_pair import (
    BLOG_CLUSTER,
    GW2_MAC,
    GW_MAC,
    VIP,
    PipelinePair,
    Spy,
    make_state,
    pod,
)
from tests.unit.test_datapath_nodeport import ETH0_MAC, NODE1, OUT_IP, OUT_MAC
from tests.unit.test_datapath_nodeport import _state as nodeport_state
from tests.unit.test_datapath_nodeport import _syn as nodeport_syn

GW1, GW2 = GW_MAC, GW2_MAC
DENY = BLOG_CLUSTER + """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-deny-all, namespace: blog}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
"""


class Spied(PipelinePair):
    """A PipelinePair whose datapaths count the packets the full pipeline decides."""

    def __init__(self, st, fast: bool = True) -> None:
        super().__init__(st)
        self.slow: list[str] = []
        for n in list(self.dps):
            self.dps[n] = self._spy(Datapath(NodeTables.from_state(st, n), random.Random(1),
                                             fastpath=fast))

    def _spy(self, dp: Datapath) -> Spy:
        return Spy(dp, self.slow)

    def update(self, st, now=None) -> None:
        for n, dp in self.dps.items():
            dp.update(NodeTables.from_state(st, n), now)


def seg(src, dst_ip, sport, dport, flags, gw=GW1, ttl=64, tos=0, payload=b"data", mf=False):
    return bytes(Ether(src=src.mac, dst=gw) / IP(src=src.ip, dst=dst_ip, ttl=ttl, tos=tos,
                                               flags="MF" if mf else 0)
                 / TCP(sport=sport, dport=dport, flags=flags) / payload)


def established(pair: Spied, c, w, gw_w=GW2, sport=40000) -> None:
    """client -> VIP:80 -> w:8080, the handshake and one data segment each way (learnt)."""
    pair.send("node-1", seg(c, VIP, sport, 80, "S"), c.host_ifname)
    pair.send(w.node, seg(w, c.ip, 8080, sport, "SA", gw_w), w.host_ifname)
    pair.send("node-1", seg(c, VIP, sport, 80, "A"), c.host_ifname)
    pair.send("node-1", seg(c, VIP, sport, 80, "PA"), c.host_ifname)
    pair.send(w.node, seg(w, c.ip, 8080, sport, "PA", gw_w), w.host_ifname)
    pair.slow.clear()


def test_established_packets_take_the_hop_and_answer_as_the_pipeline():
    st = make_state()
    fast, slow = Spied(st), Spied(st, fast=False)
    c, w = pod(st, "client"), pod(st, "web-0")
    for pair in (fast, slow):
        established(pair, c, w)
    for _ in range(3):
        got = [fast.send("node-1", seg(c, VIP, 40000, 80, "PA"), c.host_ifname),
               fast.send("node-2", seg(w, c.ip, 8080, 40000, "PA", GW2), w.host_ifname)]
        assert got == [slow.send("node-1", seg(c, VIP, 40000, 80, "PA"), c.host_ifname),
                       slow.send("node-2", seg(w, c.ip, 8080, 40000, "PA", GW2),
                                 w.host_ifname)]
    assert fast.slow == []  # DNAT + encap, decap + deliver, and back: no pipeline
    assert len(slow.slow) == 12
    assert fast.dps["node-1"].counters == slow.dps["node-1"].counters
    assert fast.dps["node-2"].counters == slow.dps["node-2"].counters
    [conn] = fast.dps["node-1"].ct.conns()
    assert conn.hop.dst_ip == st.node("node-2").underlay_ip and conn.rhop.port == c.host_ifname
    assert all(cn.hop is None for cn in slow.dps["node-1"].ct.conns())  # the switch


def test_an_endpoint_leaving_rebalances_udp_through_the_pipeline():
    st = make_state(web_nodes=("node-1", "node-1"))
    pair = Spied(st)
    c = pod(st, "client")

    def dns() -> Send:
        f = Ether(src=c.mac, dst=GW1) / IP(src=c.ip, dst=VIP) / UDP(sport=5000, dport=53) / b"q"
        [s] = pair.send("node-1", bytes(f), c.host_ifname)
        return s

    first = dns()
    dns()
    pair.slow.clear()
    assert dns() == first and pair.slow == []  # the hop (UDP, unreplied: steady)
    backend = next(p for p in st.pods.values() if p.host_ifname == first.port)
    backend.ready = False
    pair.update(st, pair.now)  # kube-proxy forgets UDP flows to a gone endpoint
    moved = dns()
    assert pair.slow == ["_from_pod"] and moved.port != first.port


def test_a_removed_pod_stales_every_hop_even_without_the_scrub():
    st = make_state()
    pair = Spied(st)
    c, o = pod(st, "client"), pod(st, "other")
    pair.send("node-1", seg(c, o.ip, 40000, 9000, "S"), c.host_ifname)
    pair.send("node-1", seg(o, c.ip, 9000, 40000, "SA"), o.host_ifname)
    pair.send("node-1", seg(c, o.ip, 40000, 9000, "A"), c.host_ifname)
    pair.send("node-1", seg(c, o.ip, 40000, 9000, "PA"), c.host_ifname)
    pair.slow.clear()
    [s] = pair.send("node-1", seg(c, o.ip, 40000, 9000, "PA"), c.host_ifname)
    assert s.port == o.host_ifname and pair.slow == []
    gen = pair.dps["node-1"].route_gen
    st.remove_pod(o.key)
    pair.update(st)  # the conntrack entry stays (no scrub): only the generation tells
    assert pair.dps["node-1"].route_gen == gen + 1
    assert pair.send("node-1", seg(c, o.ip, 40000, 9000, "PA"), c.host_ifname) == []
    assert pair.slow == ["_from_pod"] and pair.drops[-1].reason is DropReason.NO_ROUTE


def test_a_new_vni_reaches_the_encap_prefix():
    st = make_state()
    pair = Spied(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    established(pair, c, w)
    [e] = pair.dps["node-1"].process(seg(c, VIP, 40000, 80, "PA"), c.host_ifname, pair.now)
    assert VXLAN.unpack_from(e.payload)[1] == b"\0\0\1" and pair.slow == []
    st.cluster = dataclasses.replace(st.cluster, vxlan_vni=7)
    pair.update(st)
    [e] = pair.dps["node-1"].process(seg(c, VIP, 40000, 80, "PA"), c.host_ifname, pair.now)
    assert isinstance(e, Encap) and VXLAN.unpack_from(e.payload)[1] == b"\0\0\7"
    assert pair.slow == ["_from_pod"]
    pair.dps["node-1"].process(seg(c, VIP, 40000, 80, "PA"), c.host_ifname, pair.now)
    assert pair.slow == ["_from_pod"]  # learnt again


def test_a_policy_reload_cuts_an_established_flow_with_a_hop():
    st = make_state()
    pair = Spied(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    established(pair, c, w)
    gen = pair.dps["node-2"].route_gen
    st.policies = {p.key: p for p in load_config_text(DENY, "t.yaml").network_policies}
    pair.update(st, pair.now)
    assert pair.dps["node-2"].route_gen == gen  # policy is no routing input: CUT does it
    assert pair.send("node-1", seg(c, VIP, 40000, 80, "PA"), c.host_ifname) == []
    assert pair.drops[-1].reason is DropReason.POLICY_DENIED
    assert pair.slow == ["_from_overlay"]  # node-1's hop (its egress allows), node-2 polices


def test_an_unchanged_reload_keeps_the_hops():
    st = make_state()
    pair = Spied(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    established(pair, c, w)
    pair.update(st, pair.now)
    [s] = pair.send("node-1", seg(c, VIP, 40000, 80, "PA"), c.host_ifname)
    assert s.port == w.host_ifname and pair.slow == []


def test_a_restarted_agent_learns_its_hops_again():
    st = make_state()
    pair = Spied(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    established(pair, c, w)
    before = pair.send("node-1", seg(c, VIP, 40000, 80, "PA"), c.host_ifname)
    old = pair.dps["node-1"]
    new = pair._spy(Datapath(old.tables, random.Random(1)))
    new.ct = Conntrack()
    assert new.ct.from_records(old.ct.to_records(pair.now), pair.now) == 1
    assert all(cn.hop is None and cn.rhop is None for cn in new.ct.conns())  # not snapshotted
    pair.dps["node-1"] = new
    for _ in range(3):
        assert pair.send("node-1", seg(c, VIP, 40000, 80, "PA"), c.host_ifname) == before
    assert pair.slow == ["_from_pod"]  # the first packet after the restart, then the hop


def test_packets_that_need_the_pipeline_take_it():
    st = make_state()
    pair = Spied(st)
    c, w = pod(st, "client"), pod(st, "web-0")
    established(pair, c, w)
    dp = pair.dps["node-1"]
    [send, drop] = dp.process(seg(c, VIP, 40000, 80, "PA", ttl=1), c.host_ifname, pair.now)
    assert drop.reason is DropReason.TTL_EXCEEDED and Ether(send.frame)[ICMP].type == 11
    dp.process(seg(c, VIP, 40000, 80, "PA", mf=True), c.host_ifname, pair.now)
    dp.process(seg(c, VIP, 40000, 80, "FA"), c.host_ifname, pair.now)
    assert pair.slow == ["_from_pod"] * 3
    assert dp.ct.conns()[0].closing  # the FIN moved the state: no hop for it now


def test_traced_packets_take_the_pipeline():
    st = make_state()
    pair = Spied(st)
    for n in list(pair.dps):
        pair.dps[n] = pair._spy(ObservedDatapath(NodeTables.from_state(st, n),
                                                 random.Random(1)))
    c, w = pod(st, "client"), pod(st, "web-0")
    established(pair, c, w)
    pair.send("node-1", seg(c, VIP, 40000, 80, "PA", tos=TRACE_TOS), c.host_ifname)
    assert pair.slow == ["_from_pod", "_from_overlay"]  # both nodes see the mark
    assert pair.dps["node-1"].events  # and the hook kept it


def test_nodeport_replies_never_take_a_hop():
    """They depend on the neighbour table (its entries age out): always the pipeline."""
    st = nodeport_state()
    dp = Datapath(NodeTables.from_state(st, "node-1"), random.Random(1))
    web, gw = pod(st, "web-0"), st.node("node-1")

    def reply(now: float, flags: str = "A") -> list:
        f = Ether(src=web.mac, dst=gw.gateway_mac) / IP(src=web.ip, dst=gw.gateway_ip) / \
            TCP(sport=8080, dport=40000, flags=flags)
        return dp.process(bytes(f), web.host_ifname, now)

    dp.process_nodeport(bytes(nodeport_syn()), 10.0)
    reply(10.1, "SA")  # a real handshake: the entry is assured and outlives the neighbour
    dp.process_nodeport(bytes(nodeport_syn(flags="A", seq=1001)), 10.2)
    for now in (10.3, 10.4):
        [r] = reply(now)
        assert r.port == "eth0" and Ether(r.frame).dst == OUT_MAC
        assert Ether(r.frame)[IP].dst == OUT_IP and Ether(r.frame).src == ETH0_MAC
    [conn] = dp.ct.conns()
    assert conn.rhop is None
    [d] = reply(10.4 + 601)  # the client's neighbour entry aged out
    assert isinstance(d, Drop) and d.reason is DropReason.NO_ROUTE
    assert "no neighbour entry" in d.detail
    assert NODE1 == gw.underlay_ip
