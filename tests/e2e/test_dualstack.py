"""Dual-stack end to end (issue 19): the real CLI brings up a dual-stack cluster and real
clients talk IPv6 through it: ping -6, curl -6 to pods and to a Service's IPv6 ClusterIP by
name, dig AAAA and -x, getent, NetworkPolicy by podSelector and by IPv6 ipBlock, VXLAN over
IPv6 on the underlay (tcpdump, tshark), iperf3 -6 across nodes, kubectl; `emunet down` leaves
nothing (the fixture's down_clean)."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.e2e.cluster import ROOT, Cluster
from tests.e2e.test_kubectl import make_kubectl
from tests.waiting import Output

NS = "blog-website"
CONFIG = ROOT / "tests" / "e2e" / "configs" / "dualstack.yaml"


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Iterator[Cluster]:
    c = module_clusters(CONFIG, "emds")
    pods = {p["metadata"]["name"]: p for p in c.get("pods")}
    c.ip4 = {n: p["status"]["podIPs"][0]["ip"] for n, p in pods.items()}  # type: ignore[attr-defined]
    c.ip6 = {n: p["status"]["podIPs"][1]["ip"] for n, p in pods.items()}  # type: ignore[attr-defined]
    svc = next(s for s in c.get("services") if s["metadata"]["name"] == "monospaced")
    c.svc6 = svc["spec"]["clusterIPs"][1]  # type: ignore[attr-defined]
    yield c
    c.down_clean()  # `emunet down` leaves no namespace, /etc/netns entry or run dir


def _ns(c: Cluster, name: str, *cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", f"{c.prefix}-{name}", *cmd],
                          capture_output=True, text=True, check=True, timeout=30).stdout


def test_pods_and_nodes_have_both_families(cluster):
    nodes = {n["metadata"]["name"]: n for n in cluster.get("nodes")}
    for p in cluster.get("pods"):
        v4, v6 = (ipaddress.ip_address(a["ip"]) for a in p["status"]["podIPs"])
        assert (v4.version, v6.version) == (4, 6) and p["status"]["podIP"] == str(v4)
        assert v6 in ipaddress.ip_network(nodes[p["spec"]["nodeName"]]["spec"]["podCIDRs"][1])
    eth0 = _ns(cluster, f"{NS}-frontend-client", "ip", "-6", "addr", "show", "eth0")
    assert f"inet6 {cluster.ip6['frontend-client']}/64 scope global nodad" in eth0
    assert "mtu 1450" in eth0  # the pod MTU is what it is on IPv4-only clusters
    route = _ns(cluster, f"{NS}-frontend-client", "ip", "-6", "route", "show", "default")
    assert route.startswith("default via 2001:cafe:42:1::1 dev eth0")
    under = _ns(cluster, "node-1", "ip", "-6", "addr", "show", "eth0")
    assert "inet6 fd00:e3e7::b/64 scope global nodad" in under
    assert "mtu 1520" in under  # room for VXLAN over an IPv6 outer header
    for key in ("net.ipv6.conf.all.forwarding", "net.ipv4.ip_forward"):
        assert _ns(cluster, "node-1", "sysctl", "-n", key).strip() == "0"  # the agent forwards


@pytest.mark.parametrize(("src", "dst"), [("frontend-client", "intruder"),  # same node
                                          ("monospaced-test", "frontend-client"),  # 2 -> 1
                                          ("frontend-client", "iperf")])  # 1 -> 2
def test_ping6_same_node_and_across(cluster, src, dst):
    r = cluster.exec(NS, src, "ping", "-6", "-c", "2", "-W", "3", cluster.ip6[dst])
    assert " 0% packet loss" in r.stdout, r.stdout


def test_curl6_to_a_pod_and_to_the_services_ipv6_cluster_ip(cluster):
    me, there = cluster.ip6["frontend-client"], cluster.ip6["monospaced-test"]
    pod = cluster.exec(NS, "frontend-client", "curl", "-s", "-6", "-m", "5",
                       f"http://[{there}]:3000/").stdout
    assert f"ip6={there} node=node-2" in pod
    by_ip = cluster.exec(NS, "frontend-client", "curl", "-s", "-6", "-m", "5",
                         f"http://[{cluster.svc6}]/").stdout
    by_name = cluster.exec(NS, "frontend-client", "curl", "-s", "-6", "-m", "5",
                           "http://monospaced/").stdout  # AAAA through CoreDNS, then DNAT
    assert f"ip6={there}" in by_ip and f"ip6={there}" in by_name
    by_v4 = cluster.exec(NS, "frontend-client", "curl", "-s", "-4", "-m", "5",
                         "http://monospaced/").stdout  # the same Service over IPv4
    assert f"ip={cluster.ip4['monospaced-test']} " in by_v4
    logs = cluster.emunet("logs", "-n", NS, "monospaced-test").stdout
    assert f'{me} - - [' in logs  # the server saw the client's own IPv6 address (no SNAT)


def test_dns_aaaa_ptr_and_getent(cluster):
    name = f"monospaced.{NS}.svc.cluster.local"
    aaaa = cluster.exec(NS, "frontend-client", "dig", "+short", name, "AAAA").stdout.split()
    assert aaaa == [cluster.svc6]
    ptr = cluster.exec(NS, "frontend-client", "dig", "+short", "-x", cluster.svc6).stdout
    assert ptr.split() == [name + "."]
    # kube-dns's IPv6 ClusterIP answers too (DNAT to CoreDNS listening on [::]:53)
    over6 = cluster.exec(NS, "frontend-client", "dig", "+short", "@2001:cafe:43::a", name,
                         "AAAA").stdout.split()
    assert over6 == [cluster.svc6]
    v6 = cluster.exec(NS, "frontend-client", "getent", "ahostsv6", "monospaced").stdout
    assert v6.split()[0] == cluster.svc6
    both = {line.split()[0] for line in
            cluster.exec(NS, "frontend-client", "getent", "ahosts", "monospaced").stdout
            .splitlines()}
    assert both == {cluster.svc6, "10.43.0.11"}


def test_network_policy_by_pod_selector_holds_over_ipv6(cluster):
    ok = cluster.exec(NS, "frontend-client", "curl", "-s", "-6", "-m", "5",
                      "http://monospaced/", check=False)
    denied = cluster.exec(NS, "intruder", "curl", "-s", "-6", "-m", "3", "http://monospaced/",
                          check=False)
    assert ok.returncode == 0 and denied.returncode == 28, (ok, denied)  # 28: timed out
    flows = cluster.emunet("observe", "-n", NS, "--from-pod", "intruder", "--verdict",
                           "DROPPED", "-o", "json").stdout.splitlines()
    assert any(json.loads(f)["flow"]["IP"].get("ipVersion") == "IPv6" for f in flows), flows


def test_network_policy_ipv6_ip_block_truth_table(cluster):
    net1 = ipaddress.ip_network(f"{cluster.ip6['frontend-client']}/64", strict=False)
    policy = f"""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: guarded-v6, namespace: {NS}}}
spec:
  podSelector: {{matchLabels: {{app: guarded}}}}
  policyTypes: [Ingress]
  ingress:
    - from:
        - ipBlock:
            cidr: {net1}
            except: [{cluster.ip6['intruder']}/128]
      ports: [{{protocol: TCP, port: 3000}}]
"""
    path = cluster.tmp / "guarded-v6.yaml"
    path.write_text(policy)
    cluster.emunet("apply", "-f", str(path))
    target6 = f"http://[{cluster.ip6['guarded']}]:3000/"

    def reach(pod: str, url: str) -> bool:
        return cluster.exec(NS, pod, "curl", "-s", "-m", "3", url, check=False).returncode == 0
    try:
        assert reach("frontend-client", target6)  # inside the /64, not excepted
        assert not reach("intruder", target6)  # the except
        assert not reach("monospaced-test", target6)  # node-2's /64: outside the cidr
        # an IPv6 ipBlock opens nothing for IPv4: the pod is isolated for ingress there
        assert not reach("frontend-client", f"http://{cluster.ip4['guarded']}:3000/")
    finally:
        cluster.emunet("delete", "-f", str(path))
    assert reach("intruder", target6)  # the policy gone, the pod is open again


def test_underlay_carries_vxlan_over_ipv6(cluster):
    netns = f"{cluster.prefix}-node-1"
    dump = subprocess.Popen(["ip", "netns", "exec", netns, "tcpdump", "-nli", "eth0", "-c", "2",
                             "-T", "vxlan", "ip6 and udp port 8472"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        Output(dump.stderr).wait("listening on", 10, "tcpdump to listen on node-1's eth0")
        cluster.exec(NS, "frontend-client", "ping", "-6", "-c", "1", "-W", "3",
                     cluster.ip6["iperf"])
        out, _ = dump.communicate(timeout=10)
    finally:
        dump.kill()
    assert "fd00:e3e7::b." in out and "fd00:e3e7::c.8472: VXLAN" in out, out  # outer IPv6
    assert f"IP6 {cluster.ip6['frontend-client']} > {cluster.ip6['iperf']}: ICMP6" in out, out
    if shutil.which("tshark") is None:
        return
    shark = subprocess.Popen(["ip", "netns", "exec", netns, "tshark", "-l", "-n", "-i", "eth0",
                              "-c", "1", "-f", "ip6 and udp dst port 8472",
                              "-d", "udp.port==8472,vxlan", "-T", "fields", "-e", "ipv6.dst",
                              "-e", "vxlan.vni", "-e", "icmpv6.type"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        Output(shark.stderr).wait("Capturing on", 20, "tshark to capture on node-1's eth0")
        cluster.exec(NS, "frontend-client", "ping", "-6", "-c", "1", "-W", "3",
                     cluster.ip6["iperf"])
        out, _ = shark.communicate(timeout=20)
    finally:
        shark.kill()
    fields = out.split()
    assert fields[0].split(",") == ["fd00:e3e7::c", cluster.ip6["iperf"]], out  # outer, inner
    assert fields[1:] == ["1", "128"], out  # VNI 1, an ICMPv6 echo request


def test_an_applied_pod_and_a_restarted_agent_get_ipv6_too(cluster):
    path = cluster.tmp / "late.yaml"
    path.write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: late, namespace: {NS}}}\n"
                    "spec:\n  nodeName: node-1\n  containers:\n    - name: web\n"
                    "      image: nginx\n      ports: [{containerPort: 8080}]\n")
    cluster.emunet("apply", "-f", str(path))
    try:
        cluster.wait_ready()
        ip6 = cluster.pod(NS, "late")["status"]["podIPs"][1]["ip"]
        page = cluster.exec(NS, "iperf", "curl", "-s", "-6", "-m", "5",
                            f"http://[{ip6}]:8080/").stdout  # node-2 -> the new pod
        assert f"pod=late namespace={NS} " in page and f"ip6={ip6} " in page
    finally:
        cluster.emunet("delete", "-f", str(path))
    cluster.emunet("node", "stop", "node-1")
    cluster.emunet("node", "start", "node-1")  # a new agent binds flannel-v6's socket again
    cluster.wait_ready()
    r = cluster.exec(NS, "iperf", "ping", "-6", "-c", "2", "-W", "3",
                     cluster.ip6["frontend-client"])
    assert " 0% packet loss" in r.stdout, r.stdout


def test_trace_over_ipv6_shows_the_journey(cluster):
    r = cluster.emunet("trace", "-n", NS, "frontend-client", "monospaced", "--family", "6",
                       "-o", "json")
    report = json.loads(r.stdout)
    assert report["result"]["result"] == "connected", report["result"]
    assert report["dns"][0]["ips"] == [cluster.svc6]  # AAAA, asked over the IPv4 nameserver
    texts = [h["text"] for p in report["packets"] for h in p["hops"]]
    assert any(f"DNAT [{cluster.svc6}]:80 -> backend [{cluster.ip6['monospaced-test']}]:3000"
               in t for t in texts), texts
    assert any("outer IP fd00:e3e7::b -> fd00:e3e7::c, UDP port 8472" in t for t in texts)
    assert any("hop limit 63 -> 62" in t for t in texts)
    denied = cluster.emunet("trace", "-n", NS, "intruder", f"[{cluster.svc6}]:80",
                            check=False)
    assert denied.returncode == 1 and "POLICY_DENIED" in denied.stdout, denied.stdout


def test_trace_icmpv6_echo_to_a_pod_and_family_errors(cluster):
    rep = json.loads(cluster.emunet("trace", "-n", NS, "frontend-client", cluster.ip6["iperf"],
                                    "-o", "json").stdout)  # the iperf pod is on node-2
    assert rep["probe"]["protocol"] == "icmp" and rep["result"]["result"] == "echo reply"
    steps = [h["step"] for p in rep["packets"] for h in p["hops"]]
    assert any(p["reply"] for p in rep["packets"]) and "encap" in steps and "decap" in steps
    r = cluster.emunet("trace", "-n", NS, "frontend-client", "10.43.0.10", "--family", "6",
                       check=False)
    assert r.returncode == 2 and "IPv4 address but --family 6" in r.stderr
    r = cluster.emunet("trace", "-n", NS, "frontend-client", "[2001:cafe:43::a]x", check=False)
    assert r.returncode == 2 and "[IPv6]:PORT" in r.stderr


def _iperf(cluster: Cluster, *args: str) -> float:
    r = cluster.exec(NS, "frontend-client", "iperf3", *args, "-p", "5201", "-t", "3", "-J",
                     timeout=40)
    end = json.loads(r.stdout)["end"]
    assert end["sum_received"]["bytes"] > 1 << 20, end  # it moved data, not just connected
    return end["sum_received"]["bits_per_second"] / 1e6


def test_iperf3_over_ipv6_across_nodes(cluster):
    before = cluster.counters_after(time.time(), "node-1", "node-2")
    v6 = _iperf(cluster, "-6", "-c", cluster.ip6["iperf"])
    after = cluster.counters_after(time.time(), "node-1", "node-2")
    v4 = _iperf(cluster, "-c", cluster.ip4["iperf"])
    print(f"\niperf3 node-1 -> node-2, same run: IPv6 {v6:.0f} Mbit/s, IPv4 {v4:.0f} Mbit/s")
    # the offloads carried the IPv6 run: TSO super-frames from the client's veth taken whole
    # and cut into VXLAN datagrams on node-1, GRO merging them again on node-2
    one = {k: after["node-1"][k] - before["node-1"][k] for k in ("gso_rx", "gso_segments")}
    assert one["gso_rx"] > 0 and one["gso_segments"] > one["gso_rx"], one
    assert after["node-2"]["gro_merged"] > before["node-2"]["gro_merged"]
    assert after["node-1"]["gso_dropped"] == before["node-1"]["gso_dropped"]


def test_kubectl_shows_both_families(cluster, tmp_path):
    kubectl = make_kubectl(cluster, tmp_path)
    ips = kubectl("get", "pod", "-n", NS, "frontend-client", "-o",
                  "jsonpath={.status.podIPs[*].ip}").stdout.split()
    assert ips == [cluster.ip4["frontend-client"], cluster.ip6["frontend-client"]]
    wide = kubectl("get", "pods", "-n", NS, "-o", "wide").stdout
    assert cluster.ip4["frontend-client"] in wide  # kubectl's IP column: the primary family
    svc = json.loads(kubectl("get", "svc", "-n", NS, "monospaced", "-o", "json").stdout)
    assert svc["spec"]["clusterIPs"] == ["10.43.0.11", cluster.svc6]
    assert svc["spec"]["ipFamilies"] == ["IPv4", "IPv6"]
    assert svc["spec"]["ipFamilyPolicy"] == "PreferDualStack"
    slices = kubectl("get", "endpointslices", "-n", NS, "-l",
                     "kubernetes.io/service-name=monospaced").stdout
    assert " IPv4 " in slices and " IPv6 " in slices, slices
    assert cluster.ip6["monospaced-test"] in slices
