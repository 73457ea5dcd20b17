"""Test helpers for the datapath: a small two-node cluster and a PipelinePair.

`PipelinePair` joins two nodes' pure datapaths: node A's Encap output is fed to node B's
`process_underlay` (and back), as the underlay's UDP sockets would, so VXLAN and NAT round trips
are tested without root. `l7_state` adds an HTTP rule (CiliumNetworkPolicy) for the web pods;
`open_connection` opens client -> web through the ClusterIP with the whole handshake.
"""

from __future__ import annotations

import dataclasses
import random

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from emunet.config.cilium import from_manifest
from emunet.datapath import Datapath, Drop, Encap, NodeTables, Send
from emunet.datapath.conntrack import Conn
from emunet.model import (
    ClusterSpec,
    Config,
    Container,
    ContainerPort,
    Manifest,
    NodeSpec,
    Pod,
    Service,
    ServicePort,
)
from emunet.state.cluster import ClusterState
from emunet.state.plan import plan


def web_pod(name: str, node: str, ready: bool = True) -> Pod:
    return Pod(namespace="blog", name=name, labels={"app": "web"}, node_name=node,
               containers=(Container("web", ports=(ContainerPort(8080, "TCP", "http"),
                                                    ContainerPort(5353, "UDP", "dns"))),))


def make_state(web_nodes: tuple[str, ...] = ("node-2",), ready: bool = True) -> ClusterState:
    """node-1: coredns (10.42.1.2), client (10.42.1.3), other (10.42.1.4); web-N on web_nodes.

    Service blog/web: ClusterIP, port 80 -> targetPort "http", port 53/UDP -> "dns";
    blog/empty selects nothing.
    """
    cluster = ClusterSpec(nodes=(NodeSpec("node-1"), NodeSpec("node-2")))
    pods = [Pod(namespace="blog", name="client", node_name="node-1"),
            Pod(namespace="blog", name="other", node_name="node-1")]
    pods += [web_pod(f"web-{i}", n) for i, n in enumerate(web_nodes)]
    services = (
        Service(namespace="blog", name="web", selector={"app": "web"},
                ports=(ServicePort(80, "http", "TCP", "http"),
                       ServicePort(53, "dns", "UDP", "dns"))),
        Service(namespace="blog", name="empty", selector={"app": "none"},
                ports=(ServicePort(80, 8080, "TCP"), ServicePort(53, 53, "UDP"))),
    )
    st = plan(Config(cluster=cluster, pods=tuple(pods), services=services))
    for p in st.pods.values():
        p.ready = ready
    return st


L7_POLICY = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
             "metadata": {"name": "web-l7", "namespace": "blog"},
             "spec": {"endpointSelector": {"matchLabels": {"app": "web"}},
                      "ingress": [{"fromEndpoints": [{"matchLabels": {"k8s:app": "client"}}],
                                   "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}],
                                                "rules": {"http": [{"method": "GET",
                                                                    "path": "/api/.*"}]}}]}]}}


def l7_state(web_node: str) -> ClusterState:
    """make_state with one web pod on `web_node`, the client labelled app=client and
    L7_POLICY: GET /api/.* from the client to the web pods' port 8080."""
    st = make_state((web_node,))
    c = st.pods[("blog", "client")]
    c.pod = dataclasses.replace(c.pod, labels={"app": "client"})
    m = Manifest("cilium.io/v2", "CiliumNetworkPolicy", "blog", "web-l7", L7_POLICY)
    st.others = [m]
    st.cilium_policies = {("blog", "web-l7"): from_manifest(m)}  # parsed, as the state holds it
    return st


def pod(st: ClusterState, name: str, ns: str = "blog"):
    return st.pods[(ns, name)]


def datapath(st: ClusterState, node: str, seed: int = 1) -> Datapath:
    return Datapath(NodeTables.from_state(st, node), random.Random(seed))


class PipelinePair:
    """Two nodes' datapaths wired back to back through their Encap actions."""

    def __init__(self, st: ClusterState, a: str = "node-1", b: str = "node-2") -> None:
        self.st = st
        self.dps = {a: datapath(st, a), b: datapath(st, b)}
        self.underlay = {st.node(n).underlay_ip: n for n in (a, b)}
        self.drops: list[Drop] = []
        self.now = 100.0

    def send(self, node: str, frame: bytes, port: str) -> list[Send]:
        """Inject a frame from a pod on `node`; returns every frame delivered to a pod veth."""
        return self._run(node, self.dps[node].process(frame, port, self.now))

    def _run(self, node: str, actions: list) -> list[Send]:
        out: list[Send] = []
        src_ip = self.st.node(node).underlay_ip
        for a in actions:
            if isinstance(a, Send):
                out.append(a)
            elif isinstance(a, Encap):
                peer = self.underlay[a.dst_ip]
                out += self._run(peer, self.dps[peer].process_underlay(a.payload, src_ip,
                                                                       self.now))
            else:
                self.drops.append(a)
        return out


GW_MAC = "0a:58:0a:2a:01:01"  # node-1's pod gateway
GW2_MAC = "0a:58:0a:2a:02:01"  # node-2's
VIP = "10.43.0.11"  # blog/web's ClusterIP
# The head of a two-node cluster document with namespace blog, for tests that add policies
BLOG_CLUSTER = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: t}
spec: {nodes: [{name: node-1}, {name: node-2}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: blog}
---
"""
# Only blog/client may reach the web pods, on their "http" port (a policy the tests share)
WEB_FROM_CLIENT = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client, namespace: blog}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from: [{podSelector: {matchLabels: {role: client}}}]
      ports: [{port: http}]
"""


def tcp_syn(c, sport: int, dst: str = VIP, dport: int = 80, flags: str = "S") -> bytes:
    """A segment from pod `c` on node-1 (a SYN unless told otherwise)."""
    return bytes(Ether(src=c.mac, dst=GW_MAC) / IP(src=c.ip, dst=dst) /
                 TCP(sport=sport, dport=dport, flags=flags, seq=1000))


def tcp_reply(w, c, sport: int, flags: str = "SA") -> bytes:
    """Web pod `w` on node-2 answering `c`'s connection from source port `sport`."""
    return bytes(Ether(src=w.mac, dst=GW2_MAC) / IP(src=w.ip, dst=c.ip) /
                 TCP(sport=8080, dport=sport, flags=flags, seq=5000, ack=1001))


def open_connection(pair: PipelinePair):
    """client -> VIP:80 from port 40000, DNATed to web-0 and answered; (client, web-0)."""
    st = pair.st
    c, w = pod(st, "client"), pod(st, "web-0")
    [s] = pair.send("node-1", tcp_syn(c, 40000), c.host_ifname)
    assert IP(s.frame[14:]).dst == w.ip  # DNAT on the client's node
    [back] = pair.send("node-2", tcp_reply(w, c, 40000), w.host_ifname)
    assert IP(back.frame[14:]).src == VIP
    pair.send("node-1", tcp_syn(c, 40000, flags="A"), c.host_ifname)  # the handshake's last ACK
    return c, w


# A connection no table holds: what `ct.hit` is set to before each packet. FastPath resets
# `ct.hit` to None exactly when it hands a packet to the full pipeline (and the pipeline sets it
# only to a tracked connection), so the marker still there afterwards means the packet took a
# hop. A seam that works on the compiled build too, whose classes cannot be monkeypatched.
_MARK = (Conn(6, (b"\0" * 4, b"\0" * 4, b"\0\0", b"\0\0"),
              (b"\0" * 4, b"\0" * 4, b"\0\0", b"\0\0")), False)


class Spy:
    """A Datapath whose entry points record each packet the full pipeline decides."""

    def __init__(self, dp: Datapath, slow: list[str]) -> None:
        object.__setattr__(self, "dp", dp)
        object.__setattr__(self, "slow", slow)

    def __getattr__(self, name: str):
        return getattr(self.dp, name)

    def __setattr__(self, name: str, value) -> None:  # e.g. a restored conntrack
        setattr(self.dp, name, value)

    def _call(self, entry, stage: str, *a) -> list:
        self.dp.ct.hit = _MARK
        out = entry(*a)
        if self.dp.ct.hit is not _MARK or not self.dp.fastpath:
            self.slow.append(stage)
        return out

    def process(self, frame: bytes, in_port: str, now: float) -> list:
        return self._call(self.dp.process, "_from_pod", frame, in_port, now)

    def process_underlay(self, payload: bytes, src_ip: str, now: float) -> list:
        return self._call(self.dp.process_underlay, "_from_overlay", payload, src_ip, now)
