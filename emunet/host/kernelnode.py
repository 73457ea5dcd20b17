"""Kernel-mode nodes (`datapath: kernel`): a node built the way Flannel + kube-proxy build k3s's.

Such a node runs no emunet agent: Linux forwards its pods' traffic, exactly as on a real k3s
node with Flannel's VXLAN backend and kube-proxy in nftables mode. It serves two purposes: the
baseline `scripts/bench` compares emunet against, and interop (a cluster mixing both kinds of
node proves that emunet speaks the RFC 7348 VXLAN the Linux driver speaks).

What is built in the node namespace (names and addresses are Flannel's):

    cni0       bridge, the gateway 10.42.N.1/24 (MAC 0a:58:<gateway IP>, as emunet's agent
               answers for it), every local pod's veth a port of it (the CNI bridge plugin)
    flannel.1  vxlan: VNI and UDP port from the config, `nolearning`, local = underlay IP,
               MAC = the node's VTEP MAC (naming.vtep_mac), address 10.42.N.0/32
    per other node M (what flanneld programs from the node's annotations):
               fdb     <VTEP MAC of M> dst <underlay IP of M>   (permanent, no learning)
               neigh   10.42.M.0 lladdr <VTEP MAC of M>          (permanent)
               route   10.42.M.0/24 via 10.42.M.0 dev flannel.1 onlink
    ip_forward=1 (this namespace only; emunet nodes keep 0)
    nftables   table `ip kube-proxy`: Service DNAT as kube-proxy's nftables mode writes it
               (see `ruleset`), regenerated whenever the supervisor publishes the state

Dual-stack (issue 19), as Flannel's vxlan backend and kube-proxy run it with IPv6 enabled:
cni0 also gets the IPv6 gateway <pod /64>::1/64; `flannel-v6.1`, a second vxlan device (the
same VNI and port, local = the node's underlay IPv6, MAC naming.vtep_mac6, the /64's network
address as /128) with the same fdb/neigh/route triple per other node over IPv6; IPv6
forwarding on; and a second table, `ip6 kube-proxy`, the same ruleset over the IPv6
ClusterIPs and endpoints (kube-proxy runs one proxier per family).

The underlay eth0 gets checksum and segmentation offloads off on transmit: it stands for a
wire, on which frames are MTU-sized with complete checksums (a NIC would finish them in
hardware). It keeps GRO on receive, as a NIC driver's napi_gro_receive does on every real node
(VXLAN's UDP tunnel GRO included): with GRO off too, the baseline measured 0.84x of itself in
the same run (session 5; docs/performance.md). Pod veths keep Linux's defaults (offloads on),
as on a real node.

Kernel objects are driven through the `ip`, `bridge`, `nft`, `sysctl` and `ethtool` tools
(one batch per tool per node), not pyroute2: the commands below are the ones a reader types to
build or inspect a k3s node, and nothing here is on a hot path. Everything lives in the node's
namespace, so removing the namespace (`emunet down`) removes it all.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

from emunet import naming
from emunet.host.manifest import HostError
from emunet.state.cluster import ClusterState, NodeState

BRIDGE = "cni0"
VXLAN_DEV = "flannel.1"
TABLE = "kube-proxy"
MASQ_MARK = 0x4000  # kube-proxy's masquerade mark bit
_PROTOS = {"TCP": "tcp", "UDP": "udp"}  # SCTP Services are not implemented by emunet

# Last ruleset loaded per namespace (this process): publishing an unchanged state costs nothing.
_loaded: dict[str, str] = {}


class KernelNodeError(HostError):
    """A tool failed while building or updating a kernel-mode node."""


def kernel_nodes(state: ClusterState) -> set[str]:
    return {n.name for n in state.cluster.nodes if n.datapath == "kernel"}


def is_kernel(state: ClusterState, node: str) -> bool:
    return node in kernel_nodes(state)


# ---- pure: what to build ----------------------------------------------------------------------

VXLAN6_DEV = "flannel-v6.1"


def _subnet_zero(node: NodeState) -> str:
    """Flannel gives flannel.1 the .0 address of the node's subnet."""
    return str(ipaddress.IPv4Network(node.pod_cidr).network_address)


def _subnet_zero6(node: NodeState) -> str:
    """... and flannel-v6.1 the network address of its IPv6 subnet."""
    return str(ipaddress.IPv6Network(node.pod_cidr6).network_address)


def _ip6_lines(state: ClusterState, node: NodeState) -> list[str]:
    """The IPv6 half of `ip_batch` (dual-stack): cni0's gateway, flannel-v6.1 and its routes.
    nodad: the addresses are the IPAM's, usable at once (emunet.host.sysctls)."""
    c = state.cluster
    lines = [f"addr add {node.gateway_ip6}/{ipaddress.IPv6Network(node.pod_cidr6).prefixlen} "
             f"dev {BRIDGE} nodad"]
    if len(state.nodes) < 2:
        return lines
    lines += [
        f"link add {VXLAN6_DEV} type vxlan id {c.vxlan_vni} local {node.underlay_ip6} "
        f"dev {naming.UNDERLAY_IFNAME} dstport {c.vxlan_port} nolearning",
        f"link set {VXLAN6_DEV} address {node.vtep_mac6} mtu {c.mtu}",
        f"addr add {_subnet_zero6(node)}/128 dev {VXLAN6_DEV} nodad",
        f"link set {VXLAN6_DEV} up",
    ]
    for other in state.nodes:
        if other.name != node.name and other.pod_cidr6:
            zero = _subnet_zero6(other)
            lines += [f"neigh add {zero} lladdr {other.vtep_mac6} dev {VXLAN6_DEV} "
                      "nud permanent",
                      f"route add {other.pod_cidr6} via {zero} dev {VXLAN6_DEV} onlink"]
    return lines


def ip_batch(state: ClusterState, node: NodeState) -> list[str]:
    """`ip -batch` lines building cni0, flannel.1, neighbours and routes for `node`."""
    c = state.cluster
    prefixlen = ipaddress.IPv4Network(node.pod_cidr).prefixlen
    lines = [
        # STP off, no forward delay: ports forward at once (the CNI bridge plugin's bridge).
        f"link add {BRIDGE} type bridge stp_state 0 forward_delay 0",
        f"link set {BRIDGE} address {node.gateway_mac} mtu {c.mtu}",
        f"addr add {node.gateway_ip}/{prefixlen} dev {BRIDGE}",
        f"link set {BRIDGE} up",
    ]
    if len(state.nodes) < 2:  # one node: no underlay, nothing to tunnel to
        return lines + (_ip6_lines(state, node) if node.pod_cidr6 else [])
    lines += [
        f"link add {VXLAN_DEV} type vxlan id {c.vxlan_vni} local {node.underlay_ip} "
        f"dev {naming.UNDERLAY_IFNAME} dstport {c.vxlan_port} nolearning",
        f"link set {VXLAN_DEV} address {node.vtep_mac} mtu {c.mtu}",
        f"addr add {_subnet_zero(node)}/32 dev {VXLAN_DEV}",
        f"link set {VXLAN_DEV} up",
    ]
    for other in state.nodes:
        if other.name == node.name:
            continue
        zero = _subnet_zero(other)
        lines += [f"neigh add {zero} lladdr {other.vtep_mac} dev {VXLAN_DEV} nud permanent",
                  f"route add {other.pod_cidr} via {zero} dev {VXLAN_DEV} onlink"]
    return lines + (_ip6_lines(state, node) if node.pod_cidr6 else [])


def fdb_batch(state: ClusterState, node: NodeState) -> list[str]:
    """`bridge -batch` lines: where each remote VTEP MAC lives on the underlay."""
    return [f"fdb append {o.vtep_mac} dev {VXLAN_DEV} dst {o.underlay_ip} self permanent"
            for o in state.nodes if o.name != node.name] + [
        f"fdb append {o.vtep_mac6} dev {VXLAN6_DEV} dst {o.underlay_ip6} self permanent"
        for o in state.nodes if o.name != node.name and node.pod_cidr6 and o.underlay_ip6]


def ruleset(state: ClusterState, v6: bool = False) -> str:
    """The nftables ruleset of a kernel node, in the shape kube-proxy's nftables mode writes.

    As in kube-proxy (pkg/proxy/nftables/README.md): a verdict map keyed by
    ClusterIP . protocol . port sends new connections to a per-Service chain, which picks an
    endpoint chain with `numgen random mod N`; the endpoint chain marks hairpin traffic (a pod
    reaching itself through its Service) for masquerade and DNATs. Services with no ready
    endpoint are rejected at once. Only ready endpoints are used (EndpointSlice `ready`).
    NodePorts: a `service-nodeports` map keyed by protocol . port, matched for packets to one
    of the node's own addresses (`fib daddr type local`), goes to a per-port external chain
    that marks for masquerade (externalTrafficPolicy: Cluster) and continues in the Service's
    chain; a NodePort with no ready endpoint is rejected. Loading is atomic: the table is
    deleted and rewritten in one nft transaction. `v6`: the `ip6 kube-proxy` table, the same
    over the IPv6 ClusterIPs and endpoints (dual-stack).
    """
    cluster_cidr = state.cluster.cluster_cidr6 if v6 else state.cluster.cluster_cidr
    ip, family, loopback = ("ip6", "ipv6_addr", "::1") if v6 else ("ip", "ipv4_addr",
                                                                    "127.0.0.0/8")
    service_ips: list[str] = []
    no_endpoints: list[str] = []
    node_ports: list[str] = []
    no_endpoint_node_ports: list[str] = []
    chains: list[str] = []
    index = state.pod_index()
    for key in sorted(state.services):
        svc = state.services[key]
        cluster_ip = svc.cluster_ip6 if v6 else svc.cluster_ip
        if not cluster_ip:
            continue
        eps = state.endpoints(key, index)  # both families in a dual-stack Service
        for i, sp in enumerate(svc.service.ports):
            proto = _PROTOS.get(sp.protocol)
            if proto is None:
                continue
            match = f"{cluster_ip} . {proto} . {sp.port}"
            ready = [e for e in eps.get(i, ()) if e.ready and (":" in e.ip) == v6]
            node_port = sp.node_port if svc.service.node_port_type else None
            if not ready:
                no_endpoints.append(f"{match} : goto reject-chain")
                if node_port:
                    no_endpoint_node_ports.append(f"{proto} . {node_port} : goto reject-chain")
                continue
            name = f"service-{key[0]}/{key[1]}/{proto}/{sp.port}"
            service_ips.append(f"{match} : goto {name}")
            if node_port:
                ext = f"external-{key[0]}/{key[1]}/{proto}/{sp.port}"
                node_ports.append(f"{proto} . {node_port} : goto {ext}")
                chains.append(f"  chain {ext} {{\n    jump mark-for-masquerade\n"
                              f"    goto {name}\n  }}")
            picks = []
            for j, e in enumerate(ready):
                # ':' is not allowed in an nft chain name: an IPv6 endpoint's are '.'s
                ep = (f"endpoint-{key[0]}/{key[1]}/{proto}/{sp.port}__"
                      f"{e.ip.replace(':', '.')}/{e.port}")
                picks.append(f"{j} : goto {ep}")
                to = f"[{e.ip}]:{e.port}" if v6 else f"{e.ip}:{e.port}"
                chains.append(f"  chain {ep} {{\n"
                              f"    {ip} saddr {e.ip} jump mark-for-masquerade\n"
                              f"    meta l4proto {proto} dnat to {to}\n  }}")
            chains.append(f"  chain {name} {{\n"
                          f"    {ip} saddr != {cluster_cidr} jump mark-for-masquerade\n"
                          f"    numgen random mod {len(ready)} vmap {{ {', '.join(picks)} }}\n"
                          "  }")

    def vmap(name: str, elements: list[str], key: str = f"{family} . inet_proto") -> str:
        body = f"    elements = {{ {', '.join(elements)} }}\n" if elements else ""
        return (f"  map {name} {{\n    type {key} . inet_service : verdict\n"
                f"{body}  }}")

    local = f"fib daddr type local {ip} daddr != {loopback} meta l4proto . th dport"
    table = "\n".join([
        vmap("service-ips", service_ips),
        vmap("no-endpoint-services", no_endpoints),
        vmap("service-nodeports", node_ports, "inet_proto"),
        vmap("no-endpoint-nodeports", no_endpoint_node_ports, "inet_proto"),
        "  chain reject-chain {\n    reject\n  }",
        f"  chain services {{\n    {ip} daddr . meta l4proto . th dport vmap @service-ips\n"
        f"    {local} vmap @service-nodeports\n  }}",
        "  chain service-endpoints-check {\n"
        f"    {ip} daddr . meta l4proto . th dport vmap @no-endpoint-services\n"
        f"    {local} vmap @no-endpoint-nodeports\n  }}",
        "  chain filter-forward {\n    type filter hook forward priority -110; policy accept;\n"
        "    ct state new jump service-endpoints-check\n  }",
        "  chain filter-input {\n    type filter hook input priority -110; policy accept;\n"
        "    ct state new jump service-endpoints-check\n  }",
        "  chain filter-output {\n    type filter hook output priority -110; policy accept;\n"
        "    ct state new jump service-endpoints-check\n  }",
        "  chain nat-prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n"
        "    jump services\n  }",
        "  chain nat-output {\n    type nat hook output priority -100; policy accept;\n"
        "    jump services\n  }",
        "  chain nat-postrouting {\n    type nat hook postrouting priority srcnat; "
        "policy accept;\n    jump masquerading\n  }",
        f"  chain mark-for-masquerade {{\n    meta mark set meta mark or {MASQ_MARK:#x}\n  }}",
        f"  chain masquerading {{\n    meta mark & {MASQ_MARK:#x} == 0 return\n"
        f"    meta mark set meta mark xor {MASQ_MARK:#x}\n    masquerade fully-random\n  }}",
        *chains,
    ])
    return (f"table {ip} {TABLE}\ndelete table {ip} {TABLE}\n"  # create-then-delete: atomic
            f"table {ip} {TABLE} {{\n{table}\n}}\n")


# ---- shell: carrying it out -------------------------------------------------------------------

BR_NETFILTER = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")  # there once it is loaded


def _run(argv: list[str], what: str, stdin: str | None = None) -> None:
    try:
        p = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelNodeError(f"{what}: {' '.join(argv[:4])}: {e}") from e
    if p.returncode != 0:
        raise KernelNodeError(f"{what}: {' '.join(argv)}: {p.stderr.strip() or p.returncode}")


def build(state: ClusterState, node: NodeState) -> None:
    """Make `node` (whose namespace and underlay exist) a Flannel + kube-proxy node."""
    ns = node.netns
    what = f"building kernel node {node.name}"
    _run(["ip", "-n", ns, "-batch", "-"], what, "\n".join(ip_batch(state, node)) + "\n")
    if len(state.nodes) >= 2:
        _run(["bridge", "-n", ns, "-batch", "-"], what,
             "\n".join(fdb_batch(state, node)) + "\n")
        _run(["ip", "netns", "exec", ns, "ethtool", "-K", naming.UNDERLAY_IFNAME, "tx", "off",
              "tso", "off", "gso", "off", "gro", "on"], what)
    # br_netfilter: a Service reply bridged between two pods of this node must meet conntrack
    # to be un-NATed; Kubernetes requires it (k3s loads the module: `modprobe br_netfilter`).
    # A stock distribution kernel (Debian 12's, in scripts/vm) has it as a module not loaded.
    if not BR_NETFILTER.exists():
        _run(["modprobe", "br_netfilter"], what + ": loading br_netfilter as k3s does")
    six = ["net.ipv6.conf.all.forwarding=1", "net.bridge.bridge-nf-call-ip6tables=1"] \
        if node.pod_cidr6 else []  # dual-stack: Linux routes IPv6 too on this node
    _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
          "net.bridge.bridge-nf-call-iptables=1", *six], what + " (is br_netfilter loaded?)")
    sync_services(state, node)


def sync_services(state: ClusterState, node: NodeState) -> bool:
    """Load the Service ruleset into the node if it changed; True if it was (re)loaded."""
    rules = ruleset(state) + (ruleset(state, v6=True) if state.cluster.dual_stack else "")
    if _loaded.get(node.netns) == rules:
        return False
    _run(["ip", "netns", "exec", node.netns, "nft", "-f", "-"],
         f"updating Services on kernel node {node.name}", rules)
    _loaded[node.netns] = rules
    return True
