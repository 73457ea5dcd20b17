"""The host layer: builds and removes the kernel objects of a cluster. The only pyroute2 user.

Nodes and pods are named network namespaces joined by veth pairs; the underlay is one veth pair
(two nodes) or a bridge in its own namespace (more nodes). Everything created is recorded in a
`Manifest` *before* it is created, so `teardown` removes exactly that, even after a crash.

Threading: every function here is synchronous (pyroute2's sync `IPRoute` runs its own event
loop and must not be used from a thread that runs an asyncio loop); call them from a worker
thread (`socket_in_netns` and `netns_exists` use no netlink and are safe anywhere, they only
block for microseconds). They are thread-safe: a namespace is entered with setns(2), which
switches only the calling thread, and the thread's own namespace is restored in `finally`
(emunet.host.netns, which also says why setns and not pyroute2's netns handles). Netlink sockets,
ioctl sockets and /proc/sys/net files opened inside stay bound to it.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from pyroute2 import IPRoute, NetlinkError
from pyroute2 import netns as _pyr_netns

from emunet import model, naming
from emunet.host.kernelnode import BRIDGE, is_kernel
from emunet.host.manifest import HostError, Manifest, process_start_time  # noqa: F401 (re-export)
from emunet.host.netns import create_netns, entered, list_netns, netns_exists, socket_in_netns
from emunet.host.podfiles import hosts_file, resolv_conf  # noqa: F401 (re-export)
from emunet.host.procs import end_recorded
from emunet.host.sysctls import POD_OFFLOADS as _POD_OFFLOADS
from emunet.host.sysctls import UNDERLAY_OFFLOADS as _UNDERLAY_OFFLOADS
from emunet.host.sysctls import device_ipv6
from emunet.host.sysctls import offloads_only as _offloads_only
from emunet.host.sysctls import set_sysctls as _set_sysctls
from emunet.state.cluster import ClusterState, NodeState, PodState

__all__ = ["HostError", "Manifest", "add_pod", "build_node", "build_underlay", "hosts_file",
           "list_netns", "netns_exists", "preflight", "remove_pod", "resolv_conf",
           "socket_in_netns", "teardown"]

ETC_NETNS = Path("/etc/netns")  # `ip netns exec` bind-mounts /etc/netns/<netns>/* over /etc
UNDERLAY_MTU = 1500  # pod MTU + 50 bytes of VXLAN overhead (RFC 7348 section 4.3)
# Dual-stack: IPv6 pod traffic is VXLAN over an IPv6 outer header (flannel-v6), 20 bytes more
# (IPv6's 40-byte header, RFC 8200 section 3): the underlay grows, the pod MTU stays.
IPV6_OUTER_EXTRA = 20
IFA_F_NODAD = 0x02  # linux/if_addr.h: the address is usable at once (no DAD; see sysctls)


def underlay_mtu(state: ClusterState) -> int:
    """The MTU of the underlay veths and bridge: room for VXLAN over IPv6 when dual-stack."""
    return UNDERLAY_MTU + (IPV6_OUTER_EXTRA if state.cluster.dual_stack else 0)
UNDERLAY_BRIDGE = "br0"

def _exists_msg(what: str) -> str:
    return f"{what} already exists (left over from an earlier run?): run `emunet down`"


# ---- namespaces --------------------------------------------------------------------------------

def _create_netns(name: str, m: Manifest) -> None:
    if netns_exists(name):
        raise HostError(_exists_msg(f"network namespace {name}"))
    m.add_netns(name)  # write-ahead: a crash right after creation still leaves it listed
    try:
        create_netns(name)
    except OSError as e:
        if e.errno == errno.EEXIST:  # created by someone else in the meantime: not ours
            m.discard({"kind": "netns", "name": name})
            raise HostError(_exists_msg(f"network namespace {name}")) from None
        raise HostError(f"cannot create network namespace {name}: {e.strerror or e}") from e


def _remove_netns(name: str) -> None:
    try:
        _pyr_netns.remove(name)  # umount + unlink, as `ip netns delete` does
    except FileNotFoundError:
        pass
    except OSError as e:
        raise HostError(f"cannot remove network namespace {name}: {e.strerror or e}") from e


# ---- inside a namespace ------------------------------------------------------------------------

@contextlib.contextmanager
def _netlink(what: str, netns: str, exists: str | None = None) -> Iterator[IPRoute]:
    """An IPRoute handle in the current thread's namespace; netlink errors become HostErrors."""
    try:
        with IPRoute() as ipr:
            yield ipr
    except NetlinkError as e:
        if e.code == errno.EEXIST and exists:
            raise HostError(_exists_msg(f"{exists} in network namespace {netns}")) from None
        raise HostError(f"{what} in network namespace {netns}: {os.strerror(e.code)}") from None


_held: dict[str, IPRoute] | None = None  # node netns -> its netlink socket (`held_sockets`)


@contextlib.contextmanager
def held_sockets() -> Iterator[None]:
    """Inside, `add_pod` keeps one netlink socket per node namespace open instead of opening
    one per pod (~2 ms each, 11% of building 1,000 pods). Single-threaded callers only (`up`)."""
    global _held
    _held = {}
    try:
        yield
    finally:
        held, _held = _held, None
        for ipr in held.values():
            ipr.close()


@contextlib.contextmanager
def _node_netlink(what: str, netns: str, exists: str | None = None) -> Iterator[IPRoute]:
    """`_netlink` for a node namespace the caller has entered: the held socket if any."""
    if _held is None:
        with _netlink(what, netns, exists) as ipr:
            yield ipr
        return
    try:
        if netns not in _held:
            _held[netns] = IPRoute()  # created inside netns: bound to it for good
        yield _held[netns]
    except NetlinkError as e:
        if e.code == errno.EEXIST and exists:
            raise HostError(_exists_msg(f"{exists} in network namespace {netns}")) from None
        raise HostError(f"{what} in network namespace {netns}: {os.strerror(e.code)}") from None


def _offloads_off(ifname: str, netns: str) -> None:
    """Call inside `netns`: the ioctl socket, and so the device lookup, is in that namespace."""
    _offloads_only(ifname, netns, ())


def _new_namespace(name: str, m: Manifest, ipv6: bool = False) -> None:
    """A recorded namespace with sysctls set (`ipv6`: IPv6 on, without forwarding) and lo up."""
    _create_netns(name, m)
    with entered(name):
        _set_sysctls(name, ipv6)
        with _netlink("setting lo up", name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


# ---- building ----------------------------------------------------------------------------------

def _planned_netns(state: ClusterState) -> list[str]:
    names = [n.netns for n in state.nodes]
    # the bridge and the outside client (lifecycle.up builds them for every cluster)
    names += [naming.underlay_netns(), naming.outside_netns()]
    return names + [p.netns for p in state.pods.values()]


def preflight(state: ClusterState) -> None:
    """Refuse to start over leftovers: raise HostError if anything to be created exists."""
    for name in _planned_netns(state):
        if netns_exists(name):
            raise HostError(_exists_msg(f"network namespace {name}"))
    for pod in state.pods.values():
        if (ETC_NETNS / pod.netns).exists():
            raise HostError(_exists_msg(f"directory {ETC_NETNS / pod.netns}"))


def record_pods_ahead(state: ClusterState, m: Manifest) -> None:
    """List every pod's namespace and /etc/netns directory in the manifest with one save,
    before `add_pod` makes them (it then finds its entries recorded and saves nothing)."""
    entries: list[dict] = []
    if not ETC_NETNS.exists():
        entries.append({"kind": "dir", "path": str(ETC_NETNS), "if_empty": True})
    for pod in state.pods.values():
        entries.append({"kind": "netns", "name": pod.netns})
        entries.append({"kind": "dir", "path": str(ETC_NETNS / pod.netns), "if_empty": False})
    m.record_ahead(entries)


def build_node(state: ClusterState, node: NodeState, m: Manifest) -> None:
    """The node namespace: lo up, ip_forward=0; IPv6 off, or on without forwarding in a
    dual-stack cluster (the agent forwards both families; emunet.host.sysctls)."""
    _new_namespace(node.netns, m, ipv6=state.cluster.dual_stack)


def _underlay_up(node: NodeState, offloads: bool, prefixlen6: int) -> None:
    """Address and bring up the node's underlay eth0 (created by build_underlay)."""
    with entered(node.netns), _netlink("configuring the underlay", node.netns) as ipr:
        idx = ipr.link_lookup(ifname=naming.UNDERLAY_IFNAME)[0]
        ipr.addr("add", index=idx, address=node.underlay_ip, prefixlen=node.underlay_prefixlen)
        if node.underlay_ip6:  # dual-stack: flannel-v6's outer source (IfaceV6Addr)
            ipr.addr("add", index=idx, address=node.underlay_ip6, prefixlen=prefixlen6,
                     flags=IFA_F_NODAD)
        ipr.link("set", index=idx, state="up")
        if offloads:
            _offloads_only(naming.UNDERLAY_IFNAME, node.netns, _UNDERLAY_OFFLOADS)


def build_underlay(state: ClusterState, m: Manifest, outside: bool = False) -> None:
    """Join the node namespaces: a veth pair for two nodes, a bridge namespace for more.

    The node ends are all called eth0 with the node's underlay IP; no pod traffic is routed by
    the kernel over it, only the agents' VXLAN UDP datagrams (RFC 7348) and NodePort traffic.
    `outside`: also plug the outside client namespace into the bridge (always a bridge then,
    whatever the node count): the machine a NodePort user connects from.
    """
    nodes = state.nodes
    eth0 = naming.UNDERLAY_IFNAME
    mtu = underlay_mtu(state)
    if len(nodes) < 2 and not outside:
        return  # one node: pods talk through its agent only
    if len(nodes) == 2 and not outside:
        a, b = nodes
        with entered(a.netns), _netlink("creating the underlay veth", a.netns,
                                        exists=f"interface {eth0}") as ipr:
            ipr.link("add", ifname=eth0, kind="veth", mtu=mtu,
                     peer={"ifname": eth0, "mtu": mtu, "net_ns_fd": b.netns})
    else:
        under = naming.underlay_netns()
        _new_namespace(under, m)
        with entered(under), _netlink("creating the underlay bridge", under,
                                      exists="an interface") as ipr:
            # STP off and no forward delay: a fixed loop-free star, ports forward at once.
            ipr.link("add", ifname=UNDERLAY_BRIDGE, kind="bridge", mtu=mtu,
                     br_stp_state=0, br_forward_delay=0)
            br = ipr.link_lookup(ifname=UNDERLAY_BRIDGE)[0]
            ipr.link("set", index=br, state="up")
            for n in nodes:
                port = f"port{n.index}"
                ipr.link("add", ifname=port, kind="veth", mtu=mtu,
                         peer={"ifname": eth0, "mtu": mtu, "net_ns_fd": n.netns})
                idx = ipr.link_lookup(ifname=port)[0]
                ipr.link("set", index=idx, master=br, state="up")
                # a switch port forwards frames as they came: a veth with TSO on would also
                # make them ineligible for the receiving eth0's GRO (veth_xmit)
                _offloads_off(port, under)
    prefixlen6 = ipaddress.IPv6Network(state.cluster.underlay_cidr6 or model.DEFAULT_UNDERLAY_CIDR6
                                       ).prefixlen
    for n in nodes:
        _underlay_up(n, state.cluster.offloads and not is_kernel(state, n.name), prefixlen6)
    if outside:
        _build_outside(state, m)


def _build_outside(state: ClusterState, m: Manifest) -> None:
    """`<prefix>-outside`: a client namespace on the underlay bridge (port0), with the last
    host address of the underlay network (dual-stack: also `<underlay.cidr6>::fe`, IPv6 on
    without forwarding, RA or DAD, as the nodes'); `emunet exec --outside` runs commands there.
    Its offloads are off, as a pod's: the node agent that answers its NodePort connections
    reads standard, MTU-sized frames with full checksums."""
    from emunet.host.underlay import outside_ip, outside_ip6

    name, eth0 = naming.outside_netns(), naming.UNDERLAY_IFNAME
    under = naming.underlay_netns()
    dual = state.cluster.dual_stack
    _new_namespace(name, m, ipv6=dual)
    with entered(under), _netlink("plugging in the outside client", under) as ipr:
        ipr.link("add", ifname="port0", kind="veth", mtu=underlay_mtu(state),
                 peer={"ifname": eth0, "mtu": underlay_mtu(state), "net_ns_fd": name})
        idx = ipr.link_lookup(ifname="port0")[0]
        ipr.link("set", index=idx, master=ipr.link_lookup(ifname=UNDERLAY_BRIDGE)[0],
                 state="up")
    net = ipaddress.IPv4Network(state.cluster.underlay_cidr)
    with entered(name), _netlink("configuring the outside client", name) as ipr:
        idx = ipr.link_lookup(ifname=eth0)[0]
        ipr.addr("add", index=idx, address=outside_ip(str(net)), prefixlen=net.prefixlen)
        if dual:  # NodePort over IPv6 from outside (emunet.datapath.nodeport6)
            net6 = ipaddress.IPv6Network(state.cluster.underlay_cidr6
                                         or model.DEFAULT_UNDERLAY_CIDR6)
            ipr.addr("add", index=idx, address=outside_ip6(str(net6)),
                     prefixlen=net6.prefixlen, flags=IFA_F_NODAD)
        ipr.link("set", index=idx, state="up")
        _offloads_off(eth0, name)


def add_host_port(state: ClusterState, node: NodeState) -> None:
    """The node's own stack as its agent sees it (Cilium's cilium_host/cilium_net): a veth
    pair inside the node namespace; the kernel owns HOST_IFNAME (NOARP, so its frames carry
    its own MAC and need no neighbour; the route to the cluster CIDR, so its replies to pods
    leave there), the agent reads and writes HOST_PEER. A pod's packet for the node's address
    is delivered to the node's listeners (the API server's, emunet.api) through it: a local
    delivery, ip_forward stays 0 and the kernel still forwards nothing. Offloads off: the
    agent sees MTU-sized frames with complete checksums. Goes with the namespace."""
    mtu = state.cluster.mtu
    with entered(node.netns), _netlink("creating the host port", node.netns) as ipr:
        ipr.link("add", ifname=naming.HOST_IFNAME, kind="veth", mtu=mtu,
                 address=naming.host_mac(node.underlay_ip),
                 peer={"ifname": naming.HOST_PEER, "mtu": mtu})
        idx = ipr.link_lookup(ifname=naming.HOST_IFNAME)[0]
        ipr.link("set", index=idx, state="up", arp=False)
        ipr.link("set", index=ipr.link_lookup(ifname=naming.HOST_PEER)[0], state="up")
        ipr.route("add", dst=state.cluster.cluster_cidr, oif=idx)
        for name in (naming.HOST_IFNAME, naming.HOST_PEER):
            _offloads_off(name, node.netns)


def _write_etc(state: ClusterState, pod: PodState, m: Manifest) -> None:
    d = ETC_NETNS / pod.netns
    if not ETC_NETNS.exists():
        m.add_dir(ETC_NETNS, if_empty=True)
    m.add_dir(d)
    try:
        ETC_NETNS.mkdir(exist_ok=True)
        d.mkdir()
        # world-readable whatever the writer's umask (the supervisor's is 077): a pod's
        # processes run as its user (nobody by default) and read them, as the kubelet's 0644
        d.chmod(0o755)
        for name, text in (("resolv.conf", resolv_conf(state, pod)),
                           ("hosts", hosts_file(state, pod))):
            (d / name).write_text(text)
            (d / name).chmod(0o644)
    except FileExistsError:
        m.discard({"kind": "dir", "path": str(d), "if_empty": False})
        raise HostError(_exists_msg(f"directory {d}")) from None
    except OSError as e:
        raise HostError(f"cannot write {d}: {e.strerror}") from e


def add_pod(state: ClusterState, pod: PodState, m: Manifest) -> None:
    """The pod namespace and its veth to the node, as the CNI ptp plugin leaves it (Flannel
    plugs veths into a cni0 bridge; here the node's agent is the bridge). On failure, whatever
    was made for the pod is removed again, so a failed pod leaves nothing behind."""
    node = state.node(pod.node)
    prefixlen = ipaddress.IPv4Network(node.pod_cidr).prefixlen
    mtu = state.cluster.mtu
    kernel = is_kernel(state, pod.node)  # Linux forwards: a cni0 port, offloads left on
    _create_netns(pod.netns, m)
    try:
        _write_etc(state, pod, m)
        with entered(node.netns):
            with _node_netlink(f"creating the veth of pod {pod.netns}", node.netns,
                               exists=f"interface {pod.host_ifname}") as ipr:
                # The pod end is born in the pod namespace with its MAC (0a:58:<ip>, as
                # Kubernetes CNIs derive it); the node end gets no IP: only the agent uses it.
                bridge = {"master": ipr.link_lookup(ifname=BRIDGE)[0]} if kernel else {}
                ipr.link("add", ifname=pod.host_ifname, kind="veth", mtu=mtu, state="up",
                         peer={"ifname": naming.POD_IFNAME, "mtu": mtu, "address": pod.mac,
                               "net_ns_fd": pod.netns}, **bridge)
                if kernel:  # hairpin: a pod reaching itself via its Service (CNI bridge's
                    # hairpinMode, which Flannel sets); the DNAT'ed frame leaves by its port
                    ipr.brport("set", index=ipr.link_lookup(ifname=pod.host_ifname)[0], mode=1)
            if not kernel:  # (_offloads_only sets every offload feature: one ioctl round)
                _offloads_only(pod.host_ifname, node.netns,
                               _POD_OFFLOADS if state.cluster.offloads else ())
        with entered(pod.netns):
            # before eth0 comes up: IPv6 off (no link-local, no DAD), or on without RA/DAD
            _set_sysctls(pod.netns, ipv6=bool(pod.ip6))
            if pod.ip6:
                device_ipv6(naming.POD_IFNAME, pod.netns)
            with _netlink("configuring eth0", pod.netns) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                idx = ipr.link_lookup(ifname=naming.POD_IFNAME)[0]
                ipr.addr("add", index=idx, address=pod.ip, prefixlen=prefixlen)
                if pod.ip6 and node.pod_cidr6 and node.gateway_ip6:
                    # the bridge CNI plugin's IPv6 half: the /64's address and a static
                    # default route via its first address (emunet.state.families' doc)
                    ipr.addr("add", index=idx, address=pod.ip6, flags=IFA_F_NODAD,
                             prefixlen=ipaddress.IPv6Network(node.pod_cidr6).prefixlen)
                ipr.link("set", index=idx, state="up")
                ipr.route("add", dst="0.0.0.0/0", gateway=node.gateway_ip)
                if pod.ip6 and node.gateway_ip6:
                    ipr.route("add", family=socket.AF_INET6, dst="::/0",
                              gateway=node.gateway_ip6, oif=idx)
            if not kernel:
                _offloads_only(naming.POD_IFNAME, pod.netns,
                               _POD_OFFLOADS if state.cluster.offloads else ())
    except BaseException:
        with contextlib.suppress(HostError):
            remove_pod(pod, m)
        raise


# ---- removing ----------------------------------------------------------------------------------

def _remove_entry(e: dict, m: Manifest) -> None:
    if e["kind"] == "netns":
        _remove_netns(e["name"])
    elif e["kind"] == "dir":
        if e.get("if_empty"):
            with contextlib.suppress(FileNotFoundError, OSError):
                os.rmdir(e["path"])
        else:
            shutil.rmtree(e["path"], ignore_errors=True)
    m.discard(e)


def remove_pod(pod: PodState, m: Manifest) -> None:
    """Delete the pod's processes, namespace (its veth goes with it) and /etc/netns dir."""
    with m.deferred():
        _remove_pod(pod, m)


def _remove_pod(pod: PodState, m: Manifest) -> None:
    procs = [e for e in m.processes() if e.get("netns") == pod.netns]
    end_recorded(procs)
    for e in procs:
        m.discard(e)
    node_ns = naming.node_netns(pod.node)
    if netns_exists(node_ns):
        # Delete the node end explicitly: a process still holding the pod namespace would
        # otherwise keep the veth (and the agent's view of it) alive.
        with entered(node_ns), IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=pod.host_ifname):
                with contextlib.suppress(NetlinkError):
                    ipr.link("del", index=idx)
    for e in ({"kind": "dir", "path": str(ETC_NETNS / pod.netns), "if_empty": False},
              {"kind": "netns", "name": pod.netns}):
        if m.has(e):
            _remove_entry(e, m)


def teardown(m: Manifest) -> None:
    """Remove everything in the manifest: processes first, then the rest newest first.

    Tolerant of objects already gone and idempotent; entries leave the manifest as they go, so
    an interrupted teardown can simply be run again.
    """
    errors = []
    with m.deferred():  # one save at the end, not one per entry (removal is idempotent)
        procs = m.processes()
        end_recorded(procs)
        for e in procs:
            m.discard(e)
        for e in reversed(m.entries):
            try:
                _remove_entry(e, m)
            except HostError as err:
                errors.append(str(err))
    if errors:
        raise HostError("; ".join(errors))
