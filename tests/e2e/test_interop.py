"""Interop: an emunet node and a kernel (Flannel + kube-proxy style) node in one cluster.

Traffic between the two crosses the underlay as VXLAN that one side's Python agent writes and
the other side's Linux vxlan driver reads, and the other way round: if emunet's encapsulation
were not RFC 7348 byte for byte, nothing here would connect.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.e2e.cluster import ROOT, Cluster

NS = "demo"


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    c = module_clusters(ROOT / "configs" / "interop.yaml", "emi")
    c.ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in c.get("pods")}
    c.cips = {s["metadata"]["name"]: s["spec"]["clusterIP"] for s in c.get("services")}
    return c


def _in_node(c: Cluster, node: str, *cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", f"{c.prefix}-{node}", *cmd],
                          capture_output=True, text=True, check=True).stdout


def test_the_kernel_node_is_built_like_flannel_and_runs_no_agent(cluster):
    children = set(cluster.status()["children"])
    assert "agent-node-1" in children and "dns" in children
    assert not [c for c in children if c.endswith("node-2")]  # nothing runs for node-2
    nodes = cluster.emunet("get", "nodes").stdout
    assert re.search(r"node-2\s+Ready", nodes) and re.search(r"node-1\s+Ready", nodes)
    link = _in_node(cluster, "node-2", "ip", "-d", "link", "show", "flannel.1")
    assert "vxlan id 1 " in link and "dstport 8472" in link and "nolearning" in link
    assert "0a:59:0a:2a:02:00" in link  # naming.vtep_mac of 10.42.2.0/24
    fdb = _in_node(cluster, "node-2", "bridge", "fdb", "show", "dev", "flannel.1")
    assert "0a:59:0a:2a:01:00 dst 192.168.1.11" in fdb
    routes = _in_node(cluster, "node-2", "ip", "route")
    assert "10.42.1.0/24 via 10.42.1.0 dev flannel.1 onlink" in routes
    assert _in_node(cluster, "node-2", "sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"
    assert _in_node(cluster, "node-1", "sysctl", "-n", "net.ipv4.ip_forward").strip() == "0"
    rules = _in_node(cluster, "node-2", "nft", "list", "table", "ip", "kube-proxy")
    assert f"{cluster.cips['web-1']} . tcp . 80 : goto service-demo/web-1/tcp/80" in rules
    assert "numgen random mod 1" in rules


@pytest.mark.parametrize(("client", "server"), [("client-1", "web-2"), ("client-2", "web-1")])
def test_ping_by_pod_ip_both_ways(cluster, client, server):
    out = cluster.exec(NS, client, "ping", "-c", "2", "-i", "0.2", "-W", "2",
                       cluster.ips[server]).stdout
    assert " 0% packet loss" in out


@pytest.mark.parametrize(("client", "server"), [("client-1", "web-2"), ("client-2", "web-1")])
def test_http_by_pod_ip_both_ways(cluster, client, server):
    out = cluster.exec(NS, client, "curl", "-s", "-m", "5",
                       f"http://{cluster.ips[server]}:8080/direct").stdout
    assert f"pod={server} " in out and "path=/direct" in out


@pytest.mark.parametrize(("client", "server"), [
    ("client-1", "web-2"),  # emunet DNAT, then VXLAN into the Linux driver
    ("client-2", "web-1"),  # nftables DNAT, then flannel.1 into emunet's agent
    ("client-2", "web-2"),  # same kernel node: bridged reply un-NATed via br_netfilter
    ("web-2", "web-2"),  # hairpin: a pod through its own Service (masquerade + hairpin port)
])
def test_http_through_cluster_ips_and_dns(cluster, client, server):
    by_ip = cluster.exec(NS, client, "curl", "-s", "-m", "5",
                         f"http://{cluster.cips[server]}/svc").stdout
    assert f"pod={server} " in by_ip
    # by name: the lookup itself goes to kube-dns (the coredns pod is on the emunet node)
    by_name = cluster.exec(NS, client, "curl", "-s", "-m", "5",
                           f"http://{server}.{NS}.svc.cluster.local/named").stdout
    assert f"pod={server} " in by_name and "path=/named" in by_name


def test_dns_answers_pods_on_the_kernel_node(cluster):
    out = cluster.exec(NS, "client-2", "nslookup", "web-1").stdout
    assert "web-1.demo.svc.cluster.local" in out and cluster.cips["web-1"] in out
    tcp = cluster.exec(NS, "client-2", "dig", "+tcp", "+short",
                       "web-2.demo.svc.cluster.local").stdout
    assert tcp.strip() == cluster.cips["web-2"]


def test_service_without_endpoints_is_rejected_on_the_kernel_node(cluster, tmp_path):
    f = tmp_path / "lonely.yaml"
    f.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: lonely, namespace: demo}\n"
                 "spec:\n  selector: {app: nobody}\n  ports: [{port: 80, targetPort: 80}]\n")
    cluster.emunet("apply", "-f", str(f))
    try:
        ip = next(s["spec"]["clusterIP"] for s in cluster.get("services")
                  if s["metadata"]["name"] == "lonely")
        p = cluster.exec(NS, "client-2", "curl", "-s", "-m", "5", "-o", "/dev/null",
                         "-w", "%{time_total}", f"http://{ip}/", check=False)
        assert p.returncode == 7  # connection refused at once, as kube-proxy rejects
        assert float(p.stdout) < 2
    finally:
        cluster.emunet("delete", "-f", str(f))


@pytest.mark.parametrize(("node", "server"), [("node-2", "web-1"), ("node-1", "web-2"),
                                              ("node-2", "web-2")])
def test_node_port_from_outside_on_either_kind_of_node(cluster, tmp_path, node, server):
    """kube-proxy's NodePort on the kernel node (nftables: fib daddr type local, masquerade)
    and emunet's on its node, each reaching a backend on either kind of node."""
    port = {"web-1": 30181, "web-2": 30182}[server]
    f = tmp_path / "np.yaml"
    f.write_text(f"apiVersion: v1\nkind: Service\nmetadata: {{name: np-{server}, namespace: "
                 f"demo}}\nspec:\n  type: NodePort\n  selector: {{app: {server}}}\n"
                 f"  ports: [{{port: 80, targetPort: 8080, nodePort: {port}}}]\n")
    cluster.emunet("apply", "-f", str(f))
    try:
        ip = next(n["status"]["addresses"][0]["address"] for n in cluster.get("nodes")
                  if n["metadata"]["name"] == node)
        out = cluster.emunet("exec", "--outside", "--", "curl", "-s", "-m", "5",
                             f"http://{ip}:{port}/np", timeout=30).stdout
        assert f"pod={server} " in out and "path=/np" in out, out
    finally:
        cluster.emunet("delete", "-f", str(f))
