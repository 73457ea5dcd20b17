"""Differential test of the IPv6 fast path (emunet.datapath.fastpath `Hop6`), as
test_fastpath_diff is for IPv4: two dual-stack clusters from the same state, fast path on and
off, the same random IPv6 traffic (TCP and UDP through the IPv6 ClusterIP, TCP and ICMPv6 echo
straight to pods, bridged and routed, cross-node, replies, hop limits 1 and 2, flag changes,
traced packets, truncated and padded frames) mixed with the events that invalidate hops; after
every step every answer, counter, kept event and conntrack entry must be equal. And the fast
path must have been taken: the IPv6 connections carry hops.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from emunet.datapath import Encap
from emunet.observe.hook import TRACE_TOS
from emunet.state.cluster import ClusterState
from tests.unit.dualstack import VIP6, make_dual
from tests.unit.pipeline_pair import make_state
from tests.unit.test_fastpath_diff import EVENT, GW, PODS, Cluster, apply_event

DSTS6 = ((VIP6, 80, "tcp"), (VIP6, 53, "udp"), ("web-0", 8080, "tcp"), ("web-1", 8080, "tcp"),
         ("other", 9000, "udp"), ("web-0", 0, "icmp"), ("other", 0, "icmp"))
PLAIN = (False, 64, 0, 0)  # traced, hop limit, bridged MAC, odd (1 truncated, 2 padded)
VARIANT = hs.tuples(hs.integers(0, 9).map(lambda x: x == 0),
                    hs.sampled_from((64, 64, 64, 2, 1)), hs.sampled_from((0, 0, 0, 1)),
                    hs.sampled_from((0,) * 5 + (1, 2)))
FLAGS = hs.sampled_from(("",) * 8 + ("PA", "A", "FA", "R", "S", "SA"))
OPEN = hs.tuples(hs.just("open"), hs.sampled_from(PODS), hs.integers(0, len(DSTS6) - 1),
                 hs.integers(0, 2))
DATA = hs.tuples(hs.just("data"), hs.integers(0, 5), hs.booleans(), FLAGS,
                 hs.one_of(hs.just(PLAIN), VARIANT))
OP = hs.integers(0, 99).flatmap(lambda i: OPEN if i < 15 else DATA if i < 85 else EVENT)
OPS = hs.lists(OP, min_size=10, max_size=60)
EXAMPLES = int(os.environ.get("EMUNET_FUZZ_EXAMPLES", "200"))


class Cluster6(Cluster):
    """test_fastpath_diff's Cluster with the flannel-v6 underlay too: an Encap to a node's
    IPv6 underlay address arrives from the sender's IPv6 underlay address."""

    def __init__(self, st: ClusterState, fast: bool) -> None:
        super().__init__(st, fast)
        self.v6 = {st.node(n).underlay_ip6: n for n in self.dps}

    def _run(self, node: str, where: tuple, actions: list, now: float) -> list:
        self.trace.append((node, where, actions))
        out = []
        for a in actions:
            if type(a) is Encap:
                six = ":" in a.dst_ip
                peer = (self.v6 if six else self.underlay).get(a.dst_ip)
                me = next(ip for ip, n in (self.v6 if six else self.underlay).items()
                          if n == node)
                if peer is not None:
                    out += self._run(peer, ("vxlan", me), self.dps[peer].process_underlay(
                        a.payload, me, now), now)
            elif hasattr(a, "frame"):
                out.append((node, a.port, a.frame))
        return out


def _pod(st: ClusterState, name: str):
    return st.pods.get(("blog", name))


def frame6(st: ClusterState, me, dip: str, l4, v: tuple) -> tuple[str, bytes, str]:
    traced, hlim, bridged, odd = v
    dmac = GW[me.node]
    dpod = next((p for p in st.pods.values() if p.ip6 == dip), None)
    if bridged and dpod is not None and dpod.node == me.node:
        dmac = dpod.mac  # cni0 bridging
    ip = IPv6(src=me.ip6, dst=dip, hlim=hlim, tc=TRACE_TOS if traced else 0)
    frame = bytes(Ether(src=me.mac, dst=dmac) / ip / l4 / (b"q" * 8))
    if odd == 1:
        frame = frame[:-3]  # shorter than its payload length
    elif odd == 2:
        frame += b"\0" * 6  # Ethernet padding
    return me.node, frame, me.host_ifname


def client_frame6(st: ClusterState, src: str, dst_i: int, flags: str, sport: int,
                  v: tuple) -> tuple[str, bytes, str] | None:
    me = _pod(st, src)
    dst, dport, proto = DSTS6[dst_i]
    if ":" not in dst:
        dpod = _pod(st, dst)
        if dpod is None:
            return None
        dst = dpod.ip6
    if me is None or not me.ip6:
        return None
    if proto == "icmp":
        l4 = ICMPv6EchoRequest(id=sport + 1, seq=1)
    elif proto == "udp":
        l4 = UDP(sport=40000 + sport, dport=dport)
    else:
        l4 = TCP(sport=40000 + sport, dport=dport, flags=flags, seq=100)
    return frame6(st, me, dst, l4, v)


def server_frame6(st: ClusterState, got: tuple, flags: str, v: tuple
                  ) -> tuple[str, bytes, str] | None:
    _, port, frame = got
    me = next((p for p in st.pods.values() if p.host_ifname == port), None)
    e = Ether(frame)
    if me is None or IPv6 not in e:
        return None
    ip = e[IPv6]
    l4 = ip.payload
    if isinstance(l4, TCP):
        fl = str(l4.flags)
        flags = flags or ("SA" if fl == "S" else "FA" if "F" in fl else "A")
        l4n = TCP(sport=l4.dport, dport=l4.sport, flags=flags, seq=l4.ack, ack=l4.seq + 1)
    elif isinstance(l4, UDP):
        l4n = UDP(sport=l4.dport, dport=l4.sport)
    elif isinstance(l4, ICMPv6EchoRequest):
        l4n = ICMPv6EchoReply(id=l4.id, seq=l4.seq)
    else:
        return None
    return frame6(st, me, ip.src, l4n, v)


class Run6:
    def __init__(self) -> None:
        self.st = make_dual(make_state(web_nodes=("node-2", "node-1")))
        self.fast, self.slow = Cluster6(self.st, True), Cluster6(self.st, False)
        self.now = 100.0
        self.flows: list[tuple[tuple[str, bytes, str], tuple | None]] = []

    def send(self, built: tuple[str, bytes, str] | None) -> list:
        if built is None:
            return []
        node, frame, port = built
        got = self.fast.send(node, frame, port, self.now)
        assert got == self.slow.send(node, frame, port, self.now)
        self.now += 0.001
        return got

    def step(self, op: tuple) -> None:
        st, kind = self.st, op[0]
        if kind == "open":
            first = client_frame6(st, op[1], op[2], "S", op[3], PLAIN)
            got = self.send(first)
            if first is None:
                return
            at = got[0] if got else None
            if at is not None:
                self.send(server_frame6(st, at, "", PLAIN))
                if DSTS6[op[2]][2] == "tcp":
                    self.send(client_frame6(st, op[1], op[2], "A", op[3], PLAIN))
            self.flows.append((first, at))
        elif kind == "data":
            if not self.flows:
                return
            first, at = self.flows[op[1] % len(self.flows)]
            if op[2] and at is not None:
                self.send(server_frame6(st, at, op[3] or "PA", op[4]))
            else:
                e = Ether(first[1])
                l4 = e[IPv6].payload.copy()
                l4.remove_payload()
                if isinstance(l4, TCP):
                    l4.flags = op[3] or "PA"
                l4.chksum = None
                if isinstance(l4, UDP):
                    l4.len = None
                me = next((p for p in st.pods.values() if p.host_ifname == first[2]), None)
                if me is not None:
                    self.send(frame6(st, me, e[IPv6].dst, l4, op[4]))
        else:
            self.now = apply_event(st, op, [self.fast, self.slow], self.now)
        assert self.fast.trace == self.slow.trace, op
        assert self.fast.snapshot() == self.slow.snapshot(), op


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(OPS)
def test_the_ipv6_fast_path_answers_as_the_pipeline(ops):
    r = Run6()
    for op in ops:
        r.step(op)


def test_established_ipv6_flows_take_the_fast_path():
    """Through the IPv6 ClusterIP across nodes (DNAT, encap, decap), straight to a pod, UDP,
    ICMPv6 echo: after the handshake each direction holds a hop, and the next packets'
    answers equal the pipeline's (the step asserts it)."""
    r = Run6()
    for dst in range(len(DSTS6)):
        r.step(("open", "client", dst, 1))
        for back in (False, True, False, True):
            r.step(("data", dst, back, "PA", PLAIN))
    six = [c for dp in r.fast.dps.values() for c, rep in dp.ct.table.values()
           if not rep and len(c.orig[0]) == 16]
    assert six and all(c.hop is not None and c.rhop is not None for c in six), \
        [(c.service, c.hop, c.rhop) for c in six]
    assert all(c.hop is None and c.rhop is None for dp in r.slow.dps.values()
               for c, _ in dp.ct.table.values())
