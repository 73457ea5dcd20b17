"""The node agent on real namespaces: ping and HTTP (direct and via a ClusterIP) across two
nodes, carried only by the agents (ip_forward=0, no kernel addresses on pod veths); and the
generation of every state it loads, which the supervisor waits for before a change answers.

Root only. Everything is created under a unique `emt<pid>` prefix and removed in `finally`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emunet.model import (
    ClusterSpec,
    Config,
    Container,
    ContainerPort,
    NodeSpec,
    Pod,
    Service,
    ServicePort,
)
from emunet.state import codec, loaded, store
from emunet.state.cluster import ClusterState
from emunet.state.plan import plan as plan_state
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
# http.server's HTTPServer.server_bind calls getfqdn() before listen(): a reverse DNS lookup that
# hangs in a namespace without DNS. TCPServer's bind skips it.
HTTP_SERVER = """
import http.server, socketserver, sys
class S(http.server.HTTPServer):
    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "web", self.server_address[1]
S((sys.argv[1], 8080), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def sh(*args: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


def plan() -> ClusterState:
    cluster = ClusterSpec(nodes=(NodeSpec("node-1"), NodeSpec("node-2")))
    pods = (Pod(namespace="t", name="client", node_name="node-1"),
            Pod(namespace="t", name="web", labels={"app": "web"}, node_name="node-2",
                containers=(Container("web", ports=(ContainerPort(8080, "TCP", "http"),)),)))
    svc = Service(namespace="t", name="web", selector={"app": "web"},
                  ports=(ServicePort(80, "http", "TCP"),))
    st = plan_state(Config(cluster=cluster, pods=pods, services=(svc,)))
    for p in st.pods.values():
        p.ready = True
    return st


@pytest.fixture
def topo(tmp_path):
    pre = f"emt{os.getpid()}"
    st = plan()
    nodes = {n.name: f"{pre}-{n.index}" for n in st.nodes}
    pods = {p.pod.name: (f"{pre}-{p.pod.name}", p) for p in st.pods.values()
            if p.pod.namespace == "t"}
    made: list[str] = []
    procs: list[subprocess.Popen] = []
    try:
        for ns in [*nodes.values(), *(n for n, _ in pods.values())]:
            sh("ip", "netns", "add", ns)
            made.append(ns)
        n1, n2 = nodes["node-1"], nodes["node-2"]
        sh("ip", "-n", n1, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
           "netns", n2)
        for n in st.nodes:
            ns = nodes[n.name]
            sh("ip", "-n", ns, "addr", "add", f"{n.underlay_ip}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for pns, p in pods.values():
            gw = st.node(p.node).gateway_ip
            sh("ip", "-n", pns, "link", "add", "eth0", "type", "veth", "peer", "name",
               p.host_ifname, "netns", nodes[p.node])
            sh("ip", "-n", pns, "link", "set", "eth0", "address", p.mac, "mtu", "1450", "up")
            sh("ip", "-n", pns, "link", "set", "lo", "up")
            sh("ip", "-n", pns, "addr", "add", f"{p.ip}/24", "dev", "eth0")
            sh("ip", "-n", pns, "route", "add", "default", "via", gw)
            sh("ip", "netns", "exec", pns, "ethtool", "-K", "eth0", "tx", "off", "tso", "off",
               "gso", "off", check=False)
            sh("ip", "-n", nodes[p.node], "link", "set", p.host_ifname, "up")
        state = tmp_path / "state.json"
        state.write_text(codec.to_json(st))
        yield st, nodes, pods, state, procs
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
                pr.wait(5)
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


def start_agent(ns: str, node: str, state: Path, procs: list) -> subprocess.Popen:
    pr = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "emunet.agent",
                           "--state", str(state), "--node", node], cwd=REPO,
                          stderr=subprocess.PIPE, text=True)
    procs.append(pr)
    counters = state.parent / f"agent-{node}.json"
    for _ in range(50):
        if counters.exists():
            return pr
        assert pr.poll() is None, pr.stderr.read()
        time.sleep(0.1)
    raise AssertionError(f"agent {node} did not start")


def test_agents_carry_ping_and_http_across_nodes(topo):
    st, nodes, pods, state, procs = topo
    (cns, _), (wns, web) = pods["client"], pods["web"]
    agents = [start_agent(nodes[n], n, state, procs) for n in ("node-1", "node-2")]
    ping = sh("ip", "netns", "exec", cns, "ping", "-c", "2", "-W", "2", web.ip, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert sh("ip", "netns", "exec", cns, "ping", "-c", "1", "-W", "2",
              st.node("node-1").gateway_ip, check=False).returncode == 0
    www = subprocess.Popen(["ip", "netns", "exec", wns, sys.executable, "-c", HTTP_SERVER,
                            web.ip], cwd="/", stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    procs.append(www)
    vip = st.services[("t", "web")].cluster_ip
    for url in (f"http://{web.ip}:8080/", f"http://{vip}/"):
        for _ in range(20):
            r = sh("ip", "netns", "exec", cns, "curl", "-sS", "-m", "3", "-o", "/dev/null",
                   "-w", "%{http_code}", url, check=False)
            if r.stdout == "200":
                break
            time.sleep(0.2)
        assert r.stdout == "200", (url, r.stdout, r.stderr)
    # the kernel forwarded nothing: stop the agents and the path is gone
    for a in agents:
        a.send_signal(signal.SIGTERM)
        assert a.wait(5) == 0
    ping = sh("ip", "netns", "exec", cns, "ping", "-c", "1", "-W", "1", web.ip, check=False)
    assert ping.returncode != 0


def test_agent_reports_every_state_it_loads(topo):
    """emunet.state.loaded from the agent's side: it reports the generation it started with
    and each one a SIGHUP makes it reload, also those published while it was starting."""
    st, nodes, _pods, state, procs = topo
    role = "agent-node-1"
    # As the supervisor starts it: SIGHUP ignored (inherited) until the agent handles it,
    # so an early publish cannot kill it; the agent must not lose that publish either.
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        pr = subprocess.Popen(["ip", "netns", "exec", nodes["node-1"], sys.executable, "-m",
                               "emunet.agent", "--state", str(state), "--node", "node-1"],
                              cwd=REPO, stderr=subprocess.DEVNULL)
    finally:
        signal.signal(signal.SIGHUP, old)
    procs.append(pr)
    for gen in range(1, 31):
        st.generation = gen
        store.write(st, state)  # atomic, as the supervisor publishes
        pr.send_signal(signal.SIGHUP)
        # spread over the agent's start (imports, sockets: about half a second), as the
        # publishes of a busy supervisor are; the point is when they come, not a wait
        time.sleep(0.03)
    wait_for(lambda: loaded.generation(state.parent, role) == 30, 10,
             "the agent to report the last state published while it started")
    assert pr.poll() is None
    st.generation = 31
    store.write(st, state)
    pr.send_signal(signal.SIGHUP)
    wait_for(lambda: loaded.generation(state.parent, role) == 31, 5,
             "the agent to report the state its SIGHUP reloaded")
    pr.send_signal(signal.SIGTERM)
    assert pr.wait(5) == 0


def test_agent_catches_up_with_a_publish_whose_signal_was_lost(topo):
    """A publish whose SIGHUP never arrives (sent while the agent still ignored SIGHUP, as the
    supervisor starts it) is loaded anyway within a second or two: the agent compares the
    published state file with the one it loaded (emunet.state.store.stamp)."""
    st, nodes, _pods, state, procs = topo
    role = "agent-node-1"
    pr = subprocess.Popen(["ip", "netns", "exec", nodes["node-1"], sys.executable, "-m",
                           "emunet.agent", "--state", str(state), "--node", "node-1"],
                          cwd=REPO, stderr=subprocess.DEVNULL)
    procs.append(pr)
    wait_for(lambda: loaded.generation(state.parent, role) is not None, 10,
             "the agent to report its start state")
    st.generation = (loaded.generation(state.parent, role) or 0) + 1
    store.write(st, state)  # and no SIGHUP
    wait_for(lambda: loaded.generation(state.parent, role) == st.generation, 3,
             "the agent to load a state published without a signal")
    assert pr.poll() is None
    pr.send_signal(signal.SIGTERM)
    assert pr.wait(5) == 0
