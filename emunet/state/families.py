"""Dual-stack allocation: a node's IPv6 ranges, a pod's IPv6 address, a Service's ClusterIPs.

Pure helpers of `state.cluster` and `state.plan` (IPv4-only clusters never reach them: every
IPv6 field stays None/empty, so their state is today's).

- Node: the pod /64 (`pod_cidr6`, the index-th /64 of the IPv6 cluster range, as the node IPAM
  controller with node-cidr-mask-size-ipv6 64 hands out), the IPv6 gateway, the underlay IPv6
  address and the flannel-v6.1 VTEP MAC (`naming.vtep_mac6`).
- Gateway: k3s's Flannel CNI delegates to the bridge plugin (isGateway, isDefaultGateway) with
  host-local IPAM, one range per family; host-local's gateway defaults to the range's first
  address, and bridge's calcGateways sets it on cni0 and as the pod's default route. So the
  pod's IPv6 default gateway is `<pod /64>::1` (a global address, not a link-local one), as
  `.1` is for IPv4; the agent answers Neighbour Solicitations for it with the gateway MAC.
- Pod: host-local IPAM over the /64 (network and gateway excluded; the next free address after
  the last one handed out, per node, so a recreated pod gets a new address).
- Service: the families the API server settles (`model.ipfamily.settle`), a given address per
  family honoured, else the next free one of that family's range from the 11th address on
  (the 1st is the `kubernetes` Service's in the primary family, the 10th kube-dns's).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from emunet import model, naming
from emunet.model import ipfamily
from emunet.state.errors import StateError

# state.cluster's ClusterState, NodeState, ServiceState (which import this module)
ClusterState = NodeState = ServiceState = Any

FIRST_SERVICE_OFFSET = 11  # .1 kubernetes, .10 kube-dns: allocation starts above both


def node_fields(c: model.ClusterSpec, spec: model.NodeSpec, index: int) -> dict[str, str]:
    """NodeState's IPv6 fields for node `index` (1-based); {} for an IPv4-only cluster."""
    if not c.cluster_cidr6:
        return {}
    if spec.pod_cidr6:
        net = ipaddress.IPv6Network(spec.pod_cidr6)
    else:
        cluster = ipaddress.IPv6Network(c.cluster_cidr6)
        shift = 128 - model.NODE_CIDR_MASK_IPV6
        net = ipaddress.IPv6Network(
            (int(cluster.network_address) + (index << shift), model.NODE_CIDR_MASK_IPV6))
    underlay6 = ipaddress.IPv6Network(c.underlay_cidr6 or model.DEFAULT_UNDERLAY_CIDR6)
    ip6 = spec.underlay_ip6 or str(underlay6.network_address + 10 + index)
    return {"pod_cidr6": str(net), "gateway_ip6": str(net.network_address + 1),
            "underlay_ip6": ip6, "vtep_mac6": naming.vtep_mac6(str(net))}


def allocate_pod_ip6(st: ClusterState, node: NodeState, used: set[int]) -> str:
    """host-local over the node's /64: after the last one handed out, skipping the network
    address, the gateway and addresses in use (`used`, integers, kept by the caller)."""
    assert node.pod_cidr6 and node.gateway_ip6
    net = ipaddress.IPv6Network(node.pod_cidr6)
    lo, hi = int(net.network_address) + 1, int(net.broadcast_address)
    gw = int(ipaddress.IPv6Address(node.gateway_ip6))
    last = st.last_ip6.get(node.name)
    start = lo
    if last is not None and lo <= int(ipaddress.IPv6Address(last)) < hi:
        start = int(ipaddress.IPv6Address(last)) + 1
    size = hi - lo + 1
    for i in range(min(size, len(used) + 2)):  # at most len(used) + 1 candidates are taken
        cand = lo + (start - lo + i) % size
        if cand != gw and cand not in used:
            ip = str(ipaddress.IPv6Address(cand))
            st.last_ip6[node.name] = ip
            used.add(cand)
            return ip
    raise StateError(f"node {node.name}: pod subnet {node.pod_cidr6} is full")


def ip6_int(ip: str) -> int:
    return int(ipaddress.IPv6Address(ip))


def service_fields(st: ClusterState, svc: model.Service,
                   old: ServiceState | None) -> dict[str, object]:
    """ServiceState's address fields for `svc`: cluster_ip (IPv4), cluster_ip6, ip_families,
    ip_family_policy; IPv4-only clusters keep families () and policy None (today's state)."""
    c = st.cluster
    if svc.headless or svc.type == "ExternalName":
        if not c.dual_stack or svc.type == "ExternalName":
            return {"cluster_ip": None}
        fams = ipfamily.settle(svc, c.families)
        return {"cluster_ip": None, "ip_families": fams.families,
                "ip_family_policy": fams.policy}
    fams = ipfamily.settle(_as_update(svc, old), c.families)
    if fams.errors:
        path, msg = fams.errors[0]
        raise StateError(f"Service {svc.namespace}/{svc.name}: {path}: {msg}")
    given = {ipfamily.family_of(ip): ip for ip in fams.cluster_ips}
    kept = {}
    if old is not None:  # a Service keeps its ClusterIPs across updates
        kept = {model.IPV4: old.cluster_ip, model.IPV6: old.cluster_ip6}
    out: dict[str, object] = {"cluster_ip": None}
    for fam in fams.families:
        ip = given.get(fam) or kept.get(fam) or None
        if ip is not None:
            owner = st.service_by_ip(ip)
            if owner is not None and owner.key != svc.key:
                raise StateError(f"clusterIP {ip} is already used by Service "
                                 f"{owner.key[0]}/{owner.key[1]}")
        elif fam == model.IPV4:
            ip = st.allocate_service_ip()
        else:
            ip = _allocate_ip6(st)
        out["cluster_ip" if fam == model.IPV4 else "cluster_ip6"] = ip
    if c.dual_stack:
        out.update(ip_families=fams.families, ip_family_policy=fams.policy)
    return out


def _as_update(svc: model.Service, old: ServiceState | None) -> model.Service:
    """An update keeps what the Service had where the new body says nothing (the API
    server's patchAllocatedValues and initIPFamilyFields with a `before`): the old policy,
    the old families; SingleStack over two families is clear intent to keep the first."""
    if old is None or not old.ip_families or old.service.headless != svc.headless:
        return svc
    policy = svc.ip_family_policy or old.ip_family_policy
    families = svc.ip_families
    if not families and not ipfamily.given_ips(svc):
        families = old.ip_families[:1] if policy == ipfamily.SINGLE else old.ip_families
    return dataclasses.replace(svc, ip_family_policy=policy, ip_families=families)


def _allocate_ip6(st: ClusterState) -> str:
    """The next free IPv6 ClusterIP after the last one handed out (wrapping), from ::b on."""
    assert st.cluster.service_cidr6
    net = ipaddress.IPv6Network(st.cluster.service_cidr6)
    first = int(net.network_address) + FIRST_SERVICE_OFFSET
    last = int(net.broadcast_address)
    size = last - first + 1
    owners = st.owners()
    cursor = st.svc_cursor6
    start = cursor if first <= cursor <= last else first
    for i in range(max(0, min(size, len(owners) + 1))):
        cand = first + (start - first + i) % size
        ip = str(ipaddress.IPv6Address(cand))
        if ip not in owners:
            st.svc_cursor6 = cand + 1
            return ip
    raise StateError(f"service CIDR {st.cluster.service_cidr6} is full")
