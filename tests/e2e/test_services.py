"""Services and faults as a user meets them: NodePort from outside and from the other node,
session affinity, a Service without pods, node stop/start, link delay/loss/rate. One cluster
(tests/e2e/configs/services.yaml), the real CLI."""

from __future__ import annotations

import hashlib
import json
import random
import re
import socket
import subprocess
import sys
import time

import pytest

from emunet.host.netns import socket_in_netns
from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import wait_for

NS = "web"
CONFIG = str(ROOT / "tests" / "e2e" / "configs" / "services.yaml")
MIB = 1 << 20
BLOB_MIB = 6
# a download server: N MiB of seeded random bytes after a request line (the checksum is known)
BLOB = ("import random,socket\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('', 9000)); s.listen(8)\n"
        "while True:\n"
        "    c, _ = s.accept()\n"
        "    try:\n"
        "        n = int(c.recv(64) or 0); r = random.Random(7)\n"  # 0: a readiness check
        "        for _ in range(n): c.sendall(r.randbytes(1 << 20))\n"
        "    except (OSError, ValueError): pass\n"
        "    c.close()\n")


def _extra() -> str:
    """A backend on each node behind its own NodePort (a local and a remote one from node-1),
    and a pod with a Service we empty to see the reject."""
    docs = []
    for node, port in (("node-1", 30091), ("node-2", 30092)):
        docs.append(f"""\
apiVersion: v1
kind: Pod
metadata: {{name: blob-{node}, namespace: {NS}, labels: {{app: blob-{node}}}}}
spec:
  nodeName: {node}
  securityContext: {{runAsUser: 0}}  # this checkout's Python may be out of nobody's reach
  containers:
  - name: blob
    image: python:3.11
    command: [{json.dumps(sys.executable)}, "-c", {json.dumps(BLOB)}]
    ports: [{{containerPort: 9000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: blob-{node}, namespace: {NS}}}
spec:
  type: NodePort
  selector: {{app: blob-{node}}}
  ports: [{{port: 9000, nodePort: {port}}}]
""")
    docs.append(f"""\
apiVersion: v1
kind: Pod
metadata: {{name: lonely, namespace: {NS}, labels: {{app: lonely}}}}
spec:
  nodeName: node-2
  containers: [{{name: web, image: emunet/builtin, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: lonely, namespace: {NS}}}
spec:
  type: NodePort
  selector: {{app: lonely}}
  ports: [{{port: 80, targetPort: 8080, nodePort: 30093}}]
""")
    return "---\n".join(docs)


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    c = module_clusters(CONFIG, "esv")
    (c.tmp / "extra.yaml").write_text(_extra())
    c.emunet("apply", "-f", str(c.tmp / "extra.yaml"))
    c.wait_ready(30)
    c.ips = {n["metadata"]["name"]: n["status"]["addresses"][0]["address"]
             for n in c.get("nodes")}
    return c


def _outside(c: Cluster, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return c.emunet("exec", "--outside", "--", *cmd, check=check, timeout=30)


def _pod_of(out: str) -> str:
    m = re.search(r"pod=(\S+)", out)
    assert m, out
    return m.group(1)


def _curl_many(run, url: str, n: int) -> list[str]:
    """n HTTP requests from one client (separate connections), the pod that answered each."""
    out = run("sh", "-c", f"for i in $(seq {n}); do curl -s -m 3 {url}; done").stdout
    return re.findall(r"pod=(\S+)", out)


def _echo_pods(c: Cluster) -> set[str]:
    return {p["metadata"]["name"] for p in c.get("pods")
            if p["metadata"]["name"].startswith("echo-")}


def test_get_services_shows_node_ports(cluster):
    out = cluster.emunet("get", "svc", "-n", NS).stdout
    line = next(row for row in out.splitlines() if row.startswith("echo "))
    assert "NodePort" in line and "80:30080/TCP" in line
    sticky = next(row for row in out.splitlines() if row.startswith("sticky "))
    assert "LoadBalancer" in sticky and "<pending>" in sticky
    assert re.search(r"80:3\d{4}/TCP", sticky)  # allocated from the node port range
    svc = next(s for s in cluster.get("services") if s["metadata"]["name"] == "echo")
    assert svc["spec"]["ports"][0]["nodePort"] == 30080


def test_nodeport_from_outside_and_from_the_other_node(cluster):
    pods = _echo_pods(cluster)
    assert len(pods) == 2
    node1 = cluster.ips["node-1"]
    got = _curl_many(lambda *a: _outside(cluster, *a), f"http://{node1}:30080/", 12)
    assert len(got) == 12 and set(got) == pods  # both backends, one local, one remote
    node2_ns = f"{cluster.prefix}-node-2"  # the other node itself (its kernel, not a pod)
    got = _curl_many(lambda *a: subprocess.run(["ip", "netns", "exec", node2_ns, *a],
                                               capture_output=True, text=True, check=True),
                     f"http://{node1}:30080/", 12)
    assert len(got) == 12 and set(got) == pods
    got = _curl_many(lambda *a: cluster.exec(NS, "iperf", *a),  # a pod on node-2
                     f"http://{node1}:30080/", 12)
    assert len(got) == 12 and set(got) == pods


def test_unused_node_port_is_refused_at_once(cluster):
    t0 = time.monotonic()
    r = _outside(cluster, "curl", "-s", "-m", "5", f"http://{cluster.ips['node-2']}:30999/",
                 check=False)
    assert r.returncode == 7, r  # connection refused (a RST), not a timeout (28)
    assert time.monotonic() - t0 < 3


def test_node_port_traffic_from_outside_is_in_the_flows(cluster):
    """`emunet observe` shows what a node port's outside client did, as Hubble shows traffic
    from the network: the new connections with their DNAT (interface eth0), and a refused
    port as a drop observed FROM_NETWORK."""
    node1, node2 = cluster.ips["node-1"], cluster.ips["node-2"]
    assert len(_curl_many(lambda *a: _outside(cluster, *a), f"http://{node1}:30080/", 4)) == 4
    _outside(cluster, "curl", "-s", "-m", "3", f"http://{node2}:30999/", check=False)
    time.sleep(0.5)  # records reach the flow files within 100 ms of their packet
    flows = [json.loads(x)["flow"] for x in cluster.emunet(
        "observe", "-o", "json", "--last", "2000").stdout.splitlines() if x.strip()]
    fwd = [f for f in flows if f.get("interface", {}).get("name") == "eth0"
           and f.get("dnat", {}).get("original_destination") == f"{node1}:30080"]
    assert len(fwd) >= 4, flows[-10:]
    assert {f["destination"].get("pod_name", "").split("-")[0] for f in fwd} == {"echo"}
    drops = [f for f in flows if f.get("trace_observation_point") == "FROM_NETWORK"
             and f["verdict"] == "DROPPED" and f.get("l4", {}).get("TCP", {}).get(
                 "destination_port") == 30999]
    assert drops and drops[-1]["node_name"] == "node-2"


def test_session_affinity_keeps_a_client_on_one_backend(cluster):
    run = lambda *a: cluster.exec(NS, "client", *a)  # noqa: E731
    sticky = _curl_many(run, "http://sticky/", 20)
    assert len(sticky) == 20 and len(set(sticky)) == 1, sticky
    spread = _curl_many(run, "http://echo/", 20)
    assert len(spread) == 20 and set(spread) == _echo_pods(cluster)
    # and through a node port from outside: the client is the outside address
    port = next(s for s in cluster.get("services")
                if s["metadata"]["name"] == "sticky")["spec"]["ports"][0]["nodePort"]
    got = _curl_many(lambda *a: _outside(cluster, *a),
                     f"http://{cluster.ips['node-2']}:{port}/", 10)
    assert len(got) == 10 and len(set(got)) == 1


def test_a_service_whose_pods_are_gone_rejects_at_once(cluster):
    assert "pod=lonely" in cluster.exec(NS, "client", "curl", "-s", "-m", "3",
                                        "http://lonely/").stdout
    cluster.emunet("delete", "pod", "lonely", "-n", NS)
    eps = next(e for e in cluster.get("endpoints") if e["metadata"]["name"] == "lonely")
    assert not any(s.get("addresses") for s in eps.get("subsets", []))
    for run, url in ((lambda *a: cluster.exec(NS, "client", *a, check=False), "http://lonely/"),
                     (lambda *a: _outside(cluster, *a, check=False),
                      f"http://{cluster.ips['node-1']}:30093/")):
        t0 = time.monotonic()
        r = run("curl", "-s", "-m", "5", url)
        assert r.returncode == 7, (url, r.returncode, r.stdout)
        assert time.monotonic() - t0 < 3


def _download(c: Cluster, node: str, port: int) -> tuple[str, float]:
    want = hashlib.sha256()
    r = random.Random(7)
    for _ in range(BLOB_MIB):
        want.update(r.randbytes(MIB))
    sock = socket_in_netns(f"{c.prefix}-outside", socket.AF_INET,
                                socket.SOCK_STREAM)
    sock.settimeout(20)
    t0 = time.monotonic()
    with sock:
        sock.connect((c.ips[node], port))
        sock.sendall(str(BLOB_MIB).encode())
        h, n = hashlib.sha256(), 0
        while data := sock.recv(MIB):
            h.update(data)
            n += len(data)
    assert n == BLOB_MIB * MIB
    return h.hexdigest() if h.hexdigest() == want.hexdigest() else "mismatch", \
        time.monotonic() - t0


def test_large_nodeport_download_local_and_remote_backend(cluster):
    """Pod veths keep TSO: a local backend hands node-1's agent 64 KB super-frames; eth0 must
    still see MTU-sized frames (the agent segments them), and the bytes must be intact."""
    for port in (30091, 30092):  # backend on node-1 (local), on node-2 (remote)
        digest, secs = _download(cluster, "node-1", port)
        assert digest != "mismatch", port
        print(f"\nnodePort {port}: {BLOB_MIB} MiB in {secs:.2f}s")


def _ping_ms(c: Cluster, ip: str, count: int = 10, interval: str = "0.05") -> list[float]:
    out = c.exec(NS, "client", "ping", "-n", "-c", str(count), "-i", interval, "-W", "1", ip,
                 check=False).stdout
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def _p50(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def test_link_delay_loss_and_reset(cluster):
    target = cluster.pod(NS, "iperf")["status"]["podIP"]  # on node-2; the client on node-1
    base = _p50(_ping_ms(cluster, target))
    out = cluster.emunet("link", "set", "node-1", "--delay", "50ms").stdout
    assert "delay 50ms" in out
    assert "delay 50ms" in cluster.emunet("link", "show").stdout
    delayed = _ping_ms(cluster, target)
    assert len(delayed) == 10 and _p50(delayed) >= base + 40, (base, delayed)
    cluster.emunet("link", "set", "node-1", "--loss", "40%")
    got = _ping_ms(cluster, target, count=60, interval="0.02")
    assert 10 <= 60 - len(got) <= 45, len(got)  # ~24 lost (binomial: 3 sigma is ±11)
    cluster.emunet("link", "reset", "node-1")
    after = _ping_ms(cluster, target)
    assert len(after) == 10 and _p50(after) < base + 20, (base, after)


def test_link_rate_in_iperf3(cluster):
    target = cluster.pod(NS, "iperf")["status"]["podIP"]
    cluster.emunet("link", "set", "node-1", "--rate", "10mbit")
    try:
        assert "tbf" in cluster.emunet("link", "show").stdout
        r = cluster.exec(NS, "client", "iperf3", "-c", target, "-p", "5201", "-t", "3", "-J",
                         timeout=30)
        mbps = json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
        print(f"\niperf3 across --rate 10mbit: {mbps:.2f} Mbit/s")
        assert 7 <= mbps <= 13, mbps
    finally:
        cluster.emunet("link", "reset", "node-1")
    assert "none" in cluster.emunet("link", "show").stdout.splitlines()[1]


def test_node_stop_removes_its_endpoints_and_start_brings_them_back(cluster):
    def echo_eps() -> list[str]:
        eps = next(e for e in cluster.get("endpoints") if e["metadata"]["name"] == "echo"
                   and e["metadata"]["namespace"] == NS)
        return [a["nodeName"] for s in eps.get("subsets", []) for a in s.get("addresses", [])]

    assert sorted(echo_eps()) == ["node-1", "node-2"]
    cluster.emunet("node", "stop", "node-2")
    try:
        assert echo_eps() == ["node-1"]
        run = lambda *a: cluster.exec(NS, "client", *a)  # noqa: E731
        got = _curl_many(run, "http://echo/", 10)
        assert len(got) == 10 and len(set(got)) == 1  # every request to the survivor
        got = _curl_many(lambda *a: _outside(cluster, *a),
                         f"http://{cluster.ips['node-1']}:30080/", 5)
        assert len(got) == 5
    finally:
        cluster.emunet("node", "start", "node-2")
    wait_for(lambda: sorted(echo_eps()) == ["node-1", "node-2"], 15, "node-2's endpoints back")
    got = _curl_many(lambda *a: cluster.exec(NS, "client", *a), "http://echo/", 12)
    assert set(got) == _echo_pods(cluster)
