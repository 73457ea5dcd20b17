"""Test helpers for the datapath: a small two-node cluster and a PipelinePair.

`PipelinePair` joins two nodes' pure datapaths: node A's Encap output is fed to node B's
`process_underlay` (and back), as the underlay's UDP sockets would, so VXLAN and NAT round trips
are tested without root.
"""

from __future__ import annotations

import random

from emunet.datapath import Datapath, Drop, Encap, NodeTables, Send
from emunet.model import (
    ClusterSpec,
    Config,
    Container,
    ContainerPort,
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
