"""Fidelity to Linux and Kubernetes found by a tester (issue 15 §5), on one two-node cluster:
a Service whose only backend is a pod with a command works right after `up`, and a publish
whose SIGHUP is lost still reaches every reader; traceroute's hops (ICMP time exceeded from
both nodes' gateways, the pod's port unreachable last); a pod pings the other node's cni0;
a port nobody listens on at a gateway is refused (RST, port unreachable)."""

from __future__ import annotations

import pytest

from emunet.state import loaded, store
from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import wait_for

CONFIG = str(ROOT / "tests" / "e2e" / "configs" / "fidelity.yaml")
GW1, GW2 = "10.42.1.1", "10.42.2.1"
# tracepath's way (UDP probes, IP_RECVERR): for TTL 1..3 the address that answered, with the
# ICMP type and code read from the socket's error queue (no traceroute package needed)
TRACE = """
import select, socket, struct, sys
for ttl in (1, 2, 3):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    s.setsockopt(socket.IPPROTO_IP, 11, 1)  # IP_RECVERR
    s.connect((sys.argv[1], 33433 + ttl))
    s.send(b"probe")
    hop = "*"
    if select.select([s], [], [], 2)[0]:
        _d, anc, _f, _a = s.recvmsg(512, 512, socket.MSG_ERRQUEUE)
        for _lvl, _kind, data in anc:  # struct sock_extended_err, then the offender
            _errno, _origin, typ, code = struct.unpack_from("=IBBB", data)
            hop = f"{socket.inet_ntoa(data[20:24])} {typ}/{code}"
    print(ttl, hop)
"""


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    return module_clusters(CONFIG, "efi")


def _pod_ip(c: Cluster, name: str) -> str:
    return next(p["status"]["podIP"] for p in c.get("pods")
                if p["metadata"]["name"] == name)


def test_command_backend_serves_right_after_up(cluster):
    # the first request after `up` returned: the agents forward by the state that lists the
    # pod ready (its readiness is published while the agents are starting)
    r = cluster.exec("fid", "client", "curl", "-sS", "-m", "5", "-o", "/dev/null", "-w",
                     "%{http_code}", "http://web.fid.svc.cluster.local/", check=False)
    assert r.stdout == "200", r.stdout + r.stderr


def test_traceroute_to_a_pod_on_the_other_node_shows_every_hop(cluster):
    web = _pod_ip(cluster, "web")
    out = cluster.exec("fid", "client", "python3", "-c", TRACE, web).stdout
    assert out.splitlines() == [f"1 {GW1} 11/0", f"2 {GW2} 11/0", f"3 {web} 3/3"], out


def test_traceroute_n_lists_both_nodes_gateways_then_the_pod(cluster):
    """The user's tool (scripts/setup installs traceroute): UDP probes and ICMP (-I) alike."""
    web = _pod_ip(cluster, "web")
    for icmp in ((), ("-I",)):
        out = cluster.exec("fid", "client", "traceroute", "-n", *icmp, "-w", "2", "-q", "1",
                           "-m", "5", web).stdout
        hops = [line.split()[:2] for line in out.splitlines()[1:]]
        assert hops == [["1", GW1], ["2", GW2], ["3", web]], out


def test_ping_with_ttl_2_expires_at_the_receiving_node(cluster):
    r = cluster.exec("fid", "client", "ping", "-c1", "-W2", "-t2", _pod_ip(cluster, "web"),
                     check=False)
    assert f"From {GW2} icmp_seq=1 Time to live exceeded" in r.stdout, r.stdout


def test_a_pod_pings_the_other_nodes_gateway(cluster):
    r = cluster.exec("fid", "client", "ping", "-c1", "-W2", GW2, check=False)
    assert r.returncode == 0 and f"64 bytes from {GW2}" in r.stdout, r.stdout + r.stderr


def test_a_publish_whose_sighup_is_lost_reaches_every_reader(cluster):
    """The state file changes with no signal (as a SIGHUP sent while a reader still ignored
    it): every reader loads it within a couple of seconds anyway (emunet.state.store.stamp)."""
    path = cluster.run_dir / "state.json"
    st = store.read(path)
    st.generation += 1000  # ahead of any publish of the supervisor's in this test
    store.write(st, path)
    roles = list(cluster.status()["children"])  # agents, DNS, API (no L7 rule: no proxy)
    assert {"agent-node-1", "agent-node-2", "dns", "apiserver"} <= set(roles)
    wait_for(lambda: not loaded.behind(cluster.run_dir, roles, st.generation), 5,
             "every reader to load a state published without a SIGHUP")
    test_command_backend_serves_right_after_up(cluster)  # and the cluster still forwards


# a connected UDP socket learns of an ICMP port unreachable as ECONNREFUSED on its next recv;
# a TCP connect answered with a RST fails with ECONNREFUSED (a silent drop would time out)
PROBE = """
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[2] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.settimeout(3)
try:
    s.connect((sys.argv[1], 9999))
    s.send(b"anyone?")
    s.recv(100)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("silence")
"""


@pytest.mark.parametrize("gw", [GW1, GW2])
def test_a_port_nobody_listens_on_at_a_gateway_is_refused_at_once(cluster, gw):
    """Linux's stack on the node answers a closed port: TCP with a RST, UDP with ICMP port
    unreachable; both are ECONNREFUSED to the pod (and curl fails at once, exit 7)."""
    for proto in ("tcp", "udp"):
        out = cluster.exec("fid", "client", "python3", "-c", PROBE, gw, proto).stdout
        assert out.strip() == "refused", (proto, out)
    r = cluster.exec("fid", "client", "curl", "-sS", "-m", "3", f"http://{gw}:81/", check=False)
    assert r.returncode == 7, r.stderr
