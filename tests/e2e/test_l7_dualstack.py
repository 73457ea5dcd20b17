"""CiliumNetworkPolicy HTTP rules over IPv6 end to end (issue 19): story step 7's cluster
(test_l7.py) made dual-stack the k3s way, its Service PreferDualStack; curl -6 by the Service
name (AAAA, the IPv6 ClusterIP, DNAT) is redirected to the node's L7 proxy on its IPv6 listener
and decided by the client's identity, as over IPv4."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from emunet.l7.httplog import read_events
from tests.e2e.cluster import ROOT, Cluster

NS = "blog-website"
URL = "http://monospaced"
DUAL = ("  clusterCIDR: 10.42.0.0/16,2001:cafe:42::/56\n"
        "  serviceCIDR: 10.43.0.0/16,2001:cafe:43::/112\n")


@pytest.fixture(scope="module")
def cluster(module_clusters, tmp_path_factory) -> Iterator[Cluster]:
    text, n = re.subn(r"(kind: Cluster\nmetadata:\n  name: l7\nspec:\n)",
                      lambda m: m.group(1) + DUAL,
                      (ROOT / "tests" / "e2e" / "configs" / "l7.yaml").read_text())
    text, m = re.subn(r"(  name: monospaced\n  namespace: blog-website\nspec:\n)",
                      lambda m: m.group(1) + "  ipFamilyPolicy: PreferDualStack\n", text)
    assert n == 1 and m == 1  # the Service gets both ClusterIPs (AAAA for curl -6)
    cfg = tmp_path_factory.mktemp("l7ds") / "l7-dualstack.yaml"
    cfg.write_text(text)
    yield module_clusters(cfg, "eml76")


def _curl(c: Cluster, pod: str, *args: str) -> tuple[int, str]:
    p = c.exec(NS, pod, "curl", "-s", "--max-time", "3", *args, check=False, timeout=15)
    return p.returncode, p.stdout


def test_up_waits_for_a_listener_per_family(cluster) -> None:
    assert "L7 proxies listening: 2 redirected port(s) on 1 node(s)" in cluster.up_output


def test_allowed_path_over_ipv6_and_ipv4(cluster) -> None:
    for fam in ("-6", "-4"):
        rc, out = _curl(cluster, "frontend-client", fam, f"{URL}/api/posts")
        assert rc == 0 and "Hello from monospaced-test" in out and "path=/api/posts" in out


def test_denied_path_over_ipv6_gets_ciliums_403(cluster) -> None:
    rc, out = _curl(cluster, "frontend-client", "-6", "-i", f"{URL}/admin")
    assert rc == 0 and out.split("\n")[0] == "HTTP/1.1 403 Forbidden"
    assert out.endswith("\n\nAccess denied\n")


def test_other_pod_over_ipv6_is_dropped_at_l3l4(cluster) -> None:
    rc, out = _curl(cluster, "intruder", "-6", f"{URL}/api/posts")
    assert rc == 28 and out == "", (rc, out)  # timed out: no RST, no 403


def test_ipv6_requests_are_l7_events_with_the_clients_identity(cluster) -> None:
    events = read_events(Path(cluster.run_dir) / "l7-node-2.jsonl")
    six = [e for e in events if ":" in e["src"]["ip"]]
    seen = {(e["method"], e["path"], e["status"], e["verdict"]) for e in six}
    assert {("GET", "/api/posts", 200, "FORWARDED"), ("GET", "/admin", 403, "DENIED")} <= seen
    ok = next(e for e in six if e["status"] == 200)
    assert ok["src"]["pod"] == f"{NS}/frontend-client"
    assert ok["dst"]["pod"] == f"{NS}/monospaced-test" and ":" in ok["dst"]["ip"]
