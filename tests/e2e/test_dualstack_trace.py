"""`emunet trace` over IPv6 end to end (issue 19): the real CLI traces from a pod of a dual-stack
cluster by name with `--family 6` (an AAAA lookup, then TCP to the Service's IPv6 ClusterIP
across nodes), to a pod's IPv6 address (ICMPv6 echo), and into a NetworkPolicy drop; every
hop is read back from the agents' records of the Traffic-Class-marked probe."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.cluster import ROOT, Cluster

NS = "blog-website"
CONFIG = ROOT / "tests" / "e2e" / "configs" / "dualstack.yaml"


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Iterator[Cluster]:
    c = module_clusters(CONFIG, "emdt")
    yield c
    c.down_clean()


def _trace(c: Cluster, pod: str, *args: str, check: bool = True) -> dict:
    r = c.emunet("trace", "-n", NS, pod, *args, "-o", "json", check=check)
    return json.loads(r.stdout)


def _steps(report: dict) -> list[str]:
    return [h["step"] for p in report["packets"] for h in p["hops"]]


def test_trace_by_name_over_ipv6_across_nodes(cluster):
    svc = next(s for s in cluster.get("services") if s["metadata"]["name"] == "monospaced")
    svc6 = svc["spec"]["clusterIPs"][1]
    rep = _trace(cluster, "frontend-client", "monospaced", "--family", "6")
    assert rep["family"] == 6 and ":" in rep["pod_ip"]
    answered = next(q for q in rep["dns"] if q["ips"])  # the search list, as glibc walks it
    assert answered["name"] == f"monospaced.{NS}.svc.cluster.local." and answered["ips"] == [svc6]
    assert rep["probe"]["dst"] == svc6 and rep["result"]["result"] == "connected"
    steps = _steps(rep)
    for step in ("send", "dnat", "encap", "decap", "deliver"):
        assert step in steps, steps
    texts = " ".join(h["text"] for p in rep["packets"] for h in p["hops"])
    assert "hop limit" in texts and "TTL" not in texts
    assert "fd00:e3e7::" in texts  # VXLAN's outer header is IPv6 (flannel-v6)
    assert any(p["reply"] for p in rep["packets"])  # the SYN-ACK came back, traced too


def test_trace_icmpv6_echo_to_a_pod_address(cluster):
    pod = next(p for p in cluster.get("pods") if p["metadata"]["name"] == "iperf")  # node-2
    ip6 = pod["status"]["podIPs"][1]["ip"]
    rep = _trace(cluster, "frontend-client", ip6)
    assert rep["family"] == 6 and rep["probe"]["protocol"] == "icmp"
    assert rep["result"]["result"] == "echo reply"
    assert any(p["reply"] for p in rep["packets"]) and "encap" in _steps(rep)


def test_trace_shows_the_policy_drop_over_ipv6(cluster):
    rep = _trace(cluster, "intruder", "monospaced", "--family", "6", "--timeout", "1",
                 check=False)
    assert rep["result"]["result"] == "timeout"
    drops = [h for p in rep["packets"] for h in p["hops"] if h["step"] == "drop"]
    assert drops and "monospaced-access" in json.dumps(drops), rep["packets"]


def test_trace_family_errors_are_input_errors(cluster):
    r = cluster.emunet("trace", "-n", NS, "frontend-client", "10.43.0.10", "--family", "6",
                       check=False)
    assert r.returncode == 2 and "IPv4 address but --family 6" in r.stderr
    r = cluster.emunet("trace", "-n", NS, "frontend-client", "[2001:cafe:43::a]x", check=False)
    assert r.returncode == 2 and "[IPv6]:PORT" in r.stderr
