"""The story's walkthrough: "The journey of a packet", step by step, through the real CLI.

Like Mininet's walkthrough test, this replays what a reader types, in the story's order, on
one cluster (`configs/two-node.yaml`): pods and their IPs (step 1), the Service and its
endpoints (2), nslookup through CoreDNS (3), a trace showing the DNAT and the veth pair (4),
VXLAN on the underlay during a curl (5), the story's NetworkPolicy with `observe` naming it (6),
a CiliumNetworkPolicy with its 200/403 and the L7 flow (7), and `down` leaving nothing. The
tests run in file order and each builds on the cluster the previous ones left; other e2e
modules test each step in depth, this one is the story's table of contents.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import Output, wait_for

NS = "blog-website"
# Step 7's policy, as tests/e2e/configs/l7.yaml writes it (its last document)
CNP = (ROOT / "tests" / "e2e" / "configs" / "l7.yaml").read_text().split("---")[-1]


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    """The story's cluster; its last test runs `down` itself (the factory's down_clean after
    it finds nothing left to remove)."""
    c = module_clusters(ROOT / "configs" / "two-node.yaml", "emw")
    c.pids = [ch["pid"] for ch in c.status()["children"].values()]
    c.ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in c.get("pods")
             if p["metadata"]["namespace"] == NS}
    c.cluster_ip = next(s["spec"]["clusterIP"] for s in c.get("services")
                        if s["metadata"]["name"] == "monospaced")
    return c


def _curl(c: Cluster, pod: str, *args: str) -> subprocess.CompletedProcess:
    return c.exec(NS, pod, "curl", "-s", *args, check=False, timeout=20)


def test_step1_pods_get_ips_from_their_nodes_subnets(cluster):
    out = cluster.emunet("get", "pods", "-n", NS, "-o", "wide").stdout
    assert "monospaced-test" in out and "frontend-client" in out and "intruder" in out
    subnets = {n["metadata"]["name"]: ipaddress.ip_network(n["spec"]["podCIDR"])
               for n in cluster.get("nodes")}
    pods = {p["metadata"]["name"]: p for p in cluster.get("pods")
            if p["metadata"]["namespace"] == NS}
    for p in pods.values():
        ip = ipaddress.ip_address(p["status"]["podIP"])
        assert ip in subnets[p["spec"]["nodeName"]] and p["status"]["phase"] == "Running"
        assert p["status"]["podIP"] in out
    assert pods["monospaced-test"]["spec"]["nodeName"] == "node-2"
    assert pods["frontend-client"]["spec"]["nodeName"] == "node-1"


def test_step2_service_has_a_stable_ip_and_endpoints_on_the_target_port(cluster):
    svc = next(s for s in cluster.get("services") if s["metadata"]["name"] == "monospaced")
    assert ipaddress.ip_address(cluster.cluster_ip) in ipaddress.ip_network("10.43.0.0/16")
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(80, 3000)]
    assert cluster.cluster_ip in cluster.emunet("get", "services", "-n", NS).stdout
    eps = cluster.emunet("get", "endpoints", "-n", NS).stdout
    assert f"{cluster.ips['monospaced-test']}:3000" in eps  # pod IP and targetPort, not :80


def test_step3_nslookup_answers_the_cluster_ip(cluster):
    out = cluster.exec(NS, "frontend-client", "nslookup", "monospaced").stdout
    assert "10.43.0.10" in out  # asked the kube-dns Service
    assert "monospaced.blog-website.svc.cluster.local" in out and cluster.cluster_ip in out


def test_step4_trace_shows_the_dnat_and_the_veth_pair(cluster):
    out = cluster.emunet("trace", "-n", NS, "frontend-client", "monospaced").stdout
    client, server = cluster.ips["frontend-client"], cluster.ips["monospaced-test"]
    veth = "veth" + "".join(f"{int(b):02x}" for b in client.split("."))
    assert f"comes out of its veth peer {veth} in node-1's namespace" in out, out
    assert f"DNAT {cluster.cluster_ip}:80 -> backend {server}:3000" in out, out
    assert f"reverse NAT: source {server}:3000 -> {cluster.cluster_ip}:80" in out, out
    assert "result: connected" in out
    links = subprocess.run(["ip", "-n", f"{cluster.prefix}-node-1", "-o", "link", "show",
                            veth], capture_output=True, text=True)
    assert links.returncode == 0 and "link-netns" in links.stdout  # its peer is in the pod


def test_step5_curl_crosses_nodes_in_vxlan_on_the_underlay(cluster):
    dump = subprocess.Popen(["ip", "netns", "exec", f"{cluster.prefix}-node-1", "tcpdump",
                             "-nli", "eth0", "-T", "vxlan", "-c", "2", "udp", "port", "8472"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # tcpdump says "listening on" (stderr) once its filter is on the socket
        Output(dump.stderr).wait("listening on", 10, "tcpdump to listen on node-1's eth0")
        out = _curl(cluster, "frontend-client", "-m", "5", "http://monospaced").stdout
        dumped, _ = dump.communicate(timeout=10)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait()
    assert "Hello from monospaced-test" in out and "node=node-2" in out
    assert "192.168.1.11" in dumped and "192.168.1.12" in dumped  # outer: the node IPs
    assert "VXLAN" in dumped and "vni 1" in dumped
    assert cluster.ips["frontend-client"] in dumped and cluster.ips["monospaced-test"] in dumped


def test_step6_the_story_policy_lets_only_the_frontend_in(cluster):
    assert "Hello from monospaced-test" in _curl(cluster, "frontend-client", "-m", "5",
                                                  "http://monospaced").stdout
    no = _curl(cluster, "intruder", "-m", "2", "http://monospaced")
    assert no.returncode == 28  # curl: timed out, the SYN was dropped silently
    out = cluster.emunet("observe", "-n", NS, "--verdict", "DROPPED", "-o", "json",
                         "--last", "50").stdout
    flows = [json.loads(line)["flow"] for line in out.splitlines()]
    denied = [f for f in flows if f["source"].get("pod_name") == "intruder"]
    assert denied, out
    assert {r["name"] for f in denied for r in f.get("ingress_denied_by", [])} == \
        {"monospaced-access"}


def test_step7_cilium_l7_rule_allows_api_and_denies_the_rest(cluster):
    """The upgrade: the L3/L4 policy makes way for the L7 one. (Kept side by side, the
    NetworkPolicy's allow-all on port 3000 would let every path through, as in Cilium, where
    policies only ever add what they allow.)"""
    out = cluster.emunet("delete", "networkpolicy", "monospaced-access", "-n", NS).stdout
    assert "monospaced-access deleted" in out
    (cluster.tmp / "cnp.yaml").write_text(CNP)
    out = cluster.emunet("apply", "-f", str(cluster.tmp / "cnp.yaml")).stdout
    assert "ciliumnetworkpolicy.cilium.io/monospaced-api created" in out
    wait_for(lambda: _curl(cluster, "frontend-client", "-m", "3", "http://monospaced/admin")
             .stdout == "Access denied\n", 10, "the L7 rule to take effect")
    ok = _curl(cluster, "frontend-client", "-m", "3", "-w", " %{http_code}",
               "http://monospaced/api/posts").stdout
    assert ok.endswith(" 200") and "path=/api/posts" in ok
    no = _curl(cluster, "frontend-client", "-m", "3", "-w", " %{http_code}",
               "http://monospaced/admin").stdout
    assert no == "Access denied\n 403"
    assert _curl(cluster, "intruder", "-m", "2", "http://monospaced/api/posts").returncode == 28

    denied = "http-response DROPPED (HTTP/1.1 403 GET /admin)"
    allowed = "HTTP/1.1 200 GET /api/posts)  [ingress allowed by blog-website/monospaced-api]"

    def http_flows() -> str:
        return cluster.emunet("observe", "-n", NS, "--protocol", "http", "--last", "20").stdout

    def both_shown() -> bool:
        shown = http_flows()
        return denied in shown and allowed in shown
    # the proxy's decisions reach its event log a moment after the answers: wait for both
    wait_for(both_shown, 5, "the proxy's 403 and 200 in `observe`")
    out = http_flows()
    assert denied in out, out
    assert allowed in out, out


def test_the_end_down_leaves_nothing(cluster):
    down = cluster.emunet("down")
    assert "removed" in down.stdout
    assert not cluster.netns(), "namespaces left after down"
    assert not any(Path("/etc/netns").glob(cluster.prefix + "-*")), "/etc/netns entries left"
    assert not cluster.run_dir.exists(), "run dir left after down"
    left = [pid for pid in cluster.pids if _alive(pid)]
    assert not left, f"processes left after down: {left}"


def _alive(pid: int) -> bool:
    """A process that still runs (a zombie waiting for its parent's wait() does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False
