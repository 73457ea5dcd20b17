"""Story step 7 end to end: a CiliumNetworkPolicy with HTTP rules, enforced by the per-node L7
proxy the datapath redirects to. Real CLI, real curl from inside the pods, across nodes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from emunet.l7.httplog import read_events
from tests.e2e.cluster import ROOT, Cluster

NS = "blog-website"
URL = "http://monospaced"


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    return module_clusters(ROOT / "tests" / "e2e" / "configs" / "l7.yaml", "eml7")


def _curl(c: Cluster, pod: str, *args: str) -> tuple[int, str]:
    p = c.exec(NS, pod, "curl", "-s", "--max-time", "3", *args, check=False, timeout=15)
    return p.returncode, p.stdout


def test_up_returns_with_the_proxy_listening(cluster) -> None:
    """`up` waits for the proxies' listeners (emunet.l7.listeners): the very first request
    after it, redirected to the proxy, is answered (before, the pod refused it)."""
    assert "L7 proxies listening: 1 redirected port(s) on 1 node(s)" in cluster.up_output
    rc, out = _curl(cluster, "frontend-client", "-o", "/dev/null", "-w", "%{http_code}",
                    f"{URL}/api/ready")
    assert (rc, out) == (0, "200")


def test_policy_is_enforced_not_warned(cluster) -> None:
    assert "CiliumNetworkPolicy" not in cluster.up_output
    children = cluster.status()["children"]
    # a proxy only where a pod is selected by an L7 rule: monospaced-test is on node-2
    assert children["l7proxy-node-2"]["alive"] and "l7proxy-node-1" not in children


def test_allowed_path_reaches_the_pod(cluster) -> None:
    rc, out = _curl(cluster, "frontend-client", f"{URL}/api/posts")
    assert rc == 0 and "Hello from monospaced-test" in out and "path=/api/posts" in out


def test_denied_path_gets_ciliums_403(cluster) -> None:
    rc, out = _curl(cluster, "frontend-client", "-i", f"{URL}/admin")
    assert rc == 0
    head, _, body = out.partition("\n\n")  # text mode: CRLF reads as \n
    lines = head.split("\n")
    assert lines[0] == "HTTP/1.1 403 Forbidden"
    assert {"content-length: 15", "content-type: text/plain", "server: envoy"} <= set(lines)
    assert body == "Access denied\n"


def test_denied_method_gets_403(cluster) -> None:
    rc, out = _curl(cluster, "frontend-client", "-X", "POST", "-d", "x=1", "-w", " %{http_code}",
                    f"{URL}/api/posts")
    assert rc == 0 and out == "Access denied\n 403"


def test_other_pod_is_dropped_at_l3l4(cluster) -> None:
    t0 = time.monotonic()
    rc, out = _curl(cluster, "intruder", f"{URL}/api/posts")  # same node as the server
    assert rc == 28 and out == "", (rc, out)  # curl: operation timed out (no RST, no 403)
    assert time.monotonic() - t0 >= 2.5


def test_requests_are_l7_events(cluster) -> None:
    events = read_events(Path(cluster.run_dir) / "l7-node-2.jsonl")
    seen = {(e["method"], e["path"], e["status"], e["verdict"]) for e in events}
    assert {("GET", "/api/posts", 200, "FORWARDED"), ("GET", "/admin", 403, "DENIED"),
            ("POST", "/api/posts", 403, "DENIED")} <= seen
    ok = next(e for e in events if e["path"] == "/api/posts" and e["status"] == 200)
    assert ok["policy"] == f"{NS}/monospaced-api" and ok["src"]["pod"] == f"{NS}/frontend-client"
    assert ok["dst"]["pod"] == f"{NS}/monospaced-test" and ok["dst"]["port"] == 3000


def test_live_change_and_delete(cluster) -> None:
    doc = (ROOT / "tests" / "e2e" / "configs" / "l7.yaml").read_text().split("---")[-1]
    changed = cluster.tmp / "cnp.yaml"
    changed.write_text(doc.replace('path: "/api/.*"', 'path: "/(api/.*|admin)"'))
    out = cluster.emunet("apply", "-f", str(changed)).stdout
    assert "ciliumnetworkpolicy.cilium.io/monospaced-api configured" in out
    # in effect now: `apply` answers once the agents and the L7 proxies have loaded it
    rc, body = _curl(cluster, "frontend-client", f"{URL}/admin")
    assert rc == 0 and "path=/admin" in body
    out = cluster.emunet("delete", "cnp", "monospaced-api", "-n", NS).stdout
    assert "ciliumnetworkpolicy.cilium.io/monospaced-api deleted" in out
    rc, body = _curl(cluster, "intruder", f"{URL}/admin")  # no policy left: not isolated
    assert rc == 0 and "Hello from monospaced-test" in body


CLIENT_L7 = f"""apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: client-l7, namespace: {NS}}}
spec:
  endpointSelector: {{matchLabels: {{app: frontend-client}}}}
  ingress:
    - fromEndpoints: [{{matchLabels: {{"k8s:app": intruder}}}}]
      toPorts:
        - ports: [{{port: "8080", protocol: TCP}}]
          rules: {{http: [{{method: GET, path: "/"}}]}}
"""


def test_the_first_l7_rule_on_a_node_starts_its_proxy(cluster) -> None:
    """node-1 had no proxy (nothing there was selected by an L7 rule); the first such rule
    starts one, and `apply` answers once it listens on the redirected port."""
    from emunet.l7 import listeners
    from emunet.state import store

    assert "l7proxy-node-1" not in cluster.status()["children"]
    doc = cluster.tmp / "client-l7.yaml"
    doc.write_text(CLIENT_L7)
    out = cluster.emunet("apply", "-f", str(doc)).stdout
    assert "ciliumnetworkpolicy.cilium.io/client-l7 created" in out
    assert cluster.status()["children"]["l7proxy-node-1"]["alive"]
    want = listeners.expected(store.read(cluster.run_dir / "state.json"))["node-1"]
    assert want and want <= listeners.open_on(cluster.run_dir, "node-1")
    cluster.emunet("delete", "cnp", "client-l7", "-n", NS)
