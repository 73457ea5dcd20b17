"""Lookup tables for one node's datapath, precomputed from the cluster state. Pure.

Everything the per-packet path needs is a dict keyed by raw header bytes (4-byte IPs, 6-byte
MACs), built once per state change, so that a packet costs a few dict lookups and no string or
ipaddress work. `NodeTables.from_state` is the only place that reads `ClusterState`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from emunet import naming
from emunet.datapath.ipv6pkt import ip6_bytes
from emunet.packets import PROTO_TCP, PROTO_UDP, concat, ip_bytes, mac_bytes, vxlan_header
from emunet.policy.compile import compile_node
from emunet.policy.verdict import NodePolicy
from emunet.state.cluster import ClusterState, Endpoint, ServiceState

_PROTOS = {"TCP": PROTO_TCP, "UDP": PROTO_UDP}


@dataclass(frozen=True, slots=True)
class LocalPod:
    """A pod on this node: its veth (port), addresses, and the MAC header to deliver to it."""

    port: str
    ip: bytes
    mac: bytes
    routed_macs: bytes  # dst=pod MAC, src=gateway MAC: the first 12 bytes of a routed frame
    name: str  # namespace/name, for details in drops and traces
    ip6: bytes = b""  # dual-stack: its IPv6 address (b"": none)


@dataclass(frozen=True, slots=True)
class RemoteNode:
    """Another node: where its VXLAN endpoint is and the inner MACs Flannel would use."""

    name: str
    underlay_ip: str
    underlay_ip_b: bytes
    net: int  # pod subnet as an int, for the prefix match
    mask: int
    encap_prefix: bytes  # VXLAN header + inner dst MAC (remote VTEP) + inner src MAC (ours)
    # dual-stack, Flannel's model (flannel-io/flannel pkg/backend/vxlan): IPv6 pod traffic
    # goes through a second VTEP, flannel-v6.<VNI> (its own MAC, the same VNI and UDP port),
    # whose outer header is IPv6 between the nodes' public IPv6 addresses
    underlay_ip6: str = ""  # "": the node has no IPv6 underlay (no IPv6 encap to it)
    net6: int = 0
    mask6: int = -1  # matches no address until the node has an IPv6 pod subnet
    encap_prefix6: bytes = b""  # VXLAN header + its flannel-v6 VTEP MAC + ours


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
    # Dual-stack (issue 19; empty on IPv4-only clusters). IPv6 ClusterIPs share `services`
    # and `cluster_ips` (16-byte keys never equal 4-byte ones); pods and peers have their own.
    gateway_ip6: bytes = b""  # b"": this node has no IPv6 pod subnet, IPv6 is dropped
    vtep_mac6: bytes = b""  # our flannel-v6 VTEP's MAC: the inner dst MAC of IPv6 VXLAN
    local_net6: int = 0
    local_mask6: int = -1
    pods_by_ip6: dict[bytes, LocalPod] = field(default_factory=dict)
    remotes_by_underlay6: dict[str, RemoteNode] = field(default_factory=dict)
    # NodePort over IPv6: this node's IPv6 underlay address and (proto, node port) -> target
    # over the IPv6 endpoints, only for Services of the IPv6 family (kube-proxy's IPv6 proxier
    # sees only those: kubernetes/kubernetes#90101, an IPv4 Service's node port is IPv4 only)
    underlay_ip6: bytes = b""
    nodeports6: dict[tuple[int, int], ServiceTarget] = field(default_factory=dict)
    # the pod MTU (cni0's and flannel.1's): a larger frame arriving on eth0 cannot be
    # forwarded to a pod (ICMP fragmentation needed / ICMPv6 Packet Too Big, nodeport6.py);
    # from_state sets it, the default judges nothing too big
    mtu: int = 0xFFFF

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
        if me.pod_cidr6 and me.gateway_ip6:
            net6 = ipaddress.IPv6Network(me.pod_cidr6)
            t.gateway_ip6 = ip6_bytes(me.gateway_ip6)
            t.vtep_mac6 = mac_bytes(me.vtep_mac6) if me.vtep_mac6 else b""
            t.local_net6, t.local_mask6 = int(net6.network_address), int(net6.netmask)
        for p in state.pods.values():
            if p.node != node_name:
                continue
            lp = LocalPod(port=p.host_ifname, ip=ip_bytes(p.ip), mac=mac_bytes(p.mac),
                          routed_macs=concat(mac_bytes(p.mac), gw_mac),
                          name=f"{p.pod.namespace}/{p.pod.name}",
                          ip6=ip6_bytes(p.ip6) if p.ip6 else b"")
            t.pods_by_port[lp.port] = lp
            t.pods_by_ip[lp.ip] = lp
            t.pods_by_mac[lp.mac] = lp
            if lp.ip6:
                t.pods_by_ip6[lp.ip6] = lp
        remotes = []
        for n in state.nodes:
            if n.name == node_name:
                continue
            rnet = ipaddress.IPv4Network(n.pod_cidr)
            r = RemoteNode(name=n.name, underlay_ip=n.underlay_ip,
                           underlay_ip_b=ip_bytes(n.underlay_ip),
                           net=int(rnet.network_address), mask=int(rnet.netmask),
                           encap_prefix=b"".join((vxlan_header(vni), mac_bytes(n.vtep_mac),
                                                  vtep)),
                           **_remote6(n.pod_cidr6, n.underlay_ip6, n.vtep_mac6, vni,
                                      t.vtep_mac6))
            remotes.append(r)
            t.remotes_by_underlay[r.underlay_ip] = r
            if r.underlay_ip6:
                t.remotes_by_underlay6[r.underlay_ip6] = r
        t.remotes = tuple(remotes)
        t.underlay_ip = ip_bytes(me.underlay_ip)
        t.host_port = naming.HOST_PEER
        t.host_macs = concat(mac_bytes(naming.host_mac(me.underlay_ip)), gw_mac)
        t.node_ips = {r.underlay_ip_b: r for r in remotes}
        node_ips = [ip_bytes(n.underlay_ip) for n in state.nodes]
        node_ips6 = [ip6_bytes(n.underlay_ip6) for n in state.nodes if n.underlay_ip6]
        t.underlay_ip6 = ip6_bytes(me.underlay_ip6) if me.underlay_ip6 else b""
        t.mtu = state.cluster.mtu
        index = state.pod_index()  # one pass over the pods, not one per Service
        for key, svc in state.services.items():
            eps6 = None
            if svc.cluster_ip6:
                eps6 = state.endpoints(key, index)
                t._add_service6(svc, eps6, node_ips6)
            if not svc.cluster_ip:
                continue
            cip = ip_bytes(svc.cluster_ip)
            t.cluster_ips[cip] = f"{key[0]}/{key[1]}"
            eps = eps6 if eps6 is not None else state.endpoints(key, index)
            s = svc.service
            affinity = s.affinity_timeout if s.session_affinity == "ClientIP" else 0
            for i, sp in enumerate(s.ports):
                proto = _PROTOS.get(sp.protocol)
                if proto is None:
                    continue  # SCTP: not implemented; traffic to it is rejected as unknown port
                backends = tuple((ip_bytes(e.ip), e.port) for e in eps.get(i, ())
                                 if e.ready and ":" not in e.ip)  # IPv6 ones: _add_service6
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

    def _add_service6(self, svc: ServiceState, eps: dict[int, list[Endpoint]],
                      node_ips6: list[bytes]) -> None:
        """An IPv6 ClusterIP (dual-stack contract): its ports balanced over the Service's IPv6
        endpoints (an Endpoint whose ip has a ':'), and its node ports on the nodes' IPv6
        underlay addresses (from eth0: `nodeports6`; from pods: `services`, as for IPv4)."""
        assert svc.cluster_ip6 is not None
        cip = ip6_bytes(svc.cluster_ip6)
        s = svc.service
        self.cluster_ips[cip] = f"{s.namespace}/{s.name}"
        affinity = s.affinity_timeout if s.session_affinity == "ClientIP" else 0
        for i, sp in enumerate(s.ports):
            proto = _PROTOS.get(sp.protocol)
            if proto is None:
                continue
            backends = tuple((ip6_bytes(e.ip), e.port) for e in eps.get(i, ())
                             if e.ready and ":" in e.ip)
            name = f"{s.namespace}/{s.name}:{sp.port}/{sp.protocol}"
            self.services[(proto, cip, sp.port)] = ServiceTarget(name, backends, affinity)
            if sp.node_port is not None and s.node_port_type and node_ips6:
                np_target = ServiceTarget(f"{name} (nodePort {sp.node_port})", backends,
                                          affinity)
                self.nodeports6[(proto, sp.node_port)] = np_target
                for nip in node_ips6:
                    self.cluster_ips.setdefault(nip, "node ports")
                    self.services[(proto, nip, sp.node_port)] = np_target

    def remote_for6(self, ip: int) -> RemoteNode | None:
        """The node whose IPv6 pod subnet holds `ip`."""
        for r in self.remotes:
            if ip & r.mask6 == r.net6:
                return r
        return None

    def remote_for(self, ip: int) -> RemoteNode | None:
        """The node whose pod subnet holds `ip` (a linear scan: clusters have few nodes)."""
        for r in self.remotes:
            if ip & r.mask == r.net:
                return r
        return None


def _remote6(pod_cidr6: str | None, underlay_ip6: str | None, vtep_mac6: str | None, vni: int,
             our_vtep6: bytes) -> dict:
    """A peer's IPv6 fields (RemoteNode), none when it has no IPv6 pod subnet."""
    if not pod_cidr6:
        return {}
    net = ipaddress.IPv6Network(pod_cidr6)
    prefix = b"".join((vxlan_header(vni), mac_bytes(vtep_mac6), our_vtep6)) \
        if vtep_mac6 and our_vtep6 else b""
    # RFC 5952 text, as the agent's recvfrom (inet_ntop) gives a peer's address
    text = str(ipaddress.IPv6Address(underlay_ip6)) if underlay_ip6 else ""
    return {"underlay_ip6": text, "net6": int(net.network_address),
            "mask6": int(net.netmask), "encap_prefix6": prefix}
