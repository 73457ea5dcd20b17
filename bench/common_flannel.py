"""A second baseline, built by hand with no emunet code: the smallest Flannel + kube-proxy pair.

Two node namespaces joined by one veth (the wire: transmit checksum and segmentation offloads
off, so frames on it are MTU-sized with complete checksums; receive GRO on, as a NIC driver's
napi_gro_receive does it), each with what flanneld and the CNI bridge plugin build on k3s:
`cni0` (the pods' gateway) with one pod veth, `flannel.1` (VXLAN, VNI 1, UDP 8472, nolearning)
with the other node's fdb, neighbour and route, ip_forward on. A ClusterIP is one nft nat
prerouting rule (what kube-proxy's DNAT comes to per packet: conntrack NATs the rest). One
client pod on node a, one server pod on node b (every TCP port of the ClusterIP goes to it).
`bench.datapath` runs its clients through it beside emunet's own kernel-mode nodes, so the
ratio's baseline is checked against one built independently (issue 16 §5). Everything
lives in namespaces named `<prefix>-*`, removed on exit, also on failure.
Not a section of its own (scripts/bench skips `common*`).
"""

from __future__ import annotations

import subprocess

from bench.common_cluster import run_in

VIP = "10.43.99.1"  # the pair's one ClusterIP
NODES = {"a": ("192.168.99.1", "10.42.1"), "b": ("192.168.99.2", "10.42.2")}
MTU, POD_MTU = 1500, 1450


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


class FlannelPair:
    """Use as a context: builds the pair, `run_in(netns, ...)`, removes every namespace."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.spaces = [f"{prefix}-{n}" for n in ("a", "b", "client", "server")]

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    run_in = staticmethod(run_in)  # the same as BenchCluster.run_in

    def __enter__(self) -> FlannelPair:
        try:
            self._build()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        for ns in self.spaces:
            _sh("ip", "netns", "del", ns, check=False)

    def _build(self) -> None:
        for ns in self.spaces:
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        a, b = self.ns("a"), self.ns("b")
        _sh("ip", "-n", a, "link", "add", "eth0", "mtu", str(MTU), "type", "veth", "peer",
            "name", "eth0", "mtu", str(MTU), "netns", b)
        for node, pod in (("a", "client"), ("b", "server")):
            ns, (under, subnet) = self.ns(node), NODES[node]
            other = "b" if node == "a" else "a"
            o_under, o_subnet = NODES[other]
            vtep, o_vtep = f"0a:58:00:00:00:0{1 if node == 'a' else 2}", \
                f"0a:58:00:00:00:0{2 if node == 'a' else 1}"
            batch = [
                f"addr add {under}/24 dev eth0", "link set eth0 up",
                "link add cni0 type bridge", f"addr add {subnet}.1/24 dev cni0",
                f"link set cni0 mtu {POD_MTU} up",
                f"link add flannel.1 address {vtep} type vxlan id 1 local {under} dev eth0 "
                "dstport 8472 nolearning", f"link set flannel.1 mtu {POD_MTU} up",
                f"addr add {subnet}.0/32 dev flannel.1",
                f"neigh add {o_subnet}.0 lladdr {o_vtep} dev flannel.1 nud permanent",
                f"route add {o_subnet}.0/24 via {o_subnet}.0 dev flannel.1 onlink",
                f"link add veth-{pod} mtu {POD_MTU} type veth peer name eth0 mtu {POD_MTU} "
                f"netns {self.ns(pod)}",
                f"link set veth-{pod} master cni0 up",
            ]
            subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(batch) + "\n",
                           text=True, check=True, capture_output=True)
            _sh("bridge", "-n", ns, "fdb", "append", o_vtep, "dev", "flannel.1", "dst",
                o_under)
            self.run_in(ns, "ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off")
            self.run_in(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            p = self.ns(pod)
            _sh("ip", "-n", p, "addr", "add", f"{subnet}.2/24", "dev", "eth0")
            _sh("ip", "-n", p, "link", "set", "eth0", "up")
            _sh("ip", "-n", p, "route", "add", "default", "via", f"{subnet}.1")
        # kube-proxy's DNAT on the client's node: the ClusterIP to the server pod
        rules = (f"table ip kp {{\n chain pre {{\n  type nat hook prerouting priority -100\n"
                 f"  ip daddr {VIP} meta l4proto tcp dnat to {NODES['b'][1]}.2\n }}\n}}\n")
        subprocess.run(["ip", "netns", "exec", a, "nft", "-f", "-"], input=rules, text=True,
                       check=True, capture_output=True)

    @property
    def server_ip(self) -> str:
        return f"{NODES['b'][1]}.2"
