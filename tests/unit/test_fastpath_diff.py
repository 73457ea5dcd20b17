"""Differential test of the established fast path (emunet.datapath.fastpath).

Two clusters of two nodes, built from the same state and seeds, one with the fast path on and
one with it off (every packet through the full pipeline), get the same random traffic (TCP,
UDP and ping through a ClusterIP, straight to pods, bridged and routed, cross-node, replies,
TTL 1, flag changes, fragments, truncated frames, spoofed MACs and ports, traced packets) mixed
with the events that invalidate what the fast path keeps (endpoint readiness, pod removal with
and without the conntrack scrub, policy and label changes, VNI changes, time passing, expiry,
an agent restart from a snapshot). After every step, every answer (each action, bytes
included), every counter, every kept flow event and every conntrack entry must be equal.
"""

from __future__ import annotations

import dataclasses
import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from emunet.config import load_config_text
from emunet.datapath import Encap, NodeTables
from emunet.datapath.conntrack import Conntrack
from emunet.datapath.ctscrub import pod_owners, stale_ips
from emunet.observe.hook import TRACE_TOS, ObservedDatapath
from emunet.state.cluster import ClusterState
from tests.unit.pipeline_pair import Spy, make_state

NODES = ("node-1", "node-2")
GW = {"node-1": "0a:58:0a:2a:01:01", "node-2": "0a:58:0a:2a:02:01"}
PODS = ("client", "other", "web-0", "web-1")  # web-0 on node-2, the rest on node-1
DSTS = (("10.43.0.11", 80), ("10.43.0.11", 53), ("10.43.0.12", 80), ("web-0", 8080),
        ("web-1", 8080), ("other", 9000), ("client", 9000), ("10.42.1.1", 0),
        ("10.99.0.1", 80))
DENY_OTHER = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client, namespace: blog}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from: [{podSelector: {matchLabels: {role: client}}}]
"""
POLICIES = {p.key: p for p in load_config_text(
    "apiVersion: emunet/v1alpha1\nkind: Cluster\nmetadata: {name: t}\n"
    "spec: {nodes: [{name: node-1}, {name: node-2}]}\n---\n"
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: blog}\n---\n" + DENY_OTHER,
    "t.yaml").network_policies}


class Cluster:
    """Two nodes' ObservedDatapaths joined by their Encap actions; `trace` logs every call."""

    def __init__(self, st: ClusterState, fast: bool) -> None:
        self.fast = fast
        self.dps = {n: ObservedDatapath(NodeTables.from_state(st, n), random.Random(7),
                                        fastpath=fast) for n in NODES}
        self.underlay = {st.node(n).underlay_ip: n for n in NODES}
        self.trace: list = []

    def send(self, node: str, frame: bytes, port: str, now: float) -> list:
        return self._run(node, ("pod", port), self.dps[node].process(frame, port, now), now)

    def _run(self, node: str, where: tuple, actions: list, now: float) -> list:
        self.trace.append((node, where, actions))
        out = []
        me = [ip for ip, n in self.underlay.items() if n == node][0]
        for a in actions:
            if type(a) is Encap:
                peer = self.underlay.get(a.dst_ip)
                if peer is not None:
                    out += self._run(peer, ("vxlan", me), self.dps[peer].process_underlay(
                        a.payload, me, now), now)
            elif hasattr(a, "frame"):
                out.append((node, a.port, a.frame))
        return out

    def update(self, st: ClusterState, now: float, scrub: dict | None) -> None:
        for n, dp in self.dps.items():
            dp.update(NodeTables.from_state(st, n), now)
            if scrub is not None:
                dp.ct.flush_ips(stale_ips(scrub, pod_owners(st)))

    def restart(self, node: str, now: float) -> None:
        """An agent restart: a new datapath loads the old one's snapshot."""
        old = self.dps[node]
        new = ObservedDatapath(old.tables, random.Random(7), fastpath=self.fast)
        new.ct = Conntrack()
        new.ct.from_records(old.ct.to_records(now, closing=False, assured_only=True), now)
        self.dps[node] = new

    def snapshot(self) -> list:
        out = []
        for n, dp in self.dps.items():
            ct = sorted((k.hex(), r, c.state, c.assured, c.replied, round(c.expires, 6))
                        for k, (c, r) in dp.ct.table.items())
            out.append((n, dp.counters, ct, dp.drain(), sorted(dp.frags)))
        return out


def _pod(st: ClusterState, name: str):
    return st.pods.get(("blog", name))


def _by_ip(st: ClusterState, ip: str):
    return next((p for p in st.pods.values() if p.ip == ip), None)


def frame_of(st: ClusterState, me, dip: str, l4, v: tuple) -> tuple[str, bytes, str]:
    """The frame pod `me` sends to `dip` with L4 header `l4`, perturbed by the variant
    v = (tos, ttl, mac, frag, size, odd): a traced TOS, the TTL, bridged (1) or spoofed (2)
    MACs, a first (1) or later (2) fragment, the payload size, and odd=1 truncated, 2 a zero
    UDP checksum, 3 Ethernet padding, 4 sent on another pod's port."""
    tos, ttl, mac, frag, size, odd = v
    dpod = _by_ip(st, dip)
    dmac = GW[me.node]
    if mac == 1 and dpod is not None and dpod.node == me.node:
        dmac = dpod.mac  # bridged, as cni0 would
    smac = me.mac if mac != 2 else "02:00:00:00:00:99"
    ipl = IP(src=me.ip, dst=dip, tos=TRACE_TOS if tos else 0, ttl=ttl, id=7 + size)
    if frag == 1:
        ipl.flags = "MF"
    elif frag == 2:
        ipl.frag = 3
    if odd == 2 and isinstance(l4, UDP):
        l4.chksum = 0  # RFC 768: no checksum
    frame = bytes(Ether(src=smac, dst=dmac) / ipl / l4 / (b"q" * size))
    if odd == 1:
        frame = frame[:-3]  # truncated: shorter than its IP total length
    elif odd == 3:
        frame += b"\0" * 6  # Ethernet padding past the IP packet
    port = me.host_ifname
    if odd == 4:  # injected on another pod's port
        port = next((p.host_ifname for p in st.pods.values() if p.host_ifname != port
                     and p.node == me.node), port)
    return me.node, frame, port


def client_frame(st: ClusterState, src: str, dst_i: int, proto: str, flags: str, sport: int,
                 v: tuple) -> tuple[str, bytes, str] | None:
    me = _pod(st, src)
    dst, dport = DSTS[dst_i]
    if not dst[0].isdigit():
        dpod = _pod(st, dst)
        if dpod is None:
            return None
        dst = dpod.ip
    if me is None:
        return None
    if proto == "icmp":
        l4 = ICMP(type=8, id=sport, seq=v[4])
    elif proto == "udp":
        l4 = UDP(sport=40000 + sport, dport=dport or 53)
    else:
        l4 = TCP(sport=40000 + sport, dport=dport or 80, flags=flags, seq=100)
    return frame_of(st, me, dst, l4, v)


def server_frame(st: ClusterState, got: tuple, flags: str, v: tuple
                 ) -> tuple[str, bytes, str] | None:
    """The answer of the pod that received frame `got` = (node, port, frame)."""
    _, port, frame = got
    me = next((p for p in st.pods.values() if p.host_ifname == port), None)
    if me is None:
        return None
    ip = Ether(frame)[IP]
    l4 = ip.payload
    if flags == "ERR":
        l4n = ICMP(type=3, code=3) / bytes(ip)[:28]
    elif isinstance(l4, TCP):
        fl = str(l4.flags)
        flags = flags or ("SA" if fl == "S" else "FA" if "F" in fl else "A")
        l4n = TCP(sport=l4.dport, dport=l4.sport, flags=flags, seq=l4.ack, ack=l4.seq + 1)
    elif isinstance(l4, UDP):
        l4n = UDP(sport=l4.dport, dport=l4.sport)
    elif isinstance(l4, ICMP) and l4.type == 8:
        l4n = ICMP(type=0, id=l4.id, seq=l4.seq)
    else:
        return None
    return frame_of(st, me, ip.src, l4n, v)


PLAIN = (False, 64, 0, 0, 8, 0)


VARIANT = hs.tuples(hs.integers(0, 9).map(lambda x: x == 0),
                    hs.sampled_from((64, 64, 64, 2, 1)), hs.sampled_from((0,) * 4 + (1, 2)),
                    hs.sampled_from((0,) * 4 + (1, 2)), hs.integers(0, 40),
                    hs.sampled_from((0,) * 3 + (1, 2, 3, 4)))
# ERR: the server answers with an ICMP port unreachable quoting what it got (RFC 792)
FLAGS = hs.sampled_from(("",) * 8 + ("PA", "A", "FA", "R", "S", "SA", "ERR"))
# mostly flows that are delivered: the ClusterIP (TCP, UDP), pods on both nodes
OPEN = hs.tuples(hs.just("open"), hs.sampled_from(PODS),
                 hs.sampled_from((0, 0, 0, 1, 3, 3, 4, 5, 6) + tuple(range(len(DSTS)))),
                 hs.sampled_from(("tcp", "tcp", "udp", "icmp")), hs.integers(0, 2))
DATA = hs.tuples(hs.just("data"), hs.integers(0, 5), hs.booleans(), FLAGS,
                 hs.one_of(hs.just(PLAIN), VARIANT))
PKT = hs.tuples(hs.just("pkt"), hs.sampled_from(PODS), hs.integers(0, len(DSTS) - 1),
                hs.sampled_from(("tcp", "udp", "icmp")), FLAGS, hs.integers(0, 2), VARIANT)
EVENT = hs.one_of(
    hs.tuples(hs.just("time"), hs.sampled_from((0.01, 0.5, 2.5, 31.0, 130.0))),
    hs.tuples(hs.just("expire")),
    hs.tuples(hs.just("ready"), hs.sampled_from(("web-0", "web-1")), hs.booleans()),
    hs.tuples(hs.just("remove"), hs.sampled_from(("web-0", "web-1", "other")), hs.booleans()),
    hs.tuples(hs.just("policy"), hs.booleans()),
    hs.tuples(hs.just("labels"), hs.sampled_from(("client", "other")), hs.booleans()),
    hs.tuples(hs.just("vni"), hs.sampled_from((1, 2))),
    hs.tuples(hs.just("restart"), hs.sampled_from(NODES)),
)
# weighted (hs.one_of flattens nested one_ofs and gives each branch the same weight)
OP = hs.integers(0, 99).flatmap(
    lambda i: OPEN if i < 12 else DATA if i < 72 else PKT if i < 80 else EVENT)
OPS = hs.lists(OP, min_size=10, max_size=60)
EXAMPLES = int(os.environ.get("EMUNET_FUZZ_EXAMPLES", "200"))


def apply_event(st: ClusterState, op: tuple, clusters: list[Cluster], now: float) -> float:
    kind = op[0]
    scrub = None
    if kind == "time":
        return now + op[1]
    if kind == "expire":
        for c in clusters:
            for dp in c.dps.values():
                dp.expire(now)
        return now
    if kind == "restart":
        for c in clusters:
            c.restart(op[1], now)
        return now
    if kind == "ready":
        p = st.pods.get(("blog", op[1]))
        if p is None:
            return now
        p.ready = op[2]
    elif kind == "remove":
        scrub = pod_owners(st) if op[2] else None
        st.remove_pod(("blog", op[1]))
    elif kind == "policy":
        st.policies = dict(POLICIES) if op[1] else {}
    elif kind == "labels":
        p = st.pods.get(("blog", op[1]))
        if p is None:
            return now
        p.pod = dataclasses.replace(p.pod, labels={"role": "client"} if op[2] else {})
    elif kind == "vni":
        st.cluster = dataclasses.replace(st.cluster, vxlan_vni=op[1])
    for c in clusters:
        c.update(st, now, scrub)
    return now


class Run:
    """Both clusters, the state, the clock and the flows opened so far."""

    def __init__(self) -> None:
        self.st = make_state(web_nodes=("node-2", "node-1"))
        self.fast, self.slow = Cluster(self.st, True), Cluster(self.st, False)
        self.now = 100.0
        # (client's first frame, where it arrived or None)
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
            first = client_frame(st, op[1], op[2], op[3], "S", op[4], PLAIN)
            got = self.send(first)
            if first is None:
                return
            at = got[0] if got else None
            if at is not None:
                self.send(server_frame(st, at, "", PLAIN))
                if op[3] == "tcp":
                    self.send(client_frame(st, op[1], op[2], "tcp", "A", op[4], PLAIN))
            self.flows.append((first, at))
        elif kind == "data":
            if not self.flows:
                return
            first, at = self.flows[op[1] % len(self.flows)]
            if op[2] and at is not None:
                self.send(server_frame(st, at, op[3] or "PA", op[4]))
            else:
                e = Ether(first[1])
                l4 = e[IP].payload.copy()
                if isinstance(l4, TCP):
                    l4.flags, l4.chksum = op[3].replace("ERR", "") or "PA", None
                elif isinstance(l4, UDP):
                    l4.chksum, l4.len = None, None
                else:
                    l4.chksum = None
                l4.remove_payload()
                me = next((p for p in st.pods.values() if p.host_ifname == first[2]), None)
                if me is not None:
                    self.send(frame_of(st, me, e[IP].dst, l4, op[4]))
        elif kind == "pkt":
            self.send(client_frame(st, *op[1:]))
        else:
            self.now = apply_event(st, op, [self.fast, self.slow], self.now)
        assert self.fast.trace == self.slow.trace, op
        assert self.fast.snapshot() == self.slow.snapshot(), op


def run(ops: list[tuple]) -> Run:
    r = Run()
    for op in ops:
        r.step(op)
    return r


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_fast_path_answers_as_the_full_pipeline(ops):
    run(ops)


def test_the_differential_run_takes_the_fast_path():
    """A long established exchange through DNAT + encap: the fast path answers (so the
    differential test compares something), and equal to the pipeline."""
    data = [("data", 0, False, "PA", PLAIN), ("data", 0, True, "PA", PLAIN)] * 5
    r = run([("open", "client", 0, "tcp", 0), *data])
    calls: list[str] = []  # the packets the full pipeline decided (both builds: no monkeypatch)
    for n, dp in r.fast.dps.items():
        r.fast.dps[n] = Spy(dp, calls)  # type: ignore[assignment]
    for op in data:
        r.step(op)
    assert calls == []
    conns = r.fast.dps["node-1"].ct.conns()
    assert conns and all(c.hop is not None and c.rhop is not None for c in conns)
