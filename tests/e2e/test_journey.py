"""The story, end to end, as a user runs it: the real CLI, real namespaces, real clients."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from emunet import native
from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import Output, wait_for

NS = "blog-website"


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Iterator[Cluster]:
    c = module_clusters(ROOT / "configs" / "two-node.yaml", "emj")
    pids = [ch["pid"] for ch in c.status()["children"].values()]
    yield c
    c.down_clean()  # here, not in the factory: the processes must be gone after it
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"process {pid} left"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


def test_up_reports_pods_and_next_steps(cluster):
    out = cluster.up_output
    assert "is up" in out
    assert "frontend-client" in out and "monospaced-test" in out
    assert "NetworkPolicy" not in out  # enforced now: nothing to warn about
    assert "emunet exec -n blog-website" in out


def test_pods_get_ips_from_their_node_subnet(cluster):
    nodes = {n["metadata"]["name"]: n["spec"]["podCIDR"] for n in cluster.get("nodes")}
    assert nodes == {"node-1": "10.42.1.0/24", "node-2": "10.42.2.0/24"}
    pods = cluster.get("pods")
    names = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods}
    assert {(NS, "frontend-client"), (NS, "monospaced-test"), (NS, "intruder")} <= names
    assert any(ns == "kube-system" and n.startswith("coredns-") for ns, n in names)
    for p in pods:
        net = ipaddress.ip_network(nodes[p["spec"]["nodeName"]])
        assert ipaddress.ip_address(p["status"]["podIP"]) in net
        assert p["status"]["phase"] == "Running"
    assert cluster.pod(NS, "monospaced-test")["spec"]["nodeName"] == "node-2"
    wide = cluster.emunet("get", "pods", "-A", "-o", "wide").stdout
    assert "NETNS" in wide and f"{cluster.prefix}-{NS}-frontend-client" in wide


def test_nslookup_answers_the_cluster_ip(cluster):
    svc = next(s for s in cluster.get("services") if s["metadata"]["name"] == "monospaced")
    ip = svc["spec"]["clusterIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.43.0.0/16")
    out = cluster.exec(NS, "frontend-client", "nslookup", "monospaced").stdout
    assert "monospaced.blog-website.svc.cluster.local" in out
    assert ip in out
    out = cluster.exec(NS, "frontend-client", "getent", "hosts", "monospaced").stdout
    assert out.split()[0] == ip


def test_curl_by_service_name_crosses_nodes(cluster):
    out = cluster.exec(NS, "frontend-client", "curl", "-sS", "--max-time", "5",
                       "http://monospaced").stdout
    assert "monospaced-test" in out and "node=node-2" in out


def test_status_and_doctor_say_which_datapath_build_forwards(cluster):
    """Each agent runs the build emunet.native picks for this tree (compiled by scripts/setup,
    or the pure Python fallback) and says so; doctor names the same one."""
    want = native.decision()[1]

    def reported() -> list[str]:
        lines = cluster.emunet("status").stdout.splitlines()
        heads = [ln for ln in lines if ln.startswith("node ") and ": agent pid" in ln]
        return heads if len(heads) == 2 and all(f"datapath {want}" in h for h in heads) else []
    wait_for(reported, 10, f"status to show both agents on datapath {want!r}")
    doctor = cluster.emunet("doctor", check=False).stdout
    assert f"datapath: {want}" in doctor


def test_plain_ip_netns_exec_works(cluster):
    netns = f"{cluster.prefix}-{NS}-frontend-client"
    out = subprocess.run(["ip", "netns", "exec", netns, "curl", "-sS", "--max-time", "5",
                          "http://monospaced.blog-website"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert "monospaced-test" in out.stdout


def test_ping_pod_on_other_node(cluster):
    # monospaced-test (node-2) pings frontend-client (node-1): the story's policy isolates
    # monospaced for ingress on TCP 3000 only, so pings *to* it are (rightly) dropped.
    ip = cluster.pod(NS, "frontend-client")["status"]["podIP"]
    out = cluster.exec(NS, "monospaced-test", "ping", "-c", "1", "-W", "2", ip)
    assert "1 received" in out.stdout


def test_story_network_policy_lets_only_the_frontend_in(cluster):
    """Step 6: only app=frontend-client may reach monospaced on 3000 (through the Service:
    policy sees the post-DNAT pod IP and targetPort); the intruder's curl times out."""
    ok = cluster.exec(NS, "frontend-client", "curl", "-sS", "--max-time", "5",
                      "http://monospaced")
    assert "monospaced-test" in ok.stdout
    t0 = time.monotonic()
    no = cluster.exec(NS, "intruder", "curl", "-sS", "--max-time", "2", "http://monospaced",
                      check=False)
    assert no.returncode == 28, no.stderr  # curl: operation timed out (a silent drop)
    assert time.monotonic() - t0 >= 1.5
    ip = cluster.pod(NS, "monospaced-test")["status"]["podIP"]
    ping = cluster.exec(NS, "frontend-client", "ping", "-c", "1", "-W", "1", ip, check=False)
    assert ping.returncode != 0  # the policy's only port is TCP 3000: ICMP is not allowed


def test_exec_passes_exit_status_through(cluster):
    p = cluster.exec(NS, "frontend-client", "sh", "-c", "exit 7", check=False)
    assert p.returncode == 7


def test_node_namespaces_do_not_forward(cluster):
    for node in ("node-1", "node-2"):
        netns = f"{cluster.prefix}-{node}"
        fwd = subprocess.run(["ip", "netns", "exec", netns, "cat",
                              "/proc/sys/net/ipv4/ip_forward"], capture_output=True, text=True)
        assert fwd.stdout.strip() == "0"
        for tool in (["nft", "list", "ruleset"], ["iptables-save"]):
            r = subprocess.run(["ip", "netns", "exec", netns, *tool], capture_output=True,
                               text=True)
            if r.returncode == 0:  # tool installed: there must be no rules at all
                rules = [ln for ln in r.stdout.splitlines() if ln.startswith("-A")
                         or ln.strip().startswith(("ip ", "meta ", "ct "))]
                assert not rules, rules


def test_underlay_carries_vxlan_tcpdump_decodes(cluster):
    netns = f"{cluster.prefix}-node-1"
    # tcpdump reads UDP 8472 as OTV by default; -T vxlan decodes it as Flannel's VXLAN.
    dump = subprocess.Popen(["ip", "netns", "exec", netns, "tcpdump", "-nli", "eth0",
                             "-T", "vxlan", "-c", "2", "udp", "port", "8472"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # tcpdump says "listening on" once its filter is set on the socket: from then on
        # it sees every packet (it prints that on stderr, the packets on stdout)
        Output(dump.stderr).wait("listening on", 10, "tcpdump to listen on node-1's eth0")
        cluster.exec(NS, "frontend-client", "curl", "-s", "--max-time", "5",
                     "http://monospaced")
        out, _ = dump.communicate(timeout=10)
    finally:
        if dump.poll() is None:
            dump.kill()
    assert "VXLAN" in out and "vni 1" in out
    assert "10.42.1." in out and "10.42.2." in out  # inner pod IPs, decoded by tcpdump


def _agent_pids(cluster) -> list[int]:
    return [c["pid"] for name, c in cluster.status()["children"].items()
            if name.startswith("agent-")]


def test_stopping_the_agents_stops_pod_traffic(cluster):
    """The kernel never forwards pod traffic: freeze the agents and the same curl fails."""
    ip = cluster.pod(NS, "monospaced-test")["status"]["podIP"]
    pids = _agent_pids(cluster)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        p = cluster.exec(NS, "frontend-client", "curl", "-s", "--max-time", "2",
                         f"http://{ip}:3000", check=False)
        assert p.returncode != 0
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    out = cluster.exec(NS, "frontend-client", "curl", "-sS", "--max-time", "5",
                       "http://monospaced").stdout
    assert "monospaced-test" in out


def test_killed_agent_is_restarted(cluster):
    before = _agent_pids(cluster)
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    def restarted() -> bool:
        # alive is not enough: a restarted agent forwards once it has loaded the state
        # (status "behind" names it until then; the stamp of the killed one is cleared)
        st = cluster.status()
        return all(c["alive"] for c in st["children"].values()) and not st["behind"] and set(
            _agent_pids(cluster)).isdisjoint(before)
    wait_for(restarted, 15, "the killed agents' restart")
    out = cluster.exec(NS, "frontend-client", "curl", "-sS", "--max-time", "5",
                       "http://monospaced", timeout=30).stdout
    assert "monospaced-test" in out


def test_second_up_is_refused(cluster):
    p = cluster.emunet("up", cluster.config, check=False)
    assert p.returncode != 0
    assert "emunet down" in p.stderr
    assert "Traceback" not in p.stderr
