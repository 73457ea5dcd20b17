"""Test helper: pipeline_pair's two-node cluster made dual-stack by hand.

The dual-stack state contract (/work/notes/dualstack-contract.md) names the fields the
control plane fills; until it does, `dual_state` fills them here the way the contract says:
each node a /64 of 2001:cafe:42::/56 with the gateway at ::1, an IPv6 underlay address and a
flannel-v6 VTEP MAC, each pod the IPv6 address with its IPv4 host byte, each Service an IPv6
ClusterIP, and every ready pod endpoint doubled by its IPv6 one (the contract's Endpoints:
one per address, ':' telling the family).
"""

from __future__ import annotations

import dataclasses
import random
import types

from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from emunet.datapath import Datapath, NodeTables
from emunet.state.cluster import ClusterState, Endpoint
from tests.unit.pipeline_pair import GW2_MAC, GW_MAC, make_state

VIP6 = "2001:cafe:43::b"  # blog/web's IPv6 ClusterIP (the IPv4 one is 10.43.0.11)
EMPTY6 = "2001:cafe:43::c"  # blog/empty's
GW6 = "2001:cafe:42:1::1"  # node-1's IPv6 gateway
GW6_2 = "2001:cafe:42:2::1"


def v6_of(ip4: str, index: int) -> str:
    return f"2001:cafe:42:{index}::{int(ip4.rsplit('.', 1)[1]):x}"


def dual_state(web_nodes: tuple[str, ...] = ("node-2",), ready: bool = True) -> ClusterState:
    st = make_state(web_nodes, ready)
    return make_dual(st)


def make_dual(st: ClusterState) -> ClusterState:
    """Fill the contract's IPv6 fields of an IPv4 state (in place; returns it)."""
    index = {n.name: n.index for n in st.nodes}
    for n in st.nodes:
        n.pod_cidr6 = f"2001:cafe:42:{n.index}::/64"
        n.gateway_ip6 = f"2001:cafe:42:{n.index}::1"
        n.underlay_ip6 = f"fd00:e::{n.index + 10}"
        n.vtep_mac6 = f"0a:5b:00:00:00:{n.index:02x}"
    for p in st.pods.values():
        p.ip6 = v6_of(p.ip, index[p.node])
    for ss in st.services.values():
        if ss.cluster_ip:
            ss.cluster_ip6 = f"2001:cafe:43::{int(ss.cluster_ip.rsplit('.', 1)[1]):x}"
            ss.ip_families = ("IPv4", "IPv6")
            ss.ip_family_policy = "PreferDualStack"
    plain = st.endpoints

    def endpoints(self, key, index=None):  # noqa: ANN001 - the method it stands in for
        out = plain(key, index)
        for eps in out.values():
            eps.extend([dataclasses.replace(e, ip=self.pods[e.pod].ip6) for e in list(eps)
                        if e.pod in self.pods and self.pods[e.pod].ip6 and ":" not in e.ip])
        return out

    st.endpoints = types.MethodType(endpoints, st)  # type: ignore[method-assign]
    return st


def datapath6(st: ClusterState, node: str, seed: int = 1, fastpath: bool = True) -> Datapath:
    return Datapath(NodeTables.from_state(st, node), random.Random(seed), fastpath)


def eth6(p, dst_mac: str = GW_MAC, src: str | None = None, dst: str = VIP6, hlim: int = 64):
    """Ether / IPv6 from pod state `p` (to the node-1 gateway MAC unless told)."""
    return Ether(src=p.mac, dst=dst_mac) / IPv6(src=src or p.ip6, dst=dst, hlim=hlim)


__all__ = ["EMPTY6", "GW2_MAC", "GW6", "GW6_2", "GW_MAC", "VIP6", "Endpoint", "datapath6",
           "dual_state", "eth6", "make_dual", "v6_of"]
