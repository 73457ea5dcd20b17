"""Lookup tables for one node's datapath, precomputed from the cluster state. Pure.

Everything the per-packet path needs is a dict keyed by raw header bytes (4-byte IPs, 6-byte
MACs), built once per state change, so that a packet costs a few dict lookups and no string or
ipaddress work. `NodeTables.from_state` is the only place that reads `ClusterState`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from emunet import naming
from emunet.packets import PROTO_TCP, PROTO_UDP, concat, ip_bytes, mac_bytes, vxlan_header
from emunet.policy.compile import compile_node
from emunet.policy.verdict import NodePolicy
from emunet.state.cluster import ClusterState

_PROTOS = {"TCP": PROTO_TCP, "UDP": PROTO_UDP}


@dataclass(frozen=True, slots=True)
class LocalPod:
    """A pod on this node: its veth (port), addresses, and the MAC header to deliver to it."""

    port: str
    ip: bytes
    mac: bytes
    routed_macs: bytes  # dst=pod MAC, src=gateway MAC: the first 12 bytes of a routed frame
    name: str  # namespace/name, for details in drops and traces


@dataclass(frozen=True, slots=True)
class RemoteNode:
    """Another node: where its VXLAN endpoint is and the inner MACs Flannel would use."""

    name: str
    underlay_ip: str
    underlay_ip_b: bytes
    net: int  # pod subnet as an int, for the prefix match
    mask: int
    encap_prefix: bytes  # VXLAN header + inner dst MAC (remote VTEP) + inner src MAC (ours)


@dataclass(frozen=True, slots=True)
class ServiceTarget:
    """One ClusterIP port: the ready backends (ip, port) the load balancer picks from."""

    name: str  # namespace/name:port, for drop details
    backends: tuple[tuple[bytes, int], ...]
    affinity: int = 0  # sessionAffinity ClientIP: its timeoutSeconds; 0: None


@dataclass
class NodeTables:
    node: str
    gateway_ip: bytes
    gateway_mac: bytes
    vtep_mac: bytes
    vni: int
    vxlan_port: int
    local_net: int
    local_mask: int
    pods_by_port: dict[str, LocalPod] = field(default_factory=dict)
    pods_by_ip: dict[bytes, LocalPod] = field(default_factory=dict)
    pods_by_mac: dict[bytes, LocalPod] = field(default_factory=dict)
    remotes: tuple[RemoteNode, ...] = ()
    remotes_by_underlay: dict[str, RemoteNode] = field(default_factory=dict)
    # (proto, ClusterIP, port) -> target; ClusterIPs alone for "known IP, unknown port" rejects
    services: dict[tuple[int, bytes, int], ServiceTarget] = field(default_factory=dict)
    cluster_ips: dict[bytes, str] = field(default_factory=dict)
    # NodePort: (proto, node port) -> target, for frames arriving on this node's underlay eth0
    # (emunet.host.underlay); pods reach <any node IP>:<node port> through `services` as well
    underlay_ip: bytes = b""
    nodeports: dict[tuple[int, int], ServiceTarget] = field(default_factory=dict)
    policy: NodePolicy = field(default_factory=NodePolicy)  # identities, compiled policies
    # The node's own stack (naming.HOST_IFNAME): frames for this node's underlay address go
    # to `host_port` with `host_macs` (dst: the kernel end's MAC, src: the gateway's), so a
    # pod reaches a listener of the node namespace (the API server behind `kubernetes`); other
    # nodes' addresses go over VXLAN to their agents (`node_ips`), which deliver them the same
    host_port: str = ""
    host_macs: bytes = b""
    node_ips: dict[bytes, RemoteNode] = field(default_factory=dict)

    @classmethod
    def from_state(cls, state: ClusterState, node_name: str) -> NodeTables:
        me = state.node(node_name)
        vni = state.cluster.vxlan_vni
        net = ipaddress.IPv4Network(me.pod_cidr)
        gw_mac = mac_bytes(me.gateway_mac)
        vtep = mac_bytes(me.vtep_mac)
        t = cls(node=node_name, gateway_ip=ip_bytes(me.gateway_ip), gateway_mac=gw_mac,
                vtep_mac=vtep, vni=vni, vxlan_port=state.cluster.vxlan_port,
                local_net=int(net.network_address), local_mask=int(net.netmask))
        for p in state.pods.values():
            if p.node != node_name:
                continue
            lp = LocalPod(port=p.host_ifname, ip=ip_bytes(p.ip), mac=mac_bytes(p.mac),
                          routed_macs=concat(mac_bytes(p.mac), gw_mac),
                          name=f"{p.pod.namespace}/{p.pod.name}")
            t.pods_by_port[lp.port] = lp
            t.pods_by_ip[lp.ip] = lp
            t.pods_by_mac[lp.mac] = lp
        remotes = []
        for n in state.nodes:
            if n.name == node_name:
                continue
            rnet = ipaddress.IPv4Network(n.pod_cidr)
            r = RemoteNode(name=n.name, underlay_ip=n.underlay_ip,
                           underlay_ip_b=ip_bytes(n.underlay_ip),
                           net=int(rnet.network_address), mask=int(rnet.netmask),
                           encap_prefix=b"".join((vxlan_header(vni), mac_bytes(n.vtep_mac),
                                                  vtep)))
            remotes.append(r)
            t.remotes_by_underlay[r.underlay_ip] = r
        t.remotes = tuple(remotes)
        t.underlay_ip = ip_bytes(me.underlay_ip)
        t.host_port = naming.HOST_PEER
        t.host_macs = concat(mac_bytes(naming.host_mac(me.underlay_ip)), gw_mac)
        t.node_ips = {r.underlay_ip_b: r for r in remotes}
        node_ips = [ip_bytes(n.underlay_ip) for n in state.nodes]
        index = state.pod_index()  # one pass over the pods, not one per Service
        for key, svc in state.services.items():
            if not svc.cluster_ip:
                continue
            cip = ip_bytes(svc.cluster_ip)
            t.cluster_ips[cip] = f"{key[0]}/{key[1]}"
            eps = state.endpoints(key, index)
            s = svc.service
            affinity = s.affinity_timeout if s.session_affinity == "ClientIP" else 0
            for i, sp in enumerate(s.ports):
                proto = _PROTOS.get(sp.protocol)
                if proto is None:
                    continue  # SCTP: not implemented; traffic to it is rejected as unknown port
                backends = tuple((ip_bytes(e.ip), e.port) for e in eps.get(i, ()) if e.ready)
                target = ServiceTarget(f"{key[0]}/{key[1]}:{sp.port}/{sp.protocol}",
                                       backends, affinity)
                t.services[(proto, cip, sp.port)] = target
                if sp.node_port is not None and s.node_port_type:
                    np_target = ServiceTarget(f"{target.name} (nodePort {sp.node_port})",
                                              backends, affinity)
                    t.nodeports[(proto, sp.node_port)] = np_target
                    for nip in node_ips:  # kube-proxy: a node port on every node address
                        t.cluster_ips.setdefault(nip, "node ports")
                        t.services[(proto, nip, sp.node_port)] = np_target
        t.policy = compile_node(state, node_name)
        return t

    def remote_for(self, ip: int) -> RemoteNode | None:
        """The node whose pod subnet holds `ip` (a linear scan: clusters have few nodes)."""
        for r in self.remotes:
            if ip & r.mask == r.net:
                return r
        return None
