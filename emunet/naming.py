"""Deterministic names and addresses of everything emunet creates.

Kernel object names carry the emunet prefix so that a user (and `emunet down`) can tell them
apart from anything else on the machine; MAC addresses are derived from IPs the way Kubernetes
CNIs do (0a:58 + the IPv4 address), so every table can be computed from the cluster state alone.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

DEFAULT_PREFIX = "emunet"
DEFAULT_RUN_DIR = "/run/emunet"


def prefix() -> str:
    """The name prefix; tests set EMUNET_PREFIX to keep their objects apart from a user's."""
    return os.environ.get("EMUNET_PREFIX", DEFAULT_PREFIX)


def run_dir() -> Path:
    """Where the running cluster keeps its state, manifest, logs and control socket."""
    return Path(os.environ.get("EMUNET_RUN_DIR", DEFAULT_RUN_DIR))


def manifest_path() -> Path:
    """The record of every kernel object and process the cluster made (emunet.host.manifest)."""
    return run_dir() / "manifest.json"


def kubeconfig_path() -> Path:
    """The root-only kubeconfig of the cluster's API server, written by `up`."""
    return run_dir() / "kubeconfig"


def node_netns(node: str) -> str:
    return f"{prefix()}-{node}"


def pod_netns(namespace: str, pod: str) -> str:
    return f"{prefix()}-{namespace}-{pod}"


def underlay_netns() -> str:
    """The namespace holding the underlay bridge (clusters of more than two nodes)."""
    return f"{prefix()}-underlay"


def outside_netns() -> str:
    """The outside client on the underlay (NodePort from outside the cluster)."""
    return f"{prefix()}-outside"


def host_ifname(pod_ip: str) -> str:
    """Node-side name of a pod's veth: 'veth' + the pod IP in hex (12 chars, IFNAMSIZ-safe)."""
    return "veth" + socket.inet_aton(pod_ip).hex()


UNDERLAY_IFNAME = "eth0"  # in each node namespace
POD_IFNAME = "eth0"  # in each pod namespace
# The node's own stack as seen by its agent (Cilium's cilium_host/cilium_net pair): a veth in
# the node namespace whose HOST_IFNAME end the kernel owns (NOARP, the route to the cluster
# CIDR) and whose HOST_PEER end the agent reads and writes (emunet.host.netlink.add_host_port)
HOST_IFNAME = "emuhost"
HOST_PEER = "emuhost-dp"


def host_mac(node_ip: str) -> str:
    """MAC of a node's HOST_IFNAME end: 0a:5a:<its underlay IP>."""
    return mac_from_ip(node_ip, "0a:5a")


def mac_from_ip(ip: str, oui: str = "0a:58") -> str:
    """0a:58:<ip bytes>: the locally administered MAC scheme Kubernetes CNIs use for pods."""
    return oui + ":" + socket.inet_aton(ip).hex(":")


def vtep_mac(pod_cidr: str) -> str:
    """MAC of a node's VXLAN endpoint (Flannel's flannel.1), derived from its pod subnet."""
    net = ipaddress.IPv4Network(pod_cidr)
    return mac_from_ip(str(net.network_address), oui="0a:59")


def vtep_mac6(pod_cidr6: str) -> str:
    """MAC of a node's IPv6 VXLAN endpoint (Flannel's flannel-v6.1, a device of its own beside
    flannel.1, so a MAC of its own): 0a:5b:<bytes 4-7 of its /64 pod subnet>, the part that
    tells the nodes' /64s apart in any IPv6 cluster range of /32 or longer (k3s: a /56)."""
    net = ipaddress.IPv6Network(pod_cidr6)
    return "0a:5b:" + net.network_address.packed[4:8].hex(":")
