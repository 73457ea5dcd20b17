"""Per-namespace kernel settings of the host layer: the sysctls of node and pod namespaces and
the offload features of their devices (emunet.host.netlink builds the objects).

Call every function inside the namespace it is about (`emunet.host.netns.entered`): the
/proc/sys/net files and the ethtool ioctl socket opened here belong to the calling thread's
namespace.

IPv6 (dual-stack, issue 19): an IPv4-only cluster turns IPv6 off everywhere (no router
solicitations or MLD reports in anyone's tcpdump). A dual-stack cluster keeps it on in node and
pod namespaces, but never as a router or an autoconfiguring host: forwarding stays 0 in node
namespaces (the agent, not the kernel, forwards: DESIGN.md section 2), accept_ra 0 (k3s runs
no radvd; the pod's default route is static, as the bridge CNI plugin sets it, and a host with
accept_ra 0 sends no Router Solicitation, net/ipv6/addrconf.c addrconf_dad_completed) and
accept_dad 0 (the addresses are the IPAM's, unique by construction: no 1 s DAD wait before a
pod can use its link-local or global address).
"""

from __future__ import annotations

from pathlib import Path

from pyroute2.ethtool.ioctl import EthtoolError, IoctlEthtool

from emunet.host.manifest import HostError

# As containerd and Docker set in every pod: unprivileged processes (workloads run as nobody
# by default, emunet/cluster/workloads.py) may bind ports < 1024 and open ICMP echo sockets.
_COMMON = {"net/ipv4/ip_forward": "0", "net/ipv4/ip_unprivileged_port_start": "0",
           "net/ipv4/ping_group_range": "0 2147483647"}
_IPV6_OFF = {"net/ipv6/conf/default/disable_ipv6": "1", "net/ipv6/conf/all/disable_ipv6": "1"}
# "default" before "all": devices created later (eth0, the veths) copy "default"
_IPV6_ON = {f"net/ipv6/conf/{dev}/{key}": value for dev in ("default", "all")
            for key, value in (("disable_ipv6", "0"), ("forwarding", "0"), ("accept_ra", "0"),
                               ("accept_dad", "0"), ("router_solicitations", "0"))}


def namespace_sysctls(ipv6: bool, have_ipv6: bool = True) -> dict[str, str]:
    """The sysctls of a node or pod namespace (key: the path under /proc/sys); `have_ipv6`:
    the kernel has IPv6 at all (one built without has nothing to turn off)."""
    values = dict(_COMMON)
    if have_ipv6:
        values.update(_IPV6_ON if ipv6 else _IPV6_OFF)
    return values


def set_sysctls(netns: str, ipv6: bool = False) -> None:
    """ip_forward off (the agent forwards), IPv6 off, or on without forwarding, RA or DAD
    (`ipv6`: a dual-stack cluster; see the module doc). Call inside `netns`."""
    have = Path("/proc/sys/net/ipv6").exists()
    if ipv6 and not have:
        raise HostError(f"network namespace {netns}: this kernel has no IPv6 (no "
                        "/proc/sys/net/ipv6), which a dual-stack cluster needs: use an "
                        "IPv4-only clusterCIDR and serviceCIDR, or a kernel with IPv6")
    for key, value in namespace_sysctls(ipv6, have).items():
        try:
            Path("/proc/sys", key).write_text(value)
        except OSError as e:
            raise HostError(f"cannot set {key.replace('/', '.')}={value} in network namespace "
                            f"{netns}: {e.strerror}") from e


def device_ipv6(ifname: str, netns: str) -> None:
    """A device made before the namespace's "default" was set (a veth peer born in a pod
    namespace) copied the kernel's defaults: accept_ra and accept_dad off on it too (DAD is
    skipped only when both "all" and the device say so, addrconf_dad_begin)."""
    for key in ("accept_ra", "accept_dad"):
        path = Path("/proc/sys/net/ipv6/conf", ifname, key)
        try:
            path.write_text("0")
        except OSError as e:
            raise HostError(f"cannot set net.ipv6.conf.{ifname}.{key}=0 in network namespace "
                            f"{netns}: {e.strerror}") from e


# The userspace datapath reads frames from AF_PACKET sockets and writes them back: it needs
# complete checksums (no CHECKSUM_PARTIAL: every tx-checksum-* off) and frames no larger than
# the MTU (no TSO/GSO/USO super-frames on transmit: every *-segmentation off; no GRO merging on
# receive: rx-gro*). Kernel feature names, as `ethtool -k` lists them; the legacy per-flag
# ioctls miss newer bits such as tx-tcp-accecn-segmentation, so the features API is used.
def offload_feature(name: str) -> bool:
    return (name.startswith(("tx-checksum-", "tx-gso-", "rx-gro", "rx-udp-gro"))
            or name.endswith("-segmentation"))


# spec.offloads (the default): pod veths keep TCP segmentation and checksum offloads, as on a
# real node; the agent reads TCP super-frames with a virtio-net header (PACKET_VNET_HDR) and
# segments them itself before VXLAN (emunet.datapath.gso), TCP over IPv6 too (tx-tcp6-*:
# dual-stack; an IPv4-only pod has no IPv6). UDP segmentation and GRO stay off.
POD_OFFLOADS = ("tx-checksum-ipv4", "tx-checksum-ip-generic", "tx-tcp-segmentation",
                "tx-tcp-ecn-segmentation", "tx-tcp-mangleid-segmentation",
                "tx-tcp6-segmentation", "tx-generic-segmentation")
# The emunet node's underlay eth0 stands for a wire and a NIC: frames leave it MTU-sized with
# complete checksums (segmentation and tx-checksum off, so the agents' UDP GSO trains are split
# into standard datagrams before the wire); on receive its GRO coalesces same-flow datagrams
# for the agent's UDP_GRO socket, as a NIC driver's GRO would.
UNDERLAY_OFFLOADS = ("rx-gro",)


def offloads_only(ifname: str, netns: str, keep: tuple[str, ...]) -> None:
    """Every offload feature off except those named in `keep` (turned on). Inside `netns`."""
    eth = IoctlEthtool(ifname)
    try:
        features = eth.get_features()
        for name in list(features.keys()):
            if offload_feature(name) and features.is_available(name):
                features[name] = name in keep
        eth.set_features(features)
    except (EthtoolError, OSError) as e:
        raise HostError(f"cannot turn off offloads on {ifname} in network namespace {netns}: "
                        f"{e}") from e
    finally:
        eth.close()
