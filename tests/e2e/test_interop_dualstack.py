"""Interop over IPv6: an emunet node and a dual-stack kernel node (Flannel's flannel-v6.1 and
kube-proxy's `ip6` table) in one cluster. IPv6 crosses the underlay as VXLAN over IPv6 that
one side's agent writes and the other side's Linux vxlan driver reads, both ways: if emunet's
flannel-v6 encapsulation were not the driver's, nothing here would connect. NodePort over IPv6
from the outside client reaches either kind of node, and both answer a datagram above the pod
MTU with the same Packet Too Big."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.cluster import ROOT, Cluster
from tests.e2e.test_nodeport6 import PROBE

NS = "demo"
CONFIG = ROOT / "tests" / "e2e" / "configs" / "interop-dualstack.yaml"


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    c = module_clusters(CONFIG, "emi6")
    c.ip6 = {p["metadata"]["name"]: p["status"]["podIPs"][1]["ip"]  # type: ignore[attr-defined]
             for p in c.get("pods")}
    c.cip6 = {s["metadata"]["name"]: s["spec"]["clusterIPs"][-1]  # type: ignore[attr-defined]
              for s in c.get("services")}
    return c


def _in_node(c: Cluster, node: str, *cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", f"{c.prefix}-{node}", *cmd],
                          capture_output=True, text=True, check=True).stdout


def test_the_kernel_node_has_flannel_v6_and_an_ip6_table(cluster):
    link = _in_node(cluster, "node-2", "ip", "-d", "link", "show", "flannel-v6.1")
    assert "vxlan id 1 " in link and "local fd00:e3e7::c" in link and "dstport 8472" in link
    routes = _in_node(cluster, "node-2", "ip", "-6", "route")
    assert "2001:cafe:42:1::/64 via 2001:cafe:42:1:: dev flannel-v6.1" in routes
    assert _in_node(cluster, "node-2", "sysctl", "-n",
                    "net.ipv6.conf.all.forwarding").strip() == "1"
    assert _in_node(cluster, "node-1", "sysctl", "-n",
                    "net.ipv6.conf.all.forwarding").strip() == "0"
    rules = _in_node(cluster, "node-2", "nft", "list", "table", "ip6", "kube-proxy")
    assert f"{cluster.cip6['web-1']} . tcp . 80 : goto service-demo/web-1/tcp/80" in rules


@pytest.mark.parametrize(("client", "server"), [("client-1", "web-2"), ("client-2", "web-1")])
def test_ping6_and_http6_by_pod_ip_both_ways(cluster, client, server):
    out = cluster.exec(NS, client, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2",
                       cluster.ip6[server]).stdout
    assert " 0% packet loss" in out
    page = cluster.exec(NS, client, "curl", "-s", "-6", "-m", "5",
                        f"http://[{cluster.ip6[server]}]:8080/direct").stdout
    assert f"pod={server} " in page and f"ip6={cluster.ip6[server]} " in page


@pytest.mark.parametrize(("client", "server"), [
    ("client-1", "web-2"),  # emunet's IPv6 DNAT, then flannel-v6 into the Linux driver
    ("client-2", "web-1"),  # nftables ip6 DNAT, then flannel-v6.1 into emunet's agent
    ("client-2", "web-2"),  # same kernel node: bridged reply un-NATed (bridge-nf-call-ip6tables)
])
def test_http6_through_ipv6_cluster_ips_and_aaaa(cluster, client, server):
    by_ip = cluster.exec(NS, client, "curl", "-s", "-m", "5",
                         f"http://[{cluster.cip6[server]}]/svc").stdout
    assert f"pod={server} " in by_ip
    by_name = cluster.exec(NS, client, "curl", "-s", "-6", "-m", "5",
                           f"http://{server}.{NS}.svc.cluster.local/named").stdout
    assert f"pod={server} " in by_name and "path=/named" in by_name


NODE6 = {"node-1": "fd00:e3e7::b", "node-2": "fd00:e3e7::c"}  # node-2: the kernel node


@pytest.fixture(scope="module")
def node_ports(cluster):
    """NodePort Services of both families for each web pod: TCP 80 and a UDP port (a backend
    with no UDP listener still has ready endpoints, so its node port is DNAT'ed)."""
    f = cluster.tmp / "np6.yaml"
    f.write_text("".join(
        f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: np6-{s}, namespace: {NS}}}\n"
        f"spec:\n  type: NodePort\n  ipFamilyPolicy: PreferDualStack\n"
        f"  selector: {{app: {s}}}\n  ports: [{{name: http, port: 80, targetPort: 8080, "
        f"nodePort: {p}}}, {{name: udp, port: 53, targetPort: 8053, protocol: UDP, "
        f"nodePort: {p + 50}}}]\n" for s, p in (("web-1", 30381), ("web-2", 30382))))
    cluster.emunet("apply", "-f", str(f))
    yield {"web-1": 30381, "web-2": 30382}
    cluster.emunet("delete", "-f", str(f))


@pytest.mark.parametrize("node", ["node-1", "node-2"])
@pytest.mark.parametrize("server", ["web-1", "web-2"])
def test_node_port_over_ipv6_from_outside_on_either_kind_of_node(cluster, node_ports, node,
                                                                  server):
    """kube-proxy's ip6 table on the kernel node and emunet's IPv6 node ports on its node,
    each reaching a backend on either kind of node."""
    out = cluster.emunet("exec", "--outside", "--", "curl", "-s", "-6", "-g", "-m", "5",
                         f"http://[{NODE6[node]}]:{node_ports[server]}/np6", timeout=30).stdout
    assert f"pod={server} " in out and "path=/np6" in out, out


@pytest.mark.parametrize("node", ["node-2", "node-1"])  # Linux's own answer, then emunet's
def test_packet_too_big_from_either_kind_of_node(cluster, node_ports, node):
    """A 1500-byte IPv6 datagram to a node port: the kernel node's ip6_forward answers Packet
    Too Big with cni0's MTU; emunet's node must say the same, as the client's kernel sees it."""
    got = json.loads(cluster.emunet(
        "exec", "--outside", "--", sys.executable, "-c", PROBE, "6", NODE6[node],
        str(node_ports["web-1"] + 50), str(1500 - 48), timeout=30).stdout)
    assert got["error"] == {"errno": 90, "origin": 3, "type": 2, "code": 0, "info": 1450,
                            "from": NODE6[node]}, got
